//! `clustera outbox relay` as a process under a transaction of 1,000,000 outbox rows: its
//! peak resident memory stays within 256 MB (the relay streams events as they are decoded,
//! with a bounded window of unacknowledged ones), every row reaches Kafka exactly once, and
//! the slot is confirmed past the transaction.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clustera::testing::{kafka, process_memory, MockBroker};
use clustera_outbox::testing::Postgres;
use tokio_postgres::NoTls;

const BIN: &str = env!("CARGO_BIN_EXE_clustera");
const TOPIC: &str = "postgres.activity.event_outbox";
const ROWS: i64 = 1_000_000;
const PEAK_BOUND_KB: u64 = 256 * 1024;
/// The mock cluster keeps at most 100,000 records and 5 MB per partition; 1,000,000 events
/// of about 450 bytes fit in 200 partitions (about 5,000 records, 2.3 MB each), so every
/// record can be read back.
const PARTITIONS: i32 = 200;

fn on_topic(brokers: &str) -> i64 {
    kafka::high_watermarks(brokers, TOPIC)
        .unwrap()
        .values()
        .sum()
}

/// The row number of every record on the topic, from its key: each partition read from its
/// low to its high watermark (taken now). `kafka::read_topic` keeps whole records and gives
/// up after 120 s; this keeps only the numbers and allows ten minutes.
fn row_numbers(brokers: &str) -> Vec<i64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let marks = kafka::watermarks(brokers, TOPIC).unwrap();
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "outbox-relay-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut open = std::collections::BTreeMap::new();
    for (p, (low, high)) in &marks {
        if high > low {
            tpl.add_partition_offset(TOPIC, *p, Offset::Offset(*low))
                .unwrap();
            open.insert(*p, *high);
        }
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::with_capacity(ROWS as usize);
    let deadline = Instant::now() + Duration::from_secs(600);
    while !open.is_empty() {
        assert!(Instant::now() < deadline, "{} records read", out.len());
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let high = open.get(&m.partition()).copied().unwrap_or(0);
        if m.offset() < high {
            let key = std::str::from_utf8(m.key().unwrap()).unwrap();
            out.push(key.rsplit('-').next().unwrap().parse().unwrap());
        }
        if m.offset() + 1 >= high {
            open.remove(&m.partition());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_million_row_transaction_is_relayed_once_each_within_256_mb() {
    let pg = Postgres::start().unwrap_or_else(|e| panic!("{e}"));
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic(TOPIC, PARTITIONS).unwrap();
    let (db, brokers) = (pg.url().to_owned(), broker.bootstrap().to_owned());
    let init = Command::new(BIN)
        .args(["outbox", "init"])
        .env("DATABASE_URL", &db)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(init.success());
    let (client, conn) = tokio_postgres::connect(&db, NoTls).await.unwrap();
    tokio::spawn(conn);

    let mut relay = Command::new(BIN)
        .args(["outbox", "relay"])
        .env("DATABASE_URL", &db)
        .env("KAFKA_BOOTSTRAP_SERVERS", &brokers)
        .env("CLUSTERA_HTTP_ADDR", "off")
        // The mock cluster answers a fetch with one message set per partition, found by a
        // linear search: a million sets of one record each (linger 0) take over ten minutes
        // to read back. Lingering makes the sets tens of records; the relay's memory bound
        // (its window of unacknowledged events) does not depend on it.
        .env("KAFKA_PROPERTY_LINGER_MS", "100")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = relay.id();
    // One transaction; each row's aggregate id carries its number, so the keys on the topic
    // say which rows arrived and how often.
    client
        .execute(
            "INSERT INTO activity.event_outbox (aggregate_id, aggregate_type, event_type, payload)
             SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'User',
                    'UserCreated', jsonb_build_object('n', i)
             FROM generate_series(0, $1::bigint - 1) AS i",
            &[&ROWS],
        )
        .await
        .unwrap();
    let committed: String = client
        .query_one("SELECT pg_current_wal_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);

    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let b = brokers.clone();
        let n = tokio::task::spawn_blocking(move || on_topic(&b))
            .await
            .unwrap();
        if n >= ROWS {
            break;
        }
        assert!(
            relay.try_wait().unwrap().is_none(),
            "the relay exited after {n} events"
        );
        assert!(Instant::now() < deadline, "{n} of {ROWS} relayed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The slot is confirmed past the transaction once every event is acknowledged.
    loop {
        let past: bool = client
            .query_one(
                "SELECT confirmed_flush_lsn >= $1::text::pg_lsn FROM pg_replication_slots WHERE slot_name = 'clustera_outbox'",
                &[&committed],
            )
            .await
            .unwrap()
            .get(0);
        if past {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the transaction was never confirmed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let memory = process_memory(pid).unwrap();
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    assert!(relay.wait().unwrap().success(), "the relay stopped cleanly");

    eprintln!(
        "1,000,000-row transaction: relay peak RSS {} MB (at the end {} MB)",
        memory.peak_kb / 1024,
        memory.rss_kb / 1024
    );

    let b = brokers.clone();
    let keys = tokio::task::spawn_blocking(move || row_numbers(&b))
        .await
        .unwrap();
    let rows: BTreeSet<i64> = keys.iter().copied().collect();
    let duplicated = keys.len() as i64 - rows.len() as i64;
    let lost = ROWS - rows.len() as i64;
    eprintln!(
        "1,000,000-row transaction: {} records, {lost} lost, {duplicated} duplicated",
        keys.len()
    );
    assert_eq!((lost, duplicated), (0, 0), "every row exactly once");
    assert_eq!(rows.first().copied(), Some(0));
    assert_eq!(rows.last().copied(), Some(ROWS - 1));
    assert!(
        memory.peak_kb <= PEAK_BOUND_KB,
        "relay peak RSS {} MB, over 256 MB",
        memory.peak_kb / 1024
    );
}
