//! Example 2 of the seed's four, "Event schemas", in Rust: an `OrderEvent` validated against
//! its JSON Schema, an evolution step (a new optional field), and the Schema Registry form
//! (Avro in the Confluent wire format).
//!
//! ```text
//! clustera dev &                                            # a development broker on 127.0.0.1:9092
//! cargo run -p clustera-schema --example event_schemas
//! ```
//!
//! It runs three acts against the broker (`KAFKA_BOOTSTRAP_SERVERS`, default `127.0.0.1:9092`)
//! on topics of its own (suffixed with a run id, so runs never mix), and prints what happens:
//!
//! 1. **Validation.** A producer sends order events as JSON, some of them broken (a missing
//!    field, a timestamp that is not one, an unknown event type, text that is not JSON). A
//!    typed kernel receives the valid ones as `OrderEvent` values; the others never reach it:
//!    they are dead-lettered with the field path and the reason.
//! 2. **The Registry form.** The same events as Avro through a Schema Registry
//!    (`SCHEMA_REGISTRY_URL`, or an in-memory one on loopback when it is unset): the producer
//!    registers `OrderEvent` v1 and frames each record with its schema id.
//! 3. **Evolution.** v2 adds an optional `coupon`, registered as version 2 of the subject;
//!    the kernel reads with v2, so v1 records decode with `coupon: None`. A v3 that adds a
//!    *required* field is refused by the registry (409): it could not read v2's records.
//!    The kernel's outputs (`OrderSummary`) are validated against their own JSON Schema
//!    before they are produced.
//!
//! It exits 0 when every record ended where it should, 1 otherwise.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clustera::testing::kafka;
use clustera::{Config, Context, KernelError, Message, Outcome, Runtime};
use clustera_schema::testing::TestRegistry;
use clustera_schema::{
    AvroSchema, EventCodec, EventKernel, JsonSchema, RegistryClient, RegistrySettings, SchemaType,
    Typed,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The seed's `OrderEvent`, validated by [`ORDER_EVENT_SCHEMA`] before serde sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct OrderEvent {
    event_type: EventType,
    order_id: String,
    customer_id: String,
    /// RFC 3339, checked by the schema's `format: date-time`.
    timestamp: String,
    data: serde_json::Map<String, Value>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::enum_variant_names)] // the seed's event names: order_created, order_paid...
enum EventType {
    OrderCreated,
    OrderPaid,
    OrderCancelled,
}

const ORDER_EVENT_SCHEMA: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "OrderEvent",
  "type": "object",
  "required": ["event_type", "order_id", "customer_id", "timestamp", "data"],
  "additionalProperties": false,
  "properties": {
    "event_type": {"enum": ["order_created", "order_paid", "order_cancelled"]},
    "order_id": {"type": "string", "pattern": "^ord-[0-9]+$"},
    "customer_id": {"type": "string", "minLength": 1},
    "timestamp": {"type": "string", "format": "date-time"},
    "data": {"type": "object"}
  }
}"#;

/// The Avro form, version 1.
const ORDER_AVRO_V1: &str = r#"{"type": "record", "name": "OrderEvent", "namespace": "shop",
  "fields": [
    {"name": "event_type", "type": {"type": "enum", "name": "EventType",
      "symbols": ["order_created", "order_paid", "order_cancelled"]}},
    {"name": "order_id", "type": "string"},
    {"name": "customer_id", "type": "string"},
    {"name": "timestamp_ms", "type": "long"},
    {"name": "amount_cents", "type": "long"}
  ]}"#;

/// Version 2: one new optional field with a default, so v2 readers read v1 records.
const ORDER_AVRO_V2: &str = r#"{"type": "record", "name": "OrderEvent", "namespace": "shop",
  "fields": [
    {"name": "event_type", "type": {"type": "enum", "name": "EventType",
      "symbols": ["order_created", "order_paid", "order_cancelled"]}},
    {"name": "order_id", "type": "string"},
    {"name": "customer_id", "type": "string"},
    {"name": "timestamp_ms", "type": "long"},
    {"name": "amount_cents", "type": "long"},
    {"name": "coupon", "type": ["null", "string"], "default": null}
  ]}"#;

