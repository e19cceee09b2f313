//! The processor kernel end to end: Debezium-format change events on Kafka (librdkafka's mock
//! cluster) into PostgreSQL read models, redelivery without effect, poison pills dead-lettered.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use clustera::testing::{kafka, MockBroker};
use clustera::{Config, Runtime};
use clustera_outbox::testing::Postgres;
use clustera_outbox::{OutboxProcessor, PgStore};
use clustera_outbox_demo::activity;
use serde_json::json;

const TOPIC: &str = "postgres.activity.event_outbox";

/// A Debezium create event for one outbox row, as the JSON converter without schemas emits it.
fn change_event(i: usize) -> kafka::ProducedRecord {
    let user = format!("u{}", i / 4);
    let (event_type, payload) = match i % 4 {
        0 => (
            "UserCreated",
            json!({"user_id": user, "email": format!("{user}@example.com"), "username": user}),
        ),
        1 => (
            "ActivityCreated",
            json!({"activity_id": format!("a{i}"), "creator_id": user, "title": "Run"}),
        ),
        2 => (
            "ParticipantJoined",
            json!({"activity_id": format!("a{}", i - 1), "user_id": user}),
        ),
        _ => (
            "UserUpdated",
            json!({"user_id": user, "username": format!("{user}-renamed")}),
        ),
    };
    let aggregate = format!("agg-{}", i / 4);
    let value = json!({
        "before": null,
        "after": {
            "event_id": format!("00000000-0000-4000-8000-{i:012}"),
            "aggregate_id": aggregate,
            "aggregate_type": "User",
            "event_type": event_type,
            "payload": payload.to_string(),
            "status": "pending",
            "created_at": "2024-01-15T10:30:00.123456Z"
        },
        "source": {"connector": "postgresql", "db": "activity_db", "schema": "activity", "table": "event_outbox", "snapshot": "false", "lsn": i},
        "op": "c",
        "ts_ms": 1_705_314_600_000_i64
    });
    (
        Some(aggregate.into_bytes()),
        value.to_string().into_bytes(),
        Vec::new(),
    )
}

/// A throwaway PostgreSQL with the store's tables, and a mock cluster with the outbox topic
/// (3 partitions) and its dead-letter topic.
async fn fixture() -> (Postgres, Arc<PgStore>, MockBroker, String) {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let store = Arc::new(PgStore::connect(pg.url()).await.unwrap());
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic(TOPIC, 3).unwrap();
    broker.create_topic(&format!("{TOPIC}.dlq"), 1).unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    (pg, store, broker, bootstrap)
}

async fn run_until_processed(bootstrap: &str, store: Arc<PgStore>, expected: u64) {
    run_with_batch(bootstrap, store, expected, None).await;
}

