//! Smoke test on tansu, an independent Kafka-compatible broker: 10,000 messages through a
//! transform kernel, stop half-way, restart, resume. Needs `scripts/install-tansu.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use clustera::testing::{kafka, Tansu};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message as _, Offset, TopicPartitionList};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_messages_stop_restart_resume() {
    const N: usize = 10_000;
    let tansu = Tansu::start().unwrap_or_else(|e| panic!("{e}"));
    let bootstrap = tansu.bootstrap().to_owned();
    let b = bootstrap.clone();
    blocking(move || {
        kafka::create_topic(&b, "smoke-in", 4).unwrap();
        kafka::create_topic(&b, "smoke-out", 4).unwrap();
        // One record per batch: tansu 0.6.0 returns nothing for a fetch that starts inside a
        // batch, so a consumer resuming from a commit in the middle of one would wait for
        // ever (Kafka returns the whole batch and the client skips what it has read).
        let mut producer = rdkafka::ClientConfig::new();
        producer
            .set("bootstrap.servers", &b)
            .set("batch.num.messages", "1");
        kafka::produce_sequence(&producer, "smoke-in", N).unwrap();
    })
    .await;

    // 2 ms a message (about 5 s per partition): the stop lands mid-run.
    let kernel = || SlowCopy {
        output: "smoke-out".into(),
        delay: Duration::from_millis(2),
    };
    let first = start(config("copy", &bootstrap, "smoke-in"), kernel());
    let stats = first.stats.clone();
    wait_for("half of the messages", Duration::from_secs(120), || {
        stats.snapshot().processed() >= (N / 2) as u64
    })
    .await;
    let first_run = first.stop().await;
    assert!(first_run.processed() >= (N / 2) as u64);

    let second = start(config("copy", &bootstrap, "smoke-in"), kernel());
    let stats2 = second.stats.clone();
    let already = first_run.processed();
    wait_for(
        "the restarted kernel to process the rest",
        Duration::from_secs(180),
        || already + stats2.snapshot().processed() >= N as u64,
    )
    .await;
    // tansu 0.6.0 reports wrong high watermarks, so commits are compared with the count
    // produced rather than with its watermarks.
    let b = bootstrap.clone();
    wait_for_blocking(
        "commits to cover every input",
        Duration::from_secs(60),
        move || {
            let committed =
                kafka::committed_offsets(&b, "copy-consumer-group", "smoke-in").unwrap();
            committed.values().sum::<i64>() >= N as i64
        },
    )
    .await;
    let second_run = second.stop().await;
    // tansu's high watermarks are wrong, so both topics are read until the expected count
    // rather than up to their watermarks.
    let b = bootstrap.clone();
    let (inputs, outputs) = blocking(move || {
        (
            read_at_least(&b, "smoke-in", N),
            read_at_least(&b, "smoke-out", N),
        )
    })
    .await;
    let sources: std::collections::HashSet<(i32, i64)> =
        transform_sources(&outputs).into_iter().collect();
    let lost: Vec<_> = inputs
        .iter()
        .map(|m| (m.partition, m.offset))
        .filter(|p| !sources.contains(p))
        .collect();
    assert_eq!(inputs.len(), N, "inputs read back");
    assert!(
        lost.is_empty(),
        "{} inputs lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    let duplicates = outputs.len() - N;
    eprintln!(
        "tansu: first run {}, second run {}, {duplicates} duplicate outputs",
        first_run.processed(),
        second_run.processed()
    );
    assert!(
        second_run.processed() < N as u64,
        "the restart resumed from the committed offsets instead of starting over"
    );
}

/// Every record of `topic`'s 4 partitions from the start, until at least `n` were read and no
/// more come for 2 s (or 60 s pass).
fn read_at_least(bootstrap: &str, topic: &str, n: usize) -> Vec<kafka::Consumed> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "tansu-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut quiet_since = std::time::Instant::now();
    while std::time::Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                quiet_since = std::time::Instant::now();
                out.push(kafka::Consumed {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers: Vec::new(),
                });
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None if out.len() >= n && quiet_since.elapsed() > Duration::from_secs(2) => break,
            None => {}
        }
    }
    out
}
