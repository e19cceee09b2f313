//! Typed kernels on a real Kafka protocol peer (librdkafka's mock cluster) with the registry
//! on loopback: a registry outage holds the partition (retried, never dead-lettered) and
//! everything goes through once it is back; poison pills are dead-lettered with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use clustera::testing::{kafka, MockBroker};
use clustera::{dead_letter_headers, Config, Context, KernelError, Message, Outcome, Runtime};
use clustera_schema::testing::TestRegistry;
use clustera_schema::{
    wire, AvroSchema, EventCodec, EventKernel, RegistryClient, RegistrySettings, Typed,
};
use serde::{Deserialize, Serialize};

const SCHEMA: &str = r#"{"type":"record","name":"Payment","namespace":"shop","fields":[
    {"name":"payment_id","type":"string"},{"name":"amount_cents","type":"long"}]}"#;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Payment {
    payment_id: String,
    amount_cents: i64,
}

struct Forward {
    events: EventCodec<Payment>,
}

impl EventKernel for Forward {
    type Event = Payment;
    fn name(&self) -> &str {
        "forward"
    }
    fn default_topics(&self) -> Vec<String> {
        vec!["payments".into()]
    }
    fn events(&self) -> &EventCodec<Payment> {
        &self.events
    }
    async fn handle(
        &self,
        p: Payment,
        msg: &Message,
        ctx: &mut Context,
    ) -> Result<Outcome, KernelError> {
        let record = self.events.record("payments-out", &p).await?;
        ctx.send(record.maybe_key(msg.key_bytes()));
        Ok(Outcome::Ack)
    }
}

fn client(registry: &TestRegistry) -> Arc<RegistryClient> {
    Arc::new(RegistryClient::new(RegistrySettings::new(registry.url())).unwrap())
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_outage_is_waited_out_and_poison_pills_are_dead_lettered() {
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic("payments", 1).unwrap();
    let registry = TestRegistry::start().unwrap();
    let schema = AvroSchema::parse(SCHEMA).unwrap();
    // The producer side registers the schema while the registry is up.
    let producer = EventCodec::<Payment>::registry_avro(client(&registry), schema.clone());
    let mut records = Vec::new();
    for i in 0..5 {
        let p = Payment {
            payment_id: format!("p{i}"),
            amount_cents: 100 * i,
        };
        let bytes = producer.encode("payments", &p).await.unwrap();
        records.push((Some(p.payment_id.into_bytes()), bytes, Vec::new()));
    }
    // Two poison pills in the middle: an id the registry never issued, and plain JSON.
    records.insert(
        2,
        (
            Some(b"bad-id".to_vec()),
            wire::encode(999, b"\x02x\x02"),
            Vec::new(),
        ),
    );
    records.insert(
        4,
        (
            Some(b"json".to_vec()),
            br#"{"payment_id":"p"}"#.to_vec(),
            Vec::new(),
        ),
    );
    let bootstrap = broker.bootstrap().to_owned();
    tokio::task::spawn_blocking(move || {
        kafka::produce(bootstrap.as_str(), "payments", records).unwrap()
    })
    .await
    .unwrap();

    // The kernel starts while the registry is down: its cache is empty, so it must wait.
    registry.set_down(true);
    let mut config = Config::for_brokers("forward", broker.bootstrap(), &["payments"]);
    config.runtime.retry_initial_delay = Duration::from_millis(5);
    config.runtime.retry_max_delay = Duration::from_millis(50);
    config.runtime.commit_interval = Duration::from_millis(100);
    let kernel = Typed(Forward {
        events: EventCodec::registry_avro(client(&registry), schema),
    });
    let runtime = Runtime::new(config, kernel);
    let stats = runtime.stats();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run_until(async {
        let _ = stopped.await;
    }));
    // Well past CLUSTERA_MAX_ATTEMPTS (5): an outage never dead-letters.
    wait_for("20 retries during the outage", || {
        stats.snapshot().retries >= 20
    })
    .await;
    let during = stats.snapshot();
    assert_eq!((during.acked, during.dead_lettered), (0, 0), "{during:?}");

    registry.set_down(false);
    wait_for("all 7 messages finished", || {
        let s = stats.snapshot();
        s.acked + s.dead_lettered >= 7
    })
    .await;
    let _ = stop.send(());
    let snapshot = task.await.unwrap().unwrap();
    assert_eq!(
        (snapshot.acked, snapshot.dead_lettered),
        (5, 2),
        "{snapshot:?}"
    );

    let bootstrap = broker.bootstrap().to_owned();
    let (outputs, dead) = tokio::task::spawn_blocking(move || {
        (
            kafka::read_topic(bootstrap.as_str(), "payments-out").unwrap(),
            kafka::read_topic(bootstrap.as_str(), "payments.dlq").unwrap(),
        )
    })
    .await
    .unwrap();
    // Every good payment exactly once (outputs are keyed, so spread over the auto-created
    // topic's partitions), decodable by a fresh consumer.
    let reader =
        EventCodec::<Payment>::registry_avro(client(&registry), AvroSchema::parse(SCHEMA).unwrap());
    let mut ids = Vec::new();
    for o in &outputs {
        let msg = Message::new("payments-out", 0, o.offset).with_value(o.value.clone().unwrap());
        ids.push(reader.decode(&msg).await.unwrap().payment_id);
    }
    ids.sort();
    assert_eq!(ids, ["p0", "p1", "p2", "p3", "p4"]);
    let reasons: Vec<(String, String)> = dead
        .iter()
        .map(|d| {
            (
                String::from_utf8(d.key.clone().unwrap()).unwrap(),
                d.header(dead_letter_headers::ERROR).unwrap(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, "bad-id");
    assert!(
        reasons[0].1.contains("schema id 999 is unknown"),
        "{reasons:?}"
    );
    assert_eq!(reasons[1].0, "json");
    assert!(reasons[1].1.contains("not the magic byte 0"), "{reasons:?}");
}
