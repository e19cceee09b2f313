//! The relay against a real PostgreSQL (logical decoding, pgoutput) and a real Kafka protocol
//! peer: committed inserts arrive as Debezium change events keyed by aggregate; the slot
//! advances only past acknowledged events; a relay stopped at any point loses nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clustera::testing::{kafka, MockBroker};
use clustera_debezium::{decode, Decoded, OutboxColumns, OutboxEvent};
use clustera_outbox::relay::{init, Relay, RelayConfig, RelayTelemetry};
use clustera_outbox::testing::Postgres;
use tokio_postgres::Client;

mod common;
use common::{connect, insert, kafka_config, spawn_relay, wait_relayed, RunningRelay};

async fn relay_until(url: &str, bootstrap: &str, count: u64) {
    let relay = spawn_relay(url, bootstrap, RelayConfig::default()).await;
    wait_relayed(&relay.relayed, count).await;
    // Let the round that acknowledged the last event confirm it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = relay.stop.send(());
    relay.task.await.unwrap().unwrap();
}

/// Every event on the topic, decoded, with its key.
fn events(bootstrap: &str) -> Vec<(String, OutboxEvent)> {
    kafka::read_topic(bootstrap, "postgres.activity.event_outbox")
        .unwrap()
        .into_iter()
        .map(|m| {
            let Decoded::Change(c) = decode(m.value.as_deref()).unwrap() else {
                panic!("tombstone")
            };
            let e = OutboxEvent::from_change(&c, &OutboxColumns::default())
                .unwrap()
                .unwrap();
            (String::from_utf8(m.key.unwrap()).unwrap(), e)
        })
        .collect()
}

async fn confirmed_lsn(client: &Client) -> String {
    client
        .query_one("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'clustera_outbox'", &[])
        .await
        .unwrap()
        .get(0)
}

