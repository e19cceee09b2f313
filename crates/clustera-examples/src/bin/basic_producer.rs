//! Example 1a: a producer with delivery reports, written with rdkafka directly (seed 002's
//! Pattern 1).
//!
//! ```sh
//! clustera dev &
//! cargo run -p clustera-examples --bin basic-producer -- --count 10
//! ```
//!
//! It sends `--count` JSON events to `--topic` (default `events`), keyed by user so that one
//! user's events stay in order on one partition, and prints a delivery report for each. What
//! it has to get right by hand, and a Clustera kernel gets from the runtime:
//! - **delivery reports**: `send` only queues a record; whether it reached the broker is known
//!   later, in [`ProducerContext::delivery`], and only while something polls the producer;
//! - **a full queue**: `send` refuses when librdkafka's queue is full; the record must be
//!   kept and offered again after polling;
//! - **flush before exit** (the seed's first common mistake): records still queued when the
//!   process ends are lost;
//! - **durable settings**: `enable.idempotence=true` (which implies `acks=all`) so a retried
//!   send neither duplicates nor reorders.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use clustera_examples::DEFAULT_BROKERS;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

/// Sends JSON events with delivery reports.
#[derive(Parser)]
struct Args {
    /// Bootstrap servers.
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS", default_value = DEFAULT_BROKERS)]
    brokers: String,
    /// Topic to send to.
    #[arg(long, default_value = "events")]
    topic: String,
    /// Events to send.
    #[arg(long, default_value_t = 10)]
    count: u64,
    /// How long a record may wait for the broker before its delivery fails (librdkafka's
    /// `message.timeout.ms`).
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
}

/// Counts and prints delivery reports. librdkafka calls it from `poll` and `flush`, on the
/// thread that polls.
#[derive(Default)]
struct DeliveryReport {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for DeliveryReport {}

impl ProducerContext for DeliveryReport {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(m) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                println!(
                    "delivered {} to {}[{}] at offset {}",
                    String::from_utf8_lossy(m.key().unwrap_or_default()),
                    m.topic(),
                    m.partition(),
                    m.offset()
                );
            }
            Err((e, m)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "delivery failed for {} to {}: {e}",
                    String::from_utf8_lossy(m.key().unwrap_or_default()),
                    m.topic()
                );
            }
        }
    }
}

const ACTIONS: [&str; 4] = ["login", "view", "add_to_cart", "purchase"];

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("basic-producer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sends everything and flushes; `Ok(false)` when a delivery failed.
fn run(args: &Args) -> anyhow::Result<bool> {
    let producer: BaseProducer<DeliveryReport> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("client.id", "basic-producer")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", (args.timeout_secs * 1000).to_string())
        .create_with_context(DeliveryReport::default())?;
    let started_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    for i in 0..args.count {
        let user = format!("user-{}", i % 5);
        let value = serde_json::json!({
            "event_id": i,
            "user_id": user,
            "action": ACTIONS[(i % 4) as usize],
            "timestamp_ms": started_ms + u128::from(i),
        })
        .to_string();
        let mut record = BaseRecord::to(&args.topic).key(&user).payload(&value);
        // `send` hands the record back when the local queue is full: serve delivery reports
        // (which frees room) and offer it again. Anything else is a bad record or client.
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(100));
                }
                Err((e, _)) => anyhow::bail!("cannot queue event {i}: {e}"),
            }
        }
        // Serves the delivery reports of earlier sends without waiting.
        producer.poll(Duration::ZERO);
    }
    // Records are batched (linger.ms): without this flush the process could end with some
    // still queued, and they would be lost.
    let flushed = producer.flush(Duration::from_secs(args.timeout_secs + 5));
    let ctx = producer.context();
    let (delivered, failed) = (
        ctx.delivered.load(Ordering::Relaxed),
        ctx.failed.load(Ordering::Relaxed),
    );
    println!(
        "sent {}: delivered {delivered}, failed {failed}",
        args.count
    );
    if let Err(e) = flushed {
        eprintln!(
            "flush: {e}: {} record(s) still queued",
            args.count - delivered - failed
        );
        return Ok(false);
    }
    Ok(failed == 0)
}
