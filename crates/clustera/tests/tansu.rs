//! Smoke test on tansu, an independent Kafka-compatible broker: 10,000 messages through a
//! transform kernel, stop half-way, restart, resume. Needs `scripts/install-tansu.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use clustera::testing::{kafka, Tansu};

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
        kafka::produce_sequence(&b, "smoke-in", N).unwrap();
    })
    .await;

    let kernel = || SlowCopy {
        output: "smoke-out".into(),
        delay: Duration::ZERO,
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
    let b = bootstrap.clone();
    let duplicates = blocking(move || assert_nothing_lost(&b, "smoke-in", "smoke-out")).await;
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