async fn table_ids(client: &Client) -> BTreeSet<String> {
    common::column_set(client, "SELECT event_id::text FROM activity.event_outbox").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inserts_become_debezium_events_and_the_slot_follows_the_acks() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    init(pg.url(), &RelayConfig::default()).await.unwrap();
    init(pg.url(), &RelayConfig::default())
        .await
        .expect("init is idempotent");
    let broker = MockBroker::start(1).unwrap();
    broker
        .create_topic("postgres.activity.event_outbox", 4)
        .unwrap();
    let bootstrap = broker.bootstrap().to_owned();

    let before = confirmed_lsn(&client).await;
    insert(&client, 0, 10, 100).await;
    relay_until(pg.url(), &bootstrap, 1000).await;
    assert_ne!(confirmed_lsn(&client).await, before, "the slot advanced");

    let b = bootstrap.clone();
    let got = tokio::task::spawn_blocking(move || events(&b))
        .await
        .unwrap();
    assert_eq!(got.len(), 1000);
    let ids: BTreeSet<String> = got.iter().map(|(_, e)| e.event_id.clone()).collect();
    assert_eq!(ids, table_ids(&client).await, "every row exactly once");
    // Keyed by aggregate, and within an aggregate in insert order.
    let mut per_aggregate: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for (key, e) in &got {
        assert_eq!(key, &e.aggregate_id);
        assert_eq!(e.event_type, "UserCreated");
        assert!(
            e.created_at_us.is_some(),
            "timestamptz became a ZonedTimestamp"
        );
        per_aggregate
            .entry(key)
            .or_default()
            .push(e.payload["seq"].as_i64().unwrap());
    }
    assert_eq!(per_aggregate.len(), 50);
    for (aggregate, seqs) in &per_aggregate {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "{aggregate}: {seqs:?}"
        );
    }

    // A new relay resumes after the confirmed position: only the new rows are sent.
    insert(&client, 1000, 2, 100).await;
    relay_until(pg.url(), &bootstrap, 200).await;
    let b = bootstrap.clone();
    assert_eq!(
        tokio::task::spawn_blocking(move || events(&b))
            .await
            .unwrap()
            .len(),
        1200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_stopped_mid_transaction_loses_nothing() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    init(pg.url(), &RelayConfig::default()).await.unwrap();
    let broker = MockBroker::start(1).unwrap();
    broker
        .create_topic("postgres.activity.event_outbox", 4)
        .unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    insert(&client, 0, 1, 3000).await;

    // Abort the relay while it is sending: nothing was confirmed. Small produce requests and
    // a slow broker make the acknowledgements arrive in waves, so the abort lands between
    // them whatever the machine's speed.
    broker
        .cluster()
        .broker_round_trip_time(1, Duration::from_millis(200))
        .unwrap();
    // A passthrough property, as KAFKA_PROPERTY_BATCH_NUM_MESSAGES=100 would set it.
    let mut slow = kafka_config(&bootstrap);
    slow.properties.insert(
        "batch.num.messages".into(),
        clustera::config::Secret::new("100"),
    );
    let relay = Relay::connect(pg.url(), &slow, RelayConfig::default())
        .await
        .unwrap();
    let relayed = relay.relayed();
    let before = confirmed_lsn(&client).await;
    let task = tokio::spawn(relay.run_until(std::future::pending()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while relayed.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the relay started sending");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    task.abort();
    let _ = task.await;
    broker
        .cluster()
        .broker_round_trip_time(1, Duration::ZERO)
        .unwrap();
    let sent_before_crash = relayed.load(Ordering::Relaxed);
    assert!(
        sent_before_crash < 3000,
        "aborted mid-transaction ({sent_before_crash} acknowledged)"
    );
    assert_eq!(
        confirmed_lsn(&client).await,
        before,
        "nothing confirmed before every ack"
    );

    relay_until(pg.url(), &bootstrap, 3000).await;
    let b = bootstrap.clone();
    let got = tokio::task::spawn_blocking(move || events(&b))
        .await
        .unwrap();
    let ids: BTreeSet<String> = got.iter().map(|(_, e)| e.event_id.clone()).collect();
    assert_eq!(ids, table_ids(&client).await, "every event reached Kafka");
    assert!(
        got.len() >= 3000,
        "duplicates only from the unconfirmed transaction"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_commit_wakes_the_relay_and_init_is_idempotent() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    let config = RelayConfig::default();
    init(pg.url(), &config).await.unwrap();
    init(pg.url(), &config).await.unwrap();
    let wakeups = clustera_outbox::relay::wakeup::Wakeups::listen(pg.url(), &config.channel)
        .await
        .unwrap();
    // Nothing committed, nothing notified; an open transaction notifies only at commit.
    let early = tokio::time::timeout(Duration::from_millis(300), wakeups.notified()).await;
    assert!(early.is_err(), "no notification without an insert");
    client.batch_execute("BEGIN").await.unwrap();
    insert(&client, 0, 1, 3).await;
    let uncommitted = tokio::time::timeout(Duration::from_millis(300), wakeups.notified()).await;
    assert!(uncommitted.is_err(), "no notification before the commit");
    client.batch_execute("COMMIT").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), wakeups.notified())
        .await
        .expect("the commit notifies the channel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_reports_events_wal_commit_to_ack_and_health() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    init(pg.url(), &RelayConfig::default()).await.unwrap();
    let broker = MockBroker::start(1).unwrap();
    broker
        .create_topic("postgres.activity.event_outbox", 2)
        .unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    insert(&client, 0, 4, 25).await;

    let telemetry = std::sync::Arc::new(RelayTelemetry::new(Duration::from_secs(60)));
    let server = clustera::infra::serve("127.0.0.1:0".parse().unwrap(), telemetry.clone())
        .await
        .unwrap();
    let addr = server.addr();
    let not_yet = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(not_yet.status(), 503, "ready only after a round");
    let relay = Relay::connect(pg.url(), &kafka_config(&bootstrap), RelayConfig::default())
        .await
        .unwrap()
        .with_telemetry(telemetry.clone());
    let relayed = relay.relayed();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(relay.run_until(async {
        let _ = rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // The lag is measured after a round, then every 5 s. Once the events are confirmed it
        // is at most a few records the server writes on its own (standby snapshots), far less
        // than the 100 unconfirmed inserts' WAL.
        let lag = text
            .lines()
            .find_map(|l| l.strip_prefix("clustera_relay_slot_lag_bytes "))
            .and_then(|v| v.trim().parse::<i64>().ok());
        // The text was read before `relayed` was looked at: wait until it shows the events too.
        if relayed.load(Ordering::Relaxed) == 100
            && text.contains("clustera_relay_events_total 100")
            && lag.is_some_and(|l| l < 4096)
        {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(text.contains("clustera_relay_events_total 100"), "{text}");
    assert!(text.contains("clustera_relay_rounds_total"), "{text}");
    // Streaming: retained WAL (restart_lsn), commit-to-acknowledgement per transaction.
    assert!(
        text.contains("clustera_relay_retained_wal_bytes "),
        "{text}"
    );
    let confirmed_transactions = text
        .lines()
        .find_map(|l| l.strip_prefix("clustera_relay_commit_to_ack_seconds_count "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert!(
        confirmed_transactions.is_some_and(|n| n >= 4),
        "the 4 transactions timed: {text}"
    );
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

async fn slot_active(client: &Client) -> bool {
    client
        .query_one(
            "SELECT active FROM pg_replication_slots WHERE slot_name = 'clustera_outbox'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_relay_on_the_same_slot_is_refused_and_the_first_keeps_relaying() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    init(pg.url(), &RelayConfig::default()).await.unwrap();
    let broker = MockBroker::start(1).unwrap();
    broker
        .create_topic("postgres.activity.event_outbox", 2)
        .unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    let RunningRelay {
        relayed,
        stop,
        task: first,
    } = spawn_relay(pg.url(), &bootstrap, RelayConfig::default()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !slot_active(&client).await {
        assert!(Instant::now() < deadline, "the first relay holds the slot");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let second = Relay::connect(pg.url(), &kafka_config(&bootstrap), RelayConfig::default())
        .await
        .unwrap();
    let refused = second
        .run_until(std::future::pending())
        .await
        .expect_err("a second relay on the same slot is refused");
    let message = refused.to_string();
    assert!(
        matches!(
            refused,
            clustera_outbox::relay::RelayError::SlotActive { .. }
        ),
        "{message}"
    );
    assert!(
        message.contains("\"clustera_outbox\" is in use by another session")
            && message.contains("only one relay may read a slot")
            && message.contains("is active for PID"),
        "{message}"
    );

    insert(&client, 0, 2, 50).await;
    wait_relayed(&relayed, 100).await;
    let _ = stop.send(());
    first.await.unwrap().unwrap();
    let b = bootstrap.clone();
    let got = tokio::task::spawn_blocking(move || events(&b))
        .await
        .unwrap();
    assert_eq!(got.len(), 100, "the first relay alone published, once each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_slot_is_a_clear_error_and_init_recovers() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    init(pg.url(), &RelayConfig::default()).await.unwrap();
    let broker = MockBroker::start(1).unwrap();
    broker
        .create_topic("postgres.activity.event_outbox", 2)
        .unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    client
        .execute("SELECT pg_drop_replication_slot('clustera_outbox')", &[])
        .await
        .unwrap();
    let RunningRelay {
        stop: _stop, task, ..
    } = spawn_relay(pg.url(), &bootstrap, RelayConfig::default()).await;
    let e = task.await.unwrap().expect_err("no slot, no relay");
    let message = e.to_string();
    assert!(
        message.contains("replication slot \"clustera_outbox\" does not exist")
            && message.contains("clustera outbox init"),
        "{message}"
    );

    // The documented recovery: init creates the slot again; rows from then on are relayed.
    init(pg.url(), &RelayConfig::default()).await.unwrap();
    insert(&client, 0, 1, 10).await;
    relay_until(pg.url(), &bootstrap, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_are_iso_utc_whatever_the_databases_datestyle() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    client
        .batch_execute(
            "ALTER DATABASE postgres SET DateStyle = 'SQL, DMY';
             ALTER DATABASE postgres SET TimeZone = 'America/New_York';",
        )
        .await
        .unwrap();
    // A new session sees the database's settings.
    let fresh = connect(pg.url()).await;
    let shown: String = fresh.query_one("SHOW DateStyle", &[]).await.unwrap().get(0);
    assert_eq!(shown, "SQL, DMY");
    init(pg.url(), &RelayConfig::default()).await.unwrap();
    let broker = MockBroker::start(1).unwrap();
    broker
        .create_topic("postgres.activity.event_outbox", 1)
        .unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    fresh
        .execute(
            "INSERT INTO activity.event_outbox (aggregate_id, aggregate_type, event_type, payload, created_at)
             VALUES (gen_random_uuid(), 'User', 'UserCreated', '{}', '2026-01-02 03:04:05.678+00')",
            &[],
        )
        .await
        .unwrap();
    relay_until(pg.url(), &bootstrap, 1).await;
    let b = bootstrap.clone();
    let values: Vec<serde_json::Value> = tokio::task::spawn_blocking(move || {
        kafka::read_topic(b.as_str(), "postgres.activity.event_outbox")
            .unwrap()
            .into_iter()
            .map(|m| serde_json::from_slice(m.value.as_deref().unwrap()).unwrap())
            .collect()
    })
    .await
    .unwrap();
    assert_eq!(values.len(), 1);
    // Debezium's ZonedTimestamp pads the fraction to the column's precision (6 for a plain
    // timestamptz).
    assert_eq!(
        values[0]["after"]["created_at"], "2026-01-02T03:04:05.678000Z",
        "{}",
        values[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publication_decodes_inserts_only() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    // A publication made by an earlier version, publishing everything.
    client
        .batch_execute(
            "CREATE SCHEMA activity;
             CREATE TABLE activity.event_outbox (event_id uuid PRIMARY KEY);
             CREATE PUBLICATION clustera_outbox FOR TABLE activity.event_outbox;",
        )
        .await
        .unwrap();
    init(pg.url(), &RelayConfig::default()).await.unwrap();
    let row = client
        .query_one(
            "SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication WHERE pubname = 'clustera_outbox'",
            &[],
        )
        .await
        .unwrap();
    let flags: (bool, bool, bool, bool) = (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(flags, (true, false, false, false));
}

/// WAL the slot makes the server keep: from its `restart_lsn` to the current position.
async fn retained_wal(client: &Client) -> i64 {
    client
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
             FROM pg_replication_slots WHERE slot_name = 'clustera_outbox'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_quiet_outbox_does_not_hold_back_wal_written_elsewhere() {
    const WRITTEN: i64 = 300 << 20;
    const BOUND: i64 = 64 << 20;
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    init(pg.url(), &RelayConfig::default()).await.unwrap();
    client
        .batch_execute("CREATE TABLE public.busy (id bigserial PRIMARY KEY, filler text)")
        .await
        .unwrap();
    let broker = MockBroker::start(1).unwrap();
    broker
        .create_topic("postgres.activity.event_outbox", 1)
        .unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    let RunningRelay {
        relayed,
        stop,
        task,
    } = spawn_relay(pg.url(), &bootstrap, RelayConfig::default()).await;

    let start: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    let mut total = 0i64;
    while total < WRITTEN {
        client
            .execute(
                "INSERT INTO public.busy (filler) SELECT repeat(md5(i::text), 32) FROM generate_series(1, 20000) AS i",
                &[],
            )
            .await
            .unwrap();
        total = client
            .query_one(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint",
                &[&start],
            )
            .await
            .unwrap()
            .get(0);
    }
    // The server notes running transactions (what lets a slot's restart_lsn move) every
    // 15 s on its own; the relay confirms the server's position from its keepalives.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut retained = retained_wal(&client).await;
    while retained > BOUND {
        assert!(
            Instant::now() < deadline,
            "the slot still retains {retained} bytes of the {total} written"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        retained = retained_wal(&client).await;
    }
    eprintln!("quiet outbox: {total} bytes of WAL written elsewhere, {retained} retained");
    assert_eq!(relayed.load(Ordering::Relaxed), 0, "nothing to relay");
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