/// A breaking version 3: a required field without a default.
const ORDER_AVRO_V3_BREAKING: &str = r#"{"type": "record", "name": "OrderEvent", "namespace": "shop",
  "fields": [
    {"name": "event_type", "type": {"type": "enum", "name": "EventType",
      "symbols": ["order_created", "order_paid", "order_cancelled"]}},
    {"name": "order_id", "type": "string"},
    {"name": "customer_id", "type": "string"},
    {"name": "timestamp_ms", "type": "long"},
    {"name": "amount_cents", "type": "long"},
    {"name": "coupon", "type": ["null", "string"], "default": null},
    {"name": "region", "type": "string"}
  ]}"#;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct OrderV1 {
    event_type: EventType,
    order_id: String,
    customer_id: String,
    timestamp_ms: i64,
    amount_cents: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct OrderV2 {
    event_type: EventType,
    order_id: String,
    customer_id: String,
    timestamp_ms: i64,
    amount_cents: i64,
    coupon: Option<String>,
}

/// What the Avro kernel produces, checked against [`SUMMARY_SCHEMA`] first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct OrderSummary {
    order_id: String,
    amount_cents: i64,
    coupon: Option<String>,
}

const SUMMARY_SCHEMA: &str = r#"{
  "title": "OrderSummary", "type": "object",
  "required": ["order_id", "amount_cents", "coupon"],
  "properties": {
    "order_id": {"type": "string"},
    "amount_cents": {"type": "integer", "minimum": 0},
    "coupon": {"type": ["string", "null"]}
  }
}"#;

/// Act 1's kernel: receives valid `OrderEvent`s only.
struct Validator {
    topic: String,
    events: EventCodec<OrderEvent>,
}

impl EventKernel for Validator {
    type Event = OrderEvent;

    fn name(&self) -> &str {
        "order-validator"
    }

    fn default_topics(&self) -> Vec<String> {
        vec![self.topic.clone()]
    }

    fn events(&self) -> &EventCodec<OrderEvent> {
        &self.events
    }

    async fn handle(
        &self,
        event: OrderEvent,
        msg: &Message,
        _ctx: &mut Context,
    ) -> Result<Outcome, KernelError> {
        println!(
            "  kernel: offset {} is a valid {:?} for {} by {}",
            msg.offset(),
            event.event_type,
            event.order_id,
            event.customer_id
        );
        Ok(Outcome::Ack)
    }
}

/// Acts 2 and 3's kernel: reads Avro with the v2 schema whatever version wrote the record.
struct Totals {
    topic: String,
    output: String,
    events: EventCodec<OrderV2>,
    summaries: EventCodec<OrderSummary>,
}

impl EventKernel for Totals {
    type Event = OrderV2;

    fn name(&self) -> &str {
        "order-totals"
    }

    fn default_topics(&self) -> Vec<String> {
        vec![self.topic.clone()]
    }

    fn events(&self) -> &EventCodec<OrderV2> {
        &self.events
    }

    async fn handle(
        &self,
        order: OrderV2,
        msg: &Message,
        ctx: &mut Context,
    ) -> Result<Outcome, KernelError> {
        println!(
            "  kernel: offset {} {} {} cents, coupon {:?}",
            msg.offset(),
            order.order_id,
            order.amount_cents,
            order.coupon
        );
        let summary = OrderSummary {
            order_id: order.order_id,
            amount_cents: order.amount_cents,
            coupon: order.coupon,
        };
        let record = self.summaries.record(&self.output, &summary).await?;
        ctx.send(record.maybe_key(msg.key_bytes()));
        Ok(Outcome::Ack)
    }
}