/// Runs the processor until `expected` messages are final (a message whose single handlers
/// were dead-lettered is acknowledged, and counted once).
async fn run_with_batch(bootstrap: &str, store: Arc<PgStore>, expected: u64, batch: Option<usize>) {
    let mut config = Config::for_brokers("outbox-processor", bootstrap, &[TOPIC]);
    config.runtime.commit_interval = Duration::from_millis(200);
    config.runtime.batch_size = batch;
    // The mock cluster makes a group's next member wait for the last one's session to time
    // out, even after it left: keep that short.
    config.properties.insert(
        "session.timeout.ms".into(),
        clustera::config::Secret::new("6000"),
    );
    let runtime = Runtime::new(config, OutboxProcessor::new(activity::registry(), store));
    let stats = runtime.stats();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run_until(async {
        let _ = rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(90);
    while stats.snapshot().processed() < expected {
        assert!(
            Instant::now() < deadline,
            "processed {:?} of {expected}",
            stats.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn change_events_become_read_models_exactly_once_in_effect() {
    const N: usize = 1000;
    let (_pg, store, _broker, bootstrap) = fixture().await;

    // The events, a tombstone, and a poison pill.
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let mut records: Vec<_> = (0..N).map(change_event).collect();
        records.push((Some(b"agg-x".to_vec()), b"{not json".to_vec(), Vec::new()));
        // The Outbox Event Router's form: payload as an escaped string, id and type in headers.
        let payload = json!({"user_id": "routed-1", "email": "r@example.com"}).to_string();
        records.push((
            Some(b"\"agg-routed\"".to_vec()),
            serde_json::to_vec(&payload).unwrap(),
            vec![
                ("id".into(), "routed-event-1".into()),
                ("eventType".into(), "UserCreated".into()),
            ],
        ));
        kafka::produce(&b, TOPIC, records).unwrap();
    })
    .await
    .unwrap();
    run_until_processed(&bootstrap, store.clone(), N as u64 + 2).await;
    let first = store.all_documents().await.unwrap();
    let stats = store
        .document("user_stats", "global")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stats["total_users"],
        N / 4 + 1,
        "including the routed event"
    );
    let routed = store.document("users", "routed-1").await.unwrap().unwrap();
    assert_eq!(routed["email"], "r@example.com");
    assert_eq!(stats["total_activities"], N / 4);
    assert_eq!(stats["total_participations"], N / 4);
    let user = store.document("users", "u7").await.unwrap().unwrap();
    assert_eq!(user["username"], "u7-renamed");

    // The same events delivered again (a replay from the start, as after lost commits).
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        kafka::produce(&b, TOPIC, (0..N).map(change_event)).unwrap()
    })
    .await
    .unwrap();
    // The same group resumes after its commits, so exactly the N new records are processed.
    run_until_processed(&bootstrap, store.clone(), N as u64).await;
    assert_eq!(
        store.all_documents().await.unwrap(),
        first,
        "redelivered events change nothing"
    );

    let b = bootstrap.clone();
    let dead = tokio::task::spawn_blocking(move || {
        kafka::read_topic(&b, &format!("{TOPIC}.dlq")).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(dead.len(), 1, "the poison pill");
    assert!(dead[0]
        .header("clustera.error")
        .unwrap()
        .contains("not JSON"));
}

/// The events of `change_event`, where every 100th event (an ActivityCreated) lacks its
/// creator: both of its handlers reject it.
fn with_invalid(i: usize) -> kafka::ProducedRecord {
    let (key, value, headers) = change_event(i);
    if i % 100 != 1 {
        return (key, value, headers);
    }
    let mut v: serde_json::Value = serde_json::from_slice(&value).unwrap();
    let payload = json!({"activity_id": format!("a{i}"), "title": "No creator"});
    v["after"]["payload"] = payload.to_string().into();
    (key, v.to_string().into_bytes(), headers)
}

/// Runs `N` events through a processor with `batch` into a fresh database; returns its
/// documents and the dead letters' (handler, event id).
async fn read_models_with_batch(
    batch: usize,
) -> (
    Vec<(String, String, serde_json::Value)>,
    Vec<(String, String)>,
) {
    const N: usize = 2000;
    let (_pg, store, _broker, bootstrap) = fixture().await;
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        kafka::produce(&b, TOPIC, (0..N).map(with_invalid)).unwrap();
    })
    .await
    .unwrap();
    run_with_batch(&bootstrap, store.clone(), N as u64, Some(batch)).await;
    let b = bootstrap.clone();
    let dead = tokio::task::spawn_blocking(move || {
        kafka::read_topic(&b, &format!("{TOPIC}.dlq")).unwrap()
    })
    .await
    .unwrap();
    let mut dead: Vec<(String, String)> = dead
        .iter()
        .map(|d| {
            (
                d.header("clustera.handler").unwrap(),
                d.header("clustera.event.id").unwrap(),
            )
        })
        .collect();
    dead.sort();
    (store.all_documents().await.unwrap(), dead)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_write_the_same_read_models_as_one_event_at_a_time() {
    let (one_by_one, dead_one) = read_models_with_batch(1).await;
    let (batched, dead_batched) = read_models_with_batch(500).await;
    assert_eq!(
        dead_one.len(),
        40,
        "20 events, each for both of its handlers"
    );
    assert_eq!(
        dead_one
            .iter()
            .filter(|(h, _)| h == "user_statistics")
            .count(),
        20
    );
    assert_eq!(
        dead_batched, dead_one,
        "the same handler dead-lettered for the same events"
    );
    assert_eq!(batched.len(), one_by_one.len());
    assert!(
        batched == one_by_one,
        "batched and one-by-one read models differ"
    );
}
