//! Snapshots against a real PostgreSQL and a real Kafka protocol peer: rows already in the
//! outbox when the slot is created are relayed as reads, exactly the rows the slot does not
//! stream even while the application inserts; a relay killed mid-snapshot resumes; and a
//! resend after a point in time sends those rows again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use clustera::testing::{kafka, MockBroker};
use clustera_debezium::{decode, Decoded, Op};
use clustera_outbox::relay::{init, mark_since, RelayConfig, SnapshotMode, PENDING_TABLE};
use clustera_outbox::testing::Postgres;
use tokio_postgres::Client;

mod common;
use common::{connect, insert, spawn_relay, wait_relayed};

const TOPIC: &str = "postgres.activity.event_outbox";

/// Every event on the topic: event id → the ops it was relayed with.
fn relayed_ops(bootstrap: &str) -> BTreeMap<String, Vec<Op>> {
    let mut out: BTreeMap<String, Vec<Op>> = BTreeMap::new();
    for m in kafka::read_topic(bootstrap, TOPIC).unwrap() {
        let Decoded::Change(c) = decode(m.value.as_deref()).unwrap() else {
            panic!("a tombstone")
        };
        let id = c.after.as_ref().unwrap()["event_id"]
            .as_str()
            .unwrap()
            .to_owned();
        out.entry(id).or_default().push(c.op);
    }
    out
}

async fn row_count(client: &Client) -> u64 {
    let n: i64 = client
        .query_one("SELECT count(*) FROM activity.event_outbox", &[])
        .await
        .unwrap()
        .get(0);
    n as u64
}

async fn pending(client: &Client) -> i64 {
    client
        .query_one(
            &format!("SELECT count(*) FROM activity.{PENDING_TABLE}"),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The outbox table with `rows` rows and no slot yet.
async fn outbox_without_slot(pg: &Postgres, client: &Client, rows: usize) {
    let bare = RelayConfig {
        snapshot: SnapshotMode::Never,
        slot: "scratch".into(),
        ..RelayConfig::default()
    };
    init(pg.url(), &bare).await.unwrap();
    client
        .execute("SELECT pg_drop_replication_slot('scratch')", &[])
        .await
        .unwrap();
    insert(client, 0, rows / 500, 500).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn existing_rows_are_a_snapshot_and_inserts_during_it_are_streamed_once() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    outbox_without_slot(&pg, &client, 2500).await;
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic(TOPIC, 3).unwrap();
    let bootstrap = broker.bootstrap().to_owned();

    // The application keeps inserting while the slot is created: each of its rows must be
    // in the snapshot or in the stream, never both, never neither.
    let url = pg.url().to_owned();
    let writer = tokio::spawn(async move {
        let client = connect(&url).await;
        for i in 0..40 {
            insert(&client, 10_000 + i * 5, 1, 5).await;
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    });
    let snapshotted = init(pg.url(), &RelayConfig::default()).await.unwrap();
    writer.await.unwrap();
    let total = row_count(&client).await;
    assert_eq!(total, 2700);
    assert!(
        snapshotted >= 2500,
        "the rows before the slot: {snapshotted}"
    );
    assert_eq!(pending(&client).await, snapshotted as i64);

    // A relay killed in the middle of the snapshot (after its first batch) ...
    let first = spawn_relay(pg.url(), &bootstrap, RelayConfig::default()).await;
    wait_relayed(&first.relayed, 1000).await;
    first.task.abort();
    let _ = first.task.await;
    // ... and another that finishes it, then streams.
    let second = spawn_relay(pg.url(), &bootstrap, RelayConfig::default()).await;
    let streamed = total - snapshotted;
    // The first relay may have finished more batches than were counted before the abort took
    // effect: wait for the topic to hold every row rather than for a count of the second's.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ops = loop {
        let ops = relayed_ops(&bootstrap);
        if ops.len() as u64 >= total || std::time::Instant::now() > deadline {
            break ops;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let _ = second.stop.send(());
    second.task.await.unwrap().unwrap();

    assert_eq!(ops.len() as u64, total, "lost events");
    let reads = ops.values().filter(|o| o.contains(&Op::Read)).count() as u64;
    let creates = ops.values().filter(|o| o.contains(&Op::Create)).count() as u64;
    assert_eq!(reads, snapshotted);
    assert_eq!(creates, streamed);
    assert!(
        ops.values()
            .all(|o| !(o.contains(&Op::Read) && o.contains(&Op::Create))),
        "a row both snapshotted and streamed"
    );
    // Only the batch in flight when the first relay died may come twice.
    let duplicated = ops.values().filter(|o| o.len() > 1).count();
    assert!(duplicated <= 1000, "{duplicated} duplicated");
    assert_eq!(pending(&client).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resend_sends_the_rows_since_a_time_again_as_reads() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    let config = RelayConfig {
        snapshot: SnapshotMode::Never,
        ..RelayConfig::default()
    };
    assert_eq!(init(pg.url(), &config).await.unwrap(), 0);
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic(TOPIC, 2).unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    client
        .execute(
            "INSERT INTO activity.event_outbox (aggregate_id, aggregate_type, event_type, payload, created_at)
             SELECT gen_random_uuid(), 'User', 'UserCreated', '{}', timestamptz '2026-01-01' + i * interval '1 hour'
             FROM generate_series(0, 47) AS i",
            &[],
        )
        .await
        .unwrap();
    // Rows of the second day go again.
    let marked = mark_since(&client, &config, "2026-01-02T00:00:00Z")
        .await
        .unwrap();
    assert_eq!(marked, 24);
    let relay = spawn_relay(pg.url(), &bootstrap, config.clone()).await;
    wait_relayed(&relay.relayed, 48 + 24).await;
    let _ = relay.stop.send(());
    relay.task.await.unwrap().unwrap();
    let ops = relayed_ops(&bootstrap);
    assert_eq!(ops.len(), 48);
    assert_eq!(ops.values().filter(|o| o.len() == 2).count(), 24);
    assert_eq!(
        ops.values().filter(|o| o.contains(&Op::Read)).count(),
        24,
        "resent rows are reads"
    );
    let wrong = RelayConfig {
        time_column: "no_such_column".into(),
        ..config
    };
    let e = mark_since(&client, &wrong, "2026-01-02").await.unwrap_err();
    let text = clustera::infra::error_chain(&e);
    assert!(text.contains("no_such_column"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_without_a_primary_key_is_refused_clearly() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    outbox_without_slot(&pg, &client, 0).await;
    client
        .batch_execute("ALTER TABLE activity.event_outbox DROP CONSTRAINT event_outbox_pkey")
        .await
        .unwrap();
    let e = init(pg.url(), &RelayConfig::default()).await.unwrap_err();
    assert!(
        e.to_string().contains("primary key")
            && e.to_string().contains("CLUSTERA_OUTBOX_SNAPSHOT=never"),
        "{e}"
    );
}
