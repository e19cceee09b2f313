//! Outbox cleanup against a real PostgreSQL and a real Kafka protocol peer: rows deleted right
//! after insert (in the same transaction) are still relayed, and the relay's retention deletes
//! old rows only, without losing any event.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use clustera::testing::{kafka, MockBroker};
use clustera_debezium::{decode, Decoded};
use clustera_outbox::relay::{init, RelayConfig};
use clustera_outbox::testing::Postgres;

mod common;
use common::{column_set, connect, spawn_relay, wait_relayed};

const TOPIC: &str = "postgres.activity.event_outbox";

fn relayed_ids(bootstrap: &str) -> Vec<String> {
    kafka::read_topic(bootstrap, TOPIC)
        .unwrap()
        .into_iter()
        .map(|m| {
            let Decoded::Change(c) = decode(m.value.as_deref()).unwrap() else {
                panic!("a tombstone")
            };
            c.after.as_ref().unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_deleted_in_their_own_transaction_are_still_relayed() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    init(pg.url(), &RelayConfig::default()).await.unwrap();
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic(TOPIC, 2).unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    // Debezium's "delete right after insert" pattern: the table stays empty.
    let inserted: Vec<String> = client
        .query(
            "WITH i AS (
                 INSERT INTO activity.event_outbox (aggregate_id, aggregate_type, event_type, payload)
                 SELECT gen_random_uuid(), 'User', 'UserCreated', '{}' FROM generate_series(1, 30)
                 RETURNING event_id)
             SELECT event_id::text FROM i",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    client
        .batch_execute("BEGIN; INSERT INTO activity.event_outbox (aggregate_id, aggregate_type, event_type, payload) VALUES (gen_random_uuid(), 'User', 'Gone', '{}'); DELETE FROM activity.event_outbox; COMMIT;")
        .await
        .unwrap();
    let relay = spawn_relay(pg.url(), &bootstrap, RelayConfig::default()).await;
    wait_relayed(&relay.relayed, 31).await;
    let _ = relay.stop.send(());
    relay.task.await.unwrap().unwrap();
    let relayed = relayed_ids(&bootstrap);
    assert_eq!(relayed.len(), 31);
    let relayed: BTreeSet<String> = relayed.into_iter().collect();
    assert!(inserted.iter().all(|id| relayed.contains(id)));
    assert!(
        column_set(&client, "SELECT event_id::text FROM activity.event_outbox")
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_deletes_old_rows_only_and_loses_no_event() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    init(pg.url(), &RelayConfig::default()).await.unwrap();
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic(TOPIC, 8).unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    // 12,000 rows two hours old (more than one delete batch), 50 from now. Eight partitions keep
    // every event within the mock cluster's retention (about 5 MB a partition).
    client
        .execute(
            "INSERT INTO activity.event_outbox (aggregate_id, aggregate_type, event_type, payload, created_at)
             SELECT gen_random_uuid(), 'User', 'UserCreated', '{}', now() - interval '2 hours'
             FROM generate_series(1, 12000)",
            &[],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO activity.event_outbox (aggregate_id, aggregate_type, event_type, payload)
             SELECT gen_random_uuid(), 'User', 'UserCreated', '{}' FROM generate_series(1, 50)",
            &[],
        )
        .await
        .unwrap();
    let recent = column_set(
        &client,
        "SELECT event_id::text FROM activity.event_outbox WHERE created_at > now() - interval '1 hour'",
    )
    .await;
    let all = column_set(&client, "SELECT event_id::text FROM activity.event_outbox").await;
    let config = RelayConfig {
        retention: Some(Duration::from_secs(3600)),
        ..RelayConfig::default()
    };
    let relay = spawn_relay(pg.url(), &bootstrap, config).await;
    wait_relayed(&relay.relayed, 12_050).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = column_set(&client, "SELECT event_id::text FROM activity.event_outbox").await;
        if left.len() == recent.len() {
            assert_eq!(left, recent, "only the old rows are deleted");
            break;
        }
        assert!(Instant::now() < deadline, "{} rows left", left.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = relay.stop.send(());
    relay.task.await.unwrap().unwrap();
    let relayed = relayed_ids(&bootstrap);
    assert_eq!(relayed.len(), 12_050, "duplicates or losses");
    assert_eq!(relayed.into_iter().collect::<BTreeSet<_>>(), all);
}
