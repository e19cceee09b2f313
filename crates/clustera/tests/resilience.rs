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
    // librdkafka's mock refuses the classic protocol's commit at eager revocation with
    // REBALANCE_IN_PROGRESS (a real broker accepts it from the current generation), so here
    // what was done since the last periodic commit is processed again: no bound is asserted.
    two_instances_one_leaves(config, "rb", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_one_leaves_mid_run_nothing_lost_kip848() {
    two_instances_one_leaves(config_kip848, "rb848", Some(4)).await;
}

/// Two members share 4 partitions; one leaves. Nothing may be lost. A member drains and
/// commits before giving partitions up, so where those commits are accepted the only
/// duplicates are messages in process when a drain ended: at most one per partition (each
/// partition processes one message at a time), the `bound`.
async fn two_instances_one_leaves(
    make: fn(&str, &str, &str) -> clustera::Config,
    prefix: &str,
    bound: Option<usize>,
) {
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
    if let Some(bound) = bound {
        assert!(
            duplicates <= bound,
            "{duplicates} duplicates: more than the {bound} messages that can be in process at a drain"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_down_and_injected_errors_lose_nothing() {
    const N: usize = 3_000;
    let (broker, bootstrap) = mock_with_sequence(&[("fault-in", 4), ("fault-out", 4)], N).await;

    // The shipped configuration: idempotent producer, acks=all.
    let cfg = config("copy", &bootstrap, "fault-in");
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

    // Commits fail for a while (librdkafka only logs these; the runtime notices and sends
    // every position again), and produce requests fail on the wire.
    //
    // Not NOT_LEADER_FOR_PARTITION: librdkafka's mock checks no sequence numbers for a
    // non-transactional idempotent producer, so with two requests in flight it stores the
    // second after refusing the first, and librdkafka then (correctly, for a real broker)
    // takes the first as implicitly acknowledged: records reported delivered, never stored.
    // A transport error closes the connection, failing every request on it, which the mock
    // handles as a broker would.
    let cluster = broker.cluster();
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_OFFSET_METADATA_TOO_LARGE; 3],
    );
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR__TRANSPORT; 5],
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
