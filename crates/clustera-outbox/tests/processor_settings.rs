//! The processor follows the runtime's settings: `CLUSTERA_DLQ_TOPIC` for the dead letters of
//! handlers that fail for good (with `clustera.handler` and the runtime's provenance headers)
//! and `CLUSTERA_MAX_ATTEMPTS` for store errors that may pass. The store errors are real
//! PostgreSQL errors, raised by a trigger on the read-model table: `40001` (serialization
//! failure, transient) and `23514` (check violation, permanent). Sequences count the attempts
//! (a sequence advances even when its transaction rolls back).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use clustera::dead_letter_headers as dlq;
use clustera::testing::{config_from_pairs, kafka, MockBroker};
use clustera::Runtime;
use clustera_debezium::OutboxEvent;
use clustera_outbox::testing::Postgres;
use clustera_outbox::{DocOp, Handler, HandlerError, OutboxProcessor, PgStore, Registry};
use serde_json::json;
use tokio_postgres::{Client, NoTls};

const TOPIC: &str = "postgres.activity.event_outbox";
const DEAD: &str = "outbox-dead";

/// Writes one document of `collection` per event.
struct Writes {
    name: &'static str,
    collection: &'static str,
}

impl Handler for Writes {
    fn name(&self) -> &str {
        self.name
    }
    fn handle(&self, event: &OutboxEvent) -> Result<Vec<DocOp>, HandlerError> {
        Ok(vec![DocOp::Upsert {
            collection: self.collection,
            id: event.event_id.clone(),
            doc: json!({"event": event.event_id}),
        }])
    }
}

fn handler(name: &'static str, collection: &'static str) -> Arc<dyn Handler> {
    Arc::new(Writes { name, collection })
}

/// `Flaky` events: `flaky` writes where the trigger raises 40001, `plain` where nothing fails.
/// `Bad` events: `constrained` writes where the trigger raises 23514, and `plain`.
fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("Flaky", handler("flaky", "flaky"))
        .register("Flaky", handler("plain", "plain"))
        .register("Bad", handler("constrained", "forbidden"))
        .register("Bad", handler("plain", "plain"));
    r
}

/// The first `failures` writes to `flaky` fail with a serialization failure; every write to
/// `forbidden` fails with a check violation.
const INJECT: &str = "
CREATE SEQUENCE flaky_attempts;
CREATE SEQUENCE forbidden_attempts;
CREATE TABLE flaky_failures (n bigint NOT NULL);
CREATE FUNCTION inject() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.collection = 'flaky' THEN
        IF nextval('flaky_attempts') <= (SELECT n FROM flaky_failures) THEN
            RAISE EXCEPTION 'injected serialization failure' USING ERRCODE = 'serialization_failure';
        END IF;
    ELSIF NEW.collection = 'forbidden' THEN
        PERFORM nextval('forbidden_attempts');
        RAISE EXCEPTION 'injected check violation' USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER inject BEFORE INSERT ON read_models FOR EACH ROW EXECUTE FUNCTION inject();";

fn change_event(event_id: &str, event_type: &str) -> kafka::ProducedRecord {
    let value = json!({
        "before": null,
        "after": {
            "event_id": event_id,
            "aggregate_id": "agg-1",
            "aggregate_type": "Test",
            "event_type": event_type,
            "payload": "{}",
            "status": "pending",
            "created_at": "2024-01-15T10:30:00.123456Z"
        },
        "source": {"connector": "postgresql", "schema": "activity", "table": "event_outbox", "snapshot": "false"},
        "op": "c",
        "ts_ms": 1_705_314_600_000_i64
    });
    (
        Some(b"agg-1".to_vec()),
        value.to_string().into_bytes(),
        Vec::new(),
    )
}

struct Fixture {
    _pg: Postgres,
    _broker: MockBroker,
    bootstrap: String,
    client: Client,
    store: Arc<PgStore>,
}

async fn fixture(flaky_failures: i64) -> Fixture {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let store = Arc::new(PgStore::connect(pg.url()).await.unwrap());
    let (client, conn) = tokio_postgres::connect(pg.url(), NoTls).await.unwrap();
    tokio::spawn(conn);
    client.batch_execute(INJECT).await.unwrap();
    client
        .execute("INSERT INTO flaky_failures VALUES ($1)", &[&flaky_failures])
        .await
        .unwrap();
    let broker = MockBroker::start(1).unwrap();
    for topic in [TOPIC, DEAD, &format!("{TOPIC}.dlq")] {
        broker.create_topic(topic, 1).unwrap();
    }
    let bootstrap = broker.bootstrap().to_owned();
    Fixture {
        _pg: pg,
        _broker: broker,
        bootstrap,
        client,
        store,
    }
}

