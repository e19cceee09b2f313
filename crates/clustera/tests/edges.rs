//! Shutdown, rebalance and input edges: a revoke during a retry, a producer that fails for
//! good, transactional input. Each asserts exact counts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clustera::testing::{kafka, MockBroker};
use clustera::{Context, Kernel, KernelError, Message, Outcome, Record, Runtime, RuntimeError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::ClientConfig;

use common::*;

/// Produces `committed` records in two committed transactions with an aborted one between.
fn produce_transactions(bootstrap: &str, topic: &str, committed: usize) {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("transactional.id", "hardening-txn")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(30);
    producer.init_transactions(timeout).unwrap();
    let half = committed / 2;
    for (count, commit) in [(half, true), (50, false), (committed - half, true)] {
        producer.begin_transaction().unwrap();
        for i in 0..count {
            let key = format!("k{i}");
            let value = format!("{{\"seq\":{i}}}");
            producer
                .send(BaseRecord::to(topic).key(&key).payload(&value))
                .unwrap();
        }
        producer.flush(timeout).unwrap();
        if commit {
            producer.commit_transaction(timeout).unwrap();
        } else {
            producer.abort_transaction(timeout).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commits_pass_the_transaction_markers_of_an_idle_read_committed_partition() {
    const N: usize = 300;
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic("txn-in", 1).unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    let b = bootstrap.clone();
    blocking(move || produce_transactions(&b, "txn-in", N)).await;
    let running = start(
        config("copy", &bootstrap, "txn-in"),
        SlowCopy {
            output: "txn-out".into(),
            delay: Duration::ZERO,
        },
    );
    let stats = running.stats.clone();
    wait_for(
        "committed records processed",
        Duration::from_secs(60),
        || stats.snapshot().processed() >= N as u64,
    )
    .await;
    // On a real broker the last record of the topic is a commit marker the kernel never sees:
    // the group must commit past it (the runtime commits an idle partition's position), or
    // the lag stays at 1 and the idle partition looks stalled. librdkafka's mock writes no
    // markers and filters no aborted records, so here this only proves that transactional
    // input commits to the watermark; the marker case rests on librdkafka's stats code
    // (consumer_lag = last stable offset - committed).
    let b = bootstrap.clone();
    wait_for_blocking(
        "commits at the high watermark",
        Duration::from_secs(30),
        move || fully_committed(&b, "copy-consumer-group", "txn-in"),
    )
    .await;
    let summary = running.stop().await;
    // librdkafka's mock keeps no index of aborted transactions, so it hands the 50 aborted
    // records to a read_committed consumer too; a real broker would not.
    assert!(
        [N as u64, N as u64 + 50].contains(&summary.processed()),
        "{summary:?}"
    );
}

/// Copies inputs to `output`; while `retry` is set, retries the value `sticky` for ever.
struct StickyRetry {
    output: String,
    retry: bool,
}

impl Kernel for StickyRetry {
    fn name(&self) -> &str {
        "sticky"
    }
    fn default_topics(&self) -> Vec<String> {
        vec![]
    }
    async fn process(&self, msg: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        let text = msg.text()?;
        if self.retry && text == "sticky" {
            return Ok(Outcome::retry());
        }
        let out =
            serde_json::json!({"source": {"partition": msg.partition(), "offset": msg.offset()}});
        ctx.send(Record::to(&self.output).json(&out).unwrap());
        Ok(Outcome::Ack)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_revoked_during_a_retry_is_handed_over_uncommitted() {
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic("rr-in", 1).unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    let inputs: Vec<String> = (0..20)
        .map(|i| {
            if i == 10 {
                "sticky".into()
            } else {
                format!("v{i}")
            }
        })
        .collect();
    let b = bootstrap.clone();
    blocking(move || kafka::produce(&b, "rr-in", values(inputs)).unwrap()).await;
    let make = || {
        let mut c = config_kip848("sticky", &bootstrap, "rr-in");
        c.runtime.max_attempts = None;
        c
    };
    let a = start(
        make(),
        StickyRetry {
            output: "rr-out".into(),
            retry: true,
        },
    );
    let sa = a.stats.clone();
    wait_for(
        "A to reach the sticky message",
        Duration::from_secs(60),
        || sa.snapshot().retries >= 3,
    )
    .await;
    let b_run = start(
        make(),
        StickyRetry {
            output: "rr-out".into(),
            retry: false,
        },
    );
    // A leaves while retrying: its retry wait is cut short, the message stays uncommitted.
    let left = tokio::time::timeout(Duration::from_secs(30), a.stop())
        .await
        .expect("a retrying member leaves within its drain");
    assert_eq!(
        left.processed(),
        10,
        "A finished exactly the messages before the sticky one"
    );
    let b2 = bootstrap.clone();
    wait_for_blocking(
        "B to take over and commit everything",
        Duration::from_secs(60),
        move || fully_committed(&b2, "sticky-consumer-group", "rr-in"),
    )
    .await;
    b_run.stop().await;
    let b = bootstrap.clone();
    let duplicates = blocking(move || assert_nothing_lost(&b, "rr-in", "rr-out")).await;
    assert_eq!(duplicates, 0, "the revoked retry was processed once, by B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_that_fails_for_good_stops_the_kernel_with_an_error() {
    let (broker, bootstrap) = mock_with_sequence(&[("pf-in", 2)], 100).await;
    // The idempotent producer cannot get a producer id: librdkafka makes that fatal, reported
    // with its underlying code. (A fenced static consumer would be the consumer's twin, but
    // the mock answers a duplicate group.instance.id with UNKNOWN_MEMBER_ID, which is not.)
    broker.cluster().request_errors(
        RDKafkaApiKey::InitProducerId,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED],
    );
    let runtime = Runtime::new(
        config("copy", &bootstrap, "pf-in"),
        SlowCopy {
            output: "pf-out".into(),
            delay: Duration::ZERO,
        },
    );
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        runtime.run_until(std::future::pending()),
    )
    .await
    .expect("the kernel stops by itself, not idle");
    match result {
        Err(RuntimeError::Fatal(reason)) => {
            assert!(reason.contains("producer failed for good"), "{reason}");
        }
        other => panic!("expected a fatal error, got {other:?}"),
    }
}

/// Records every value it sees; the first `block` holds its worker's thread (not just its
/// future: an abort cannot end it) until `release` is set.
#[derive(Clone, Default)]
struct BlockOnce {
    seen: Arc<Mutex<Vec<String>>>,
    entered: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
}

impl BlockOnce {
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Kernel for BlockOnce {
    fn name(&self) -> &str {
        "blockonce"
    }
    fn default_topics(&self) -> Vec<String> {
        vec![]
    }
    async fn process(&self, msg: &Message, _ctx: &mut Context) -> Result<Outcome, KernelError> {
        let text = msg.text()?.to_owned();
        self.seen.lock().unwrap().push(text.clone());
        if text == "block" && !self.entered.swap(true, Ordering::SeqCst) {
            while !self.release.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(Outcome::Ack)
    }
}

/// Item 3 of the hardening issue. librdkafka keeps one fetch queue per partition and the
/// wake-up callback on it; every handle to that queue clears the callback when dropped. A
/// worker stuck past the drain timeout across a quick reassignment used to drop its handle
/// after the new worker had set its callback, and the partition then stalled for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_stuck_across_a_reassignment_does_not_silence_its_successor() {
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic("qr-in", 1).unwrap();
    broker.create_topic("qr-other", 1).unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    let b = bootstrap.clone();
    blocking(move || kafka::produce(&b, "qr-in", values(vec!["block".into()])).unwrap()).await;
    // The classic protocol's default (eager) assignors revoke every partition at each
    // rebalance and hand them straight back: the quickest reassignment there is.
    let mut c = config("blockonce", &bootstrap, "qr-in");
    c.runtime.drain_timeout = Duration::from_millis(300);
    let kernel = BlockOnce::default();
    let a = start(c, kernel.clone());
    wait_for("the kernel to block", Duration::from_secs(60), || {
        kernel.entered.load(Ordering::SeqCst)
    })
    .await;

    // A second member subscribed to another topic makes the group rebalance; the first
    // member keeps qr-in.
    let leave = Arc::new(AtomicBool::new(false));
    let other = {
        let (bootstrap, leave) = (bootstrap.clone(), leave.clone());
        std::thread::spawn(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("group.id", "blockonce-consumer-group")
                .set("session.timeout.ms", "6000")
                .set("heartbeat.interval.ms", "500")
                .create()
                .unwrap();
            consumer.subscribe(&["qr-other"]).unwrap();
            while !leave.load(Ordering::SeqCst) {
                let _ = consumer.poll(Duration::from_millis(50));
            }
        })
    };
    wait_for(
        "the new worker to take the uncommitted message again",
        Duration::from_secs(60),
        || kernel.seen().iter().filter(|v| *v == "block").count() == 2,
    )
    .await;
    // The stuck worker ends now, after its successor armed its wake-up.
    kernel.release.store(true, Ordering::SeqCst);
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let value = format!("w{i}");
        let (b, v) = (bootstrap.clone(), value.clone());
        blocking(move || kafka::produce(&b, "qr-in", values(vec![v])).unwrap()).await;
        wait_for(
            &format!("{value} to be processed (a lost wake-up stalls it for good)"),
            Duration::from_secs(30),
            || kernel.seen().contains(&value),
        )
        .await;
    }
    leave.store(true, Ordering::SeqCst);
    other.join().unwrap();
    a.stop().await;
    // "block" is processed twice (the stuck worker, then its successor) and once more when a
    // second eager rebalance comes before its commit, which the mock refuses during a
    // rebalance (RELIABILITY.md); the messages after it must each come once, in order.
    let seen = kernel.seen();
    let blocks = seen.iter().take_while(|v| *v == "block").count();
    assert!(blocks >= 2, "{seen:?}");
    assert_eq!(
        &seen[blocks..],
        ["w0", "w1", "w2", "w3", "w4"],
        "each message once after the blocked one, in order"
    );
}
