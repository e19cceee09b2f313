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
use tokio_postgres::{Client, NoTls};

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// `transactions` transactions of `per` inserts each, aggregates cycling over 50 ids.
async fn insert(client: &Client, start: usize, transactions: usize, per: usize) {
    for t in 0..transactions {
        let first = start + t * per;
        client
            .execute(
                "INSERT INTO activity.event_outbox (aggregate_id, aggregate_type, event_type, payload)
                 SELECT ('00000000-0000-4000-8000-' || lpad((i % 50)::text, 12, '0'))::uuid, 'User', 'UserCreated',
                        jsonb_build_object('seq', i, 'user_id', 'u' || i, 'email', 'u' || i || '@example.com')
                 FROM generate_series($1::int, $2::int) AS i",
                &[&(first as i32), &((first + per - 1) as i32)],
            )
            .await
            .unwrap();
    }
}

fn kafka_config(bootstrap: &str) -> clustera::Config {
    clustera::Config::for_brokers("relay-test", bootstrap, &[])
}

async fn relay_until(url: &str, bootstrap: &str, count: u64) {
    let relay = Relay::connect(url, &kafka_config(bootstrap), RelayConfig::default())
        .await
        .unwrap();
    let relayed = relay.relayed();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(relay.run_until(async {
        let _ = rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(60);
    while relayed.load(Ordering::Relaxed) < count {
        assert!(
            Instant::now() < deadline,
            "relayed {} of {count}",
            relayed.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the round that acknowledged the last event confirm it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = tx.send(());
    task.await.unwrap().unwrap();
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
    client
        .query("SELECT event_id::text FROM activity.event_outbox", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inserts_become_debezium_events_and_the_slot_follows_the_acks() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    init(&client, &RelayConfig::default()).await.unwrap();
    init(&client, &RelayConfig::default())
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
    init(&client, &RelayConfig::default()).await.unwrap();
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
    init(&client, &config).await.unwrap();
    init(&client, &config).await.unwrap();
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
async fn the_relay_reports_events_rounds_lag_and_health() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let client = connect(pg.url()).await;
    init(&client, &RelayConfig::default()).await.unwrap();
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
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}