/// Produces `events` (id, type), then runs the processor configured by `vars` (and the
/// broker) until it has finished them.
async fn process(f: &Fixture, events: &[(&str, &str)], vars: &[(&str, &str)]) {
    let records: Vec<_> = events.iter().map(|(id, t)| change_event(id, t)).collect();
    let expected = records.len() as u64;
    let b = f.bootstrap.clone();
    tokio::task::spawn_blocking(move || kafka::produce(&b, TOPIC, records).unwrap())
        .await
        .unwrap();
    let mut pairs = vec![
        ("KAFKA_BOOTSTRAP_SERVERS", f.bootstrap.as_str()),
        ("CLUSTERA_HTTP_ADDR", "off"),
        ("CLUSTERA_BATCH_SIZE", "1"),
        ("CLUSTERA_RETRY_INITIAL_MS", "10"),
        ("CLUSTERA_RETRY_MAX_MS", "50"),
    ];
    pairs.extend_from_slice(vars);
    let mut config = config_from_pairs(&pairs).unwrap();
    config.topics = vec![TOPIC.to_owned()];
    config.properties.insert(
        "session.timeout.ms".into(),
        clustera::config::Secret::new("6000"),
    );
    let runtime = Runtime::new(config, OutboxProcessor::new(registry(), f.store.clone()));
    let stats = runtime.stats();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run_until(async {
        let _ = rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.snapshot().processed() < expected {
        assert!(Instant::now() < deadline, "{:?}", stats.snapshot());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

async fn sequence(client: &Client, name: &str) -> i64 {
    let row = client
        .query_one(&format!("SELECT last_value, is_called FROM {name}"), &[])
        .await
        .unwrap();
    if row.get::<_, bool>(1) {
        row.get(0)
    } else {
        0
    }
}

async fn documents(client: &Client, collection: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM read_models WHERE collection = $1",
            &[&collection],
        )
        .await
        .unwrap()
        .get(0)
}

async fn read(bootstrap: &str, topic: &str) -> Vec<kafka::Consumed> {
    let (b, t) = (bootstrap.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || kafka::read_topic(&b, &t).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_failing_for_good_go_to_the_runtimes_dead_letter_topic_after_max_attempts() {
    let f = fixture(i64::MAX).await;
    let vars = [("CLUSTERA_MAX_ATTEMPTS", "2"), ("CLUSTERA_DLQ_TOPIC", DEAD)];
    process(&f, &[("flaky-1", "Flaky"), ("bad-1", "Bad")], &vars).await;

    assert_eq!(
        sequence(&f.client, "flaky_attempts").await,
        2,
        "a serialization failure is tried CLUSTERA_MAX_ATTEMPTS times"
    );
    assert_eq!(
        sequence(&f.client, "forbidden_attempts").await,
        1,
        "a check violation is dead-lettered at once"
    );
    assert_eq!(
        documents(&f.client, "plain").await,
        2,
        "the other handler applied both"
    );
    assert_eq!(documents(&f.client, "flaky").await, 0);
    assert_eq!(documents(&f.client, "forbidden").await, 0);

    let mut dead = read(&f.bootstrap, DEAD).await;
    dead.sort_by_key(|d| d.header("clustera.handler"));
    let summary: Vec<_> = dead
        .iter()
        .map(|d| {
            (
                d.header("clustera.handler").unwrap(),
                d.header("clustera.event.id").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("constrained".to_owned(), "bad-1".to_owned()),
            ("flaky".to_owned(), "flaky-1".to_owned())
        ]
    );
    for d in &dead {
        assert_eq!(d.header(dlq::ORIGINAL_TOPIC).as_deref(), Some(TOPIC));
        assert_eq!(d.header(dlq::ORIGINAL_PARTITION).as_deref(), Some("0"));
        assert_eq!(d.header(dlq::KERNEL).as_deref(), Some("test"));
        assert!(d.header(dlq::CONSUMER_GROUP).is_some());
        assert!(d.header(dlq::ORIGINAL_OFFSET).is_some());
    }
    assert!(dead[0]
        .header(dlq::ERROR)
        .unwrap()
        .contains("injected check violation"));
    assert!(dead[1]
        .header(dlq::ERROR)
        .unwrap()
        .contains("injected serialization failure"));
    assert!(
        read(&f.bootstrap, &format!("{TOPIC}.dlq")).await.is_empty(),
        "nothing on the default dead-letter topic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_max_attempts_zero_a_transient_store_error_is_never_dead_lettered() {
    // More failures than the default five attempts would allow.
    let f = fixture(7).await;
    let vars = [("CLUSTERA_MAX_ATTEMPTS", "0"), ("CLUSTERA_DLQ_TOPIC", DEAD)];
    process(&f, &[("flaky-1", "Flaky")], &vars).await;
    assert_eq!(
        sequence(&f.client, "flaky_attempts").await,
        8,
        "seven failures, then applied"
    );
    assert_eq!(documents(&f.client, "flaky").await, 1);
    assert_eq!(documents(&f.client, "plain").await, 1);
    assert!(read(&f.bootstrap, DEAD).await.is_empty());
    assert!(read(&f.bootstrap, &format!("{TOPIC}.dlq")).await.is_empty());
}
