//! Exactly-once against a broker that implements transactions (Apache Kafka 2.5 or later):
//! the transform example SIGKILLed five times during 30,000 inputs, and two instances
//! rebalancing; a `read_committed` reader of the output must see every input's key once.
//!
//! No broker on the development machine implements transactions: librdkafka's mock cluster
//! writes no markers and stores no transactional offsets, and tansu 0.6 has no EndTxn (see
//! RELIABILITY.md). These tests are therefore ignored in the default suite and run by
//! `scripts/test-exactly-once.sh`, which needs `CLUSTERA_TEST_KAFKA` (a bootstrap address)
//! and fails, saying so, without it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use clustera::testing::kafka;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

use common::*;

const INPUTS: usize = 30_000;
const PARTITIONS: i32 = 4;

/// The broker under test; panics with instructions without one.
fn kafka_bootstrap() -> String {
    std::env::var("CLUSTERA_TEST_KAFKA").unwrap_or_else(|_| {
        panic!(
            "CLUSTERA_TEST_KAFKA is not set: these tests need a broker with transactions \
             (Apache Kafka 2.5 or later), e.g. `docker run -p 9092:9092 apache/kafka:3.9.0` and \
             CLUSTERA_TEST_KAFKA=localhost:9092 scripts/test-exactly-once.sh"
        )
    })
}

/// Topic names of their own for each run, so a shared broker can be reused.
fn run_id() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    )
}

fn transform_eo(bootstrap: &str, input: &str, output: &str, group: &str, id: &str) -> Child {
    Command::new(example_bin("transform"))
        .env_clear()
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
        .env("KAFKA_TOPIC", input)
        .env("OUTPUT_TOPIC", output)
        .env("KAFKA_CONSUMER_GROUP", group)
        .env(
            "KAFKA_PROPERTY_PARTITION_ASSIGNMENT_STRATEGY",
            "cooperative-sticky",
        )
        .env("CLUSTERA_GUARANTEE", "exactly-once")
        .env("CLUSTERA_TRANSACTIONAL_ID", id)
        .env("CLUSTERA_HTTP_ADDR", "off")
        .env("TRANSFORM_DELAY_MS", "0")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap()
}

fn kill(child: &mut Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn committed_total(bootstrap: &str, group: &str, input: &str) -> i64 {
    kafka::committed_offsets(bootstrap, group, input)
        .unwrap_or_default()
        .values()
        .sum()
}

/// Every record of `topic` a `read_committed` consumer sees, read until its position passes
/// the high watermarks taken now (the last offsets may be transaction markers, never
/// delivered).
fn read_committed(bootstrap: &str, topic: &str) -> Vec<kafka::Consumed> {
    let high = kafka::high_watermarks(bootstrap, topic).unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "clustera-eo-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in high.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut out = Vec::new();
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push(kafka::Consumed {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers: Vec::new(),
            }),
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {
                let position = consumer.position().unwrap();
                let done = high.iter().all(|(p, h)| {
                    matches!(
                        position.find_partition(topic, *p).map(|e| e.offset()),
                        Some(Offset::Offset(o)) if o >= *h
                    )
                });
                if done {
                    return out;
                }
            }
        }
        assert!(Instant::now() < deadline, "{topic}: not read within 120 s");
    }
}

/// Lost and duplicated input keys in `outputs`.
fn lost_and_duplicated(outputs: &[kafka::Consumed]) -> (usize, usize) {
    let mut seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for o in outputs {
        *seen.entry(o.key.clone().unwrap()).or_default() += 1;
    }
    let lost = INPUTS - seen.len();
    let duplicated = seen.values().map(|n| n - 1).sum();
    (lost, duplicated)
}

fn setup(bootstrap: &str, input: &str, output: &str) {
    kafka::create_topic(bootstrap, input, PARTITIONS).unwrap();
    kafka::create_topic(bootstrap, output, PARTITIONS).unwrap();
    kafka::produce_sequence(bootstrap, input, INPUTS).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a broker with transactions: scripts/test-exactly-once.sh"]
async fn sigkilled_five_times_a_read_committed_reader_sees_every_key_once() {
    let bootstrap = kafka_bootstrap();
    let id = run_id();
    let (input, output, group) = (
        format!("eo-kill-in-{id}"),
        format!("eo-kill-out-{id}"),
        format!("eo-kill-{id}"),
    );
    let (b, i, o) = (bootstrap.clone(), input.clone(), output.clone());
    blocking(move || setup(&b, &i, &o)).await;
    for kill_number in 1..=5i64 {
        let mut child = transform_eo(&bootstrap, &input, &output, &group, "eo-kill");
        // Each life gets a sixth of the inputs further before it is killed mid-stream.
        let target = kill_number * INPUTS as i64 / 6;
        let (b, g, i) = (bootstrap.clone(), group.clone(), input.clone());
        wait_for_blocking(
            "progress before the kill",
            Duration::from_secs(120),
            move || committed_total(&b, &g, &i) >= target,
        )
        .await;
        kill(&mut child, "-KILL");
    }
    let mut child = transform_eo(&bootstrap, &input, &output, &group, "eo-kill");
    let (b, g, i) = (bootstrap.clone(), group.clone(), input.clone());
    wait_for_blocking(
        "every input committed",
        Duration::from_secs(180),
        move || committed_total(&b, &g, &i) >= INPUTS as i64,
    )
    .await;
    kill(&mut child, "-TERM");
    let outputs = blocking(move || read_committed(&bootstrap, &output)).await;
    assert_eq!(lost_and_duplicated(&outputs), (0, 0), "(lost, duplicated)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a broker with transactions: scripts/test-exactly-once.sh"]
async fn two_instances_rebalancing_a_read_committed_reader_sees_every_key_once() {
    let bootstrap = kafka_bootstrap();
    let id = run_id();
    let (input, output, group) = (
        format!("eo-reb-in-{id}"),
        format!("eo-reb-out-{id}"),
        format!("eo-reb-{id}"),
    );
    let (b, i, o) = (bootstrap.clone(), input.clone(), output.clone());
    blocking(move || setup(&b, &i, &o)).await;
    let mut first = transform_eo(&bootstrap, &input, &output, &group, "eo-reb-a");
    let progress = |n: i64| {
        let (b, g, i) = (bootstrap.clone(), group.clone(), input.clone());
        move || committed_total(&b, &g, &i) >= n
    };
    wait_for_blocking(
        "the first instance's progress",
        Duration::from_secs(120),
        progress(5_000),
    )
    .await;
    // The second joins mid-stream (partitions move to it), then the first leaves (they move
    // back), each while records are in open transactions.
    let mut second = transform_eo(&bootstrap, &input, &output, &group, "eo-reb-b");
    wait_for_blocking(
        "both sharing the work",
        Duration::from_secs(120),
        progress(15_000),
    )
    .await;
    kill(&mut first, "-TERM");
    wait_for_blocking(
        "every input committed",
        Duration::from_secs(180),
        progress(INPUTS as i64),
    )
    .await;
    kill(&mut second, "-TERM");
    let outputs = blocking(move || read_committed(&bootstrap, &output)).await;
    assert_eq!(lost_and_duplicated(&outputs), (0, 0), "(lost, duplicated)");
}