/// What happened, for the exit code and the test.
#[derive(Debug, Default)]
struct Report {
    valid: u64,
    dead_letters: Vec<String>,
    avro_versions: Vec<u32>,
    summaries: Vec<OrderSummary>,
    refused_v3: Option<String>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn test_config(name: &str, bootstrap: &str, topic: &str, run: &str) -> Config {
    let mut config = Config::for_brokers(name, bootstrap, &[topic]);
    config.group_id = format!("{name}-{run}");
    config.runtime.commit_interval = Duration::from_millis(100);
    config
}

/// Runs `kernel` until it has finished `expected` messages (acked or dead-lettered).
async fn run_kernel<K: clustera::Kernel>(
    config: Config,
    kernel: K,
    expected: u64,
) -> anyhow::Result<clustera::StatsSnapshot> {
    let runtime = Runtime::new(config, kernel);
    let stats = runtime.stats();
    let watch = stats.clone();
    let done = async move {
        let start = Instant::now();
        loop {
            let s = watch.snapshot();
            if s.acked + s.dead_lettered >= expected || start.elapsed() > Duration::from_secs(60) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let snapshot = runtime.run_until(done).await?;
    if snapshot.acked + snapshot.dead_lettered < expected {
        bail!("the kernel finished only {snapshot:?} of {expected} messages within 60 s: is the broker up?");
    }
    Ok(snapshot)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(f).await?
}

async fn run(bootstrap: &str, registry_url: &str, run: &str) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let json_topic = format!("orders-json-{run}");
    let avro_topic = format!("orders-avro-{run}");
    let summaries_topic = format!("order-summaries-{run}");
    // Topics are created on first produce, as `clustera dev` (and a broker with
    // auto.create.topics.enable) does.

    println!("\n== 1. validation: OrderEvent against its JSON Schema, on {json_topic}");
    let ts = "2026-12-03T19:00:00Z";
    let good = |kind: &str, id: u32, customer: &str| {
        json!({"event_type": kind, "order_id": format!("ord-{id}"), "customer_id": customer,
               "timestamp": ts, "data": {"items": id}})
        .to_string()
    };
    let inputs: Vec<(&str, String)> = vec![
        ("valid", good("order_created", 1, "cust-7")),
        ("valid", good("order_paid", 1, "cust-7")),
        ("valid", good("order_created", 2, "cust-9")),
        ("valid", good("order_cancelled", 2, "cust-9")),
        (
            "missing customer_id",
            json!({"event_type": "order_created", "order_id": "ord-3", "timestamp": ts, "data": {}})
                .to_string(),
        ),
        (
            "timestamp is not a date-time",
            json!({"event_type": "order_paid", "order_id": "ord-3", "customer_id": "c",
                   "timestamp": "yesterday", "data": {}})
            .to_string(),
        ),
        (
            "unknown event type",
            json!({"event_type": "order_teleported", "order_id": "ord-4", "customer_id": "c",
                   "timestamp": ts, "data": {}})
            .to_string(),
        ),
        ("not JSON", "order 5 created".to_owned()),
    ];
    for (what, value) in &inputs {
        println!("  producer: {what}: {value}");
    }
    let records: Vec<kafka::ProducedRecord> = inputs
        .iter()
        .map(|(_, v)| (Some(b"orders".to_vec()), v.clone().into_bytes(), Vec::new()))
        .collect();
    let (b, t) = (bootstrap.to_owned(), json_topic.clone());
    blocking(move || Ok(kafka::produce(b.as_str(), &t, records)?)).await?;
    let schema = JsonSchema::parse(ORDER_EVENT_SCHEMA)?;
    let validator = Validator {
        topic: json_topic.clone(),
        events: EventCodec::json_validated(schema),
    };
    let stats = run_kernel(
        test_config("order-validator", bootstrap, &json_topic, run),
        Typed(validator),
        inputs.len() as u64,
    )
    .await?;
    report.valid = stats.acked;
    let (b, t) = (bootstrap.to_owned(), format!("{json_topic}.dlq"));
    let dead = blocking(move || Ok(kafka::read_topic(b.as_str(), &t)?)).await?;
    for d in &dead {
        let error = d
            .header(clustera::dead_letter_headers::ERROR)
            .unwrap_or_default();
        println!(
            "  dead letter: offset {} -> {error}",
            d.header(clustera::dead_letter_headers::ORIGINAL_OFFSET)
                .unwrap_or_default()
        );
        report.dead_letters.push(error);
    }

    println!(
        "\n== 2. the Registry form: Avro OrderEvent v1 through {registry_url}, on {avro_topic}"
    );
    let registry = Arc::new(RegistryClient::new(RegistrySettings::new(registry_url))?);
    let v1 =
        EventCodec::<OrderV1>::registry_avro(registry.clone(), AvroSchema::parse(ORDER_AVRO_V1)?);
    let mut records: Vec<kafka::ProducedRecord> = Vec::new();
    for i in 1..=3 {
        let order = OrderV1 {
            event_type: EventType::OrderCreated,
            order_id: format!("ord-{}", 100 + i),
            customer_id: format!("cust-{i}"),
            timestamp_ms: now_ms(),
            amount_cents: 1000 * i,
        };
        let bytes = v1
            .encode(&avro_topic, &order)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "  producer v1: {} -> {} bytes, schema id {}",
            order.order_id,
            bytes.len(),
            u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]])
        );
        records.push((Some(order.order_id.into_bytes()), bytes, Vec::new()));
    }

    println!("\n== 3. evolution: v2 adds an optional coupon");
    let v2 =
        EventCodec::<OrderV2>::registry_avro(registry.clone(), AvroSchema::parse(ORDER_AVRO_V2)?);
    for (i, coupon) in [(4, Some("WELCOME10")), (5, None)] {
        let order = OrderV2 {
            event_type: EventType::OrderPaid,
            order_id: format!("ord-{}", 100 + i),
            customer_id: format!("cust-{i}"),
            timestamp_ms: now_ms(),
            amount_cents: 1000 * i,
            coupon: coupon.map(str::to_owned),
        };
        let bytes = v2
            .encode(&avro_topic, &order)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        println!(
            "  producer v2: {} (coupon {:?}) -> schema id {}",
            order.order_id,
            order.coupon,
            u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]])
        );
        records.push((Some(order.order_id.into_bytes()), bytes, Vec::new()));
    }
    let subject = format!("{avro_topic}-value");
    match registry
        .register(&subject, SchemaType::Avro, ORDER_AVRO_V3_BREAKING)
        .await
    {
        Ok(id) => println!("  v3 with a required field was accepted as id {id}: unexpected"),
        Err(e) => {
            println!("  v3 with a required `region` is refused: {e}");
            report.refused_v3 = Some(e.to_string());
        }
    }
    let latest = registry.latest(&subject).await?;
    println!(
        "  subject {subject}: latest version {} (schema id {})",
        latest.version, latest.schema.id
    );
    report.avro_versions = (1..=latest.version).collect();
    let count = records.len() as u64;
    let (b, t) = (bootstrap.to_owned(), avro_topic.clone());
    blocking(move || Ok(kafka::produce(b.as_str(), &t, records)?)).await?;

    let totals = Totals {
        topic: avro_topic.clone(),
        output: summaries_topic.clone(),
        events: EventCodec::registry_avro(registry.clone(), AvroSchema::parse(ORDER_AVRO_V2)?),
        summaries: EventCodec::json_validated(JsonSchema::parse(SUMMARY_SCHEMA)?),
    };
    run_kernel(
        test_config("order-totals", bootstrap, &avro_topic, run),
        Typed(totals),
        count,
    )
    .await?;
    let (b, t) = (bootstrap.to_owned(), summaries_topic.clone());
    let outputs = blocking(move || Ok(kafka::read_topic(b.as_str(), &t)?)).await?;
    for o in outputs {
        let summary: OrderSummary = serde_json::from_slice(o.value.as_deref().unwrap_or_default())
            .context("a summary that is not JSON")?;
        report.summaries.push(summary);
    }
    report.summaries.sort_by(|a, b| a.order_id.cmp(&b.order_id));
    Ok(report)
}

