//! Rebalances and broker faults on the mock cluster: nothing is lost, and the kernel recovers
//! without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use clustera::testing::kafka;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_one_leaves_mid_run_nothing_lost() {
    two_instances_one_leaves(config, "rb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_one_leaves_mid_run_nothing_lost_kip848() {
    two_instances_one_leaves(config_kip848, "rb848").await;
}

/// Two members share 4 partitions; one leaves. It drains and commits before leaving, so the
/// only duplicates allowed are messages in process when a drain ended: at most one per
/// partition (each partition processes one message at a time).
async fn two_instances_one_leaves(make: fn(&str, &str, &str) -> clustera::Config, prefix: &str) {
    const N: usize = 3_000;
    const PARTITIONS: usize = 4;
    let (input, output) = (format!("{prefix}-in"), format!("{prefix}-out"));
    let (_broker, bootstrap) =
        mock_with_sequence(&[(&input, PARTITIONS as i32), (&output, 4)], N).await;

    // 10 ms a message: 7.5 s of work per partition, so the second member (which the
    // next-generation protocol lets in only after the first one started) gets a share.
    let kernel = || SlowCopy {
        output: output.clone(),
        delay: Duration::from_millis(10),
    };
    let a = start(make("copy", &bootstrap, &input), kernel());
    let b_run = start(make("copy", &bootstrap, &input), kernel());
    let (sa, sb) = (a.stats.clone(), b_run.stats.clone());
    wait_for("both instances to work", Duration::from_secs(60), || {
        sa.snapshot().processed() > 100 && sb.snapshot().processed() > 100
    })
    .await;
    let left = a.stop().await;
    let (b2, i2) = (bootstrap.clone(), input.clone());
    wait_for_blocking(
        "B to take over and commit everything",
        Duration::from_secs(120),
        move || fully_committed(&b2, "copy-consumer-group", &i2),
    )
    .await;
    let remaining = b_run.stop().await;
    let (b, i, o) = (bootstrap.clone(), input.clone(), output.clone());
    let duplicates = blocking(move || assert_nothing_lost(&b, &i, &o)).await;
    eprintln!("rebalance ({prefix}): A {left:?}, B {remaining:?}, {duplicates} duplicates");
    assert!(
        duplicates <= PARTITIONS,
        "{duplicates} duplicates: more than the messages that can be in process at a drain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_down_and_injected_errors_lose_nothing() {
    const N: usize = 3_000;
    let (broker, bootstrap) = mock_with_sequence(&[("fault-in", 4), ("fault-out", 4)], N).await;

    let mut cfg = config("copy", &bootstrap, "fault-in");
    // With the idempotent producer, librdkafka 2.12.1 reports two records as delivered that
    // its own mock cluster never stored, after injected NOT_LEADER_FOR_PARTITION errors
    // (reproducible; see the closing note of the runtime issue). The runtime trusts delivery
    // reports, so this fault test uses a plain producer.
    cfg.properties.insert(
        "enable.idempotence".into(),
        clustera::config::Secret::new("false"),
    );
    let running = start(
        cfg,
        SlowCopy {
            output: "fault-out".into(),
            delay: Duration::from_millis(2),
        },
    );
    let stats = running.stats.clone();
    wait_for("progress", Duration::from_secs(60), || {
        stats.snapshot().processed() > 300
    })
    .await;

    // Commits fail for a while (librdkafka does not report these to the consumer: the
    // runtime's periodic full re-commit must heal them), and produce requests hit retriable
    // errors.
    let cluster = broker.cluster();
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE; 3],
    );
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 5],
    );
    let before = stats.snapshot().processed();
    wait_for(
        "progress through injected errors",
        Duration::from_secs(60),
        || stats.snapshot().processed() > before + 300,
    )
    .await;

    // The only broker goes away for three seconds.
    cluster.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.broker_up(1).unwrap();

    let b = bootstrap.clone();
    wait_for_blocking(
        "recovery and full commit",
        Duration::from_secs(120),
        move || fully_committed(&b, "copy-consumer-group", "fault-in"),
    )
    .await;
    let summary = running.stop().await;
    let b = bootstrap.clone();
    let hw: i64 = blocking(move || {
        kafka::high_watermarks(&b, "fault-out")
            .unwrap()
            .values()
            .sum()
    })
    .await;
    eprintln!("faults: {summary:?}, output high watermarks sum {hw}");
    let b = bootstrap.clone();
    let duplicates = blocking(move || assert_nothing_lost(&b, "fault-in", "fault-out")).await;
    eprintln!("faults: {summary:?}, {duplicates} duplicate outputs");
    assert!(summary.processed() >= N as u64);
}