/// Whether every record ended where it should.
fn check(report: &Report) -> Result<(), String> {
    let mut problems = Vec::new();
    if report.valid != 4 {
        problems.push(format!(
            "{} valid events processed, expected 4",
            report.valid
        ));
    }
    if report.dead_letters.len() != 4 {
        problems.push(format!(
            "{} dead letters, expected 4",
            report.dead_letters.len()
        ));
    }
    if report.summaries.len() != 5 {
        problems.push(format!("{} summaries, expected 5", report.summaries.len()));
    }
    if report.refused_v3.is_none() {
        problems.push("the breaking v3 was not refused".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn main() -> ExitCode {
    if let Err(e) = clustera::config::load_dotenv() {
        eprintln!("event_schemas: configuration error: {e}");
        return ExitCode::from(clustera::EXIT_CONFIG);
    }
    let bootstrap = clustera::infra::env::env_var("KAFKA_BOOTSTRAP_SERVERS")
        .unwrap_or_else(|| "127.0.0.1:9092".into());
    // A real registry when one is configured; otherwise the in-memory one, on loopback.
    let (registry_url, _local) = match clustera::infra::env::env_var("SCHEMA_REGISTRY_URL") {
        Some(url) => (url, None),
        None => match TestRegistry::start() {
            Ok(r) => (r.url().to_owned(), Some(r)),
            Err(e) => {
                eprintln!("event_schemas: cannot start the in-memory registry: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let run_id = format!("{:x}", now_ms());
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("event_schemas: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("event_schemas: broker {bootstrap}, registry {registry_url}, run {run_id}");
    match rt.block_on(run(&bootstrap, &registry_url, &run_id)) {
        Ok(report) => {
            println!("\n== summary");
            println!("  valid OrderEvents processed: {}", report.valid);
            println!(
                "  dead-lettered with a reason: {}",
                report.dead_letters.len()
            );
            println!(
                "  registry versions of OrderEvent: {:?}",
                report.avro_versions
            );
            println!(
                "  summaries produced (v1 and v2 records read with v2): {}",
                report.summaries.len()
            );
            match check(&report) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("event_schemas: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("event_schemas: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clustera::testing::MockBroker;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_whole_example_against_a_broker() {
        let broker = MockBroker::start(1).unwrap();
        let registry = TestRegistry::start().unwrap();
        let report = run(broker.bootstrap(), registry.url(), "test")
            .await
            .unwrap();
        check(&report).unwrap();
        // Each broken event is dead-lettered with the field path and the reason.
        let reasons = report.dead_letters.join("\n");
        for expected in [
            "at /: \"customer_id\" is a required property",
            "at /timestamp: \"yesterday\" is not a \"date-time\"",
            "at /event_type:",
            "not JSON",
        ] {
            assert!(
                reasons.contains(expected),
                "{expected:?} not in:\n{reasons}"
            );
        }
        // v1 records read with v2 have no coupon; the v2 record keeps its own.
        let coupons: Vec<_> = report
            .summaries
            .iter()
            .map(|s| (s.order_id.as_str(), s.coupon.as_deref()))
            .collect();
        assert_eq!(
            coupons,
            [
                ("ord-101", None),
                ("ord-102", None),
                ("ord-103", None),
                ("ord-104", Some("WELCOME10")),
                ("ord-105", None),
            ]
        );
        assert_eq!(report.avro_versions, [1, 2]);
        assert!(
            report
                .refused_v3
                .as_deref()
                .unwrap_or_default()
                .contains("409"),
            "{:?}",
            report.refused_v3
        );
        assert_eq!(registry.versions("orders-avro-test-value").len(), 2);
    }
}
