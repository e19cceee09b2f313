//! Concurrent processing within a partition (`CLUSTERA_ORDERING=key` and `none`): per-key
//! order under retries and dead letters, a retry holding back only its key, SIGKILL with
//! gaps in the offset map, a rebalance mid-run, and the refusal of batches. Exact counts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clustera::config::ProcessingOrder;
use clustera::testing::{kafka, MockBroker};
use clustera::{Context, Kernel, KernelError, Message, Outcome, Record, Runtime, RuntimeError};

use common::*;

/// `per_key` values for each of `keys` keys, interleaved: key `key-<k>`, value the per-key
/// sequence number.
fn keyed_inputs(keys: usize, per_key: usize) -> Vec<kafka::ProducedRecord> {
    (0..per_key)
        .flat_map(|n| {
            (0..keys).map(move |k| {
                (
                    Some(format!("key-{k}").into_bytes()),
                    n.to_string().into_bytes(),
                    Vec::new(),
                )
            })
        })
        .collect()
}

async fn mock_with_keys(
    topic: &str,
    partitions: i32,
    keys: usize,
    per_key: usize,
) -> (MockBroker, String) {
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic(topic, partitions).unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    let (b, t) = (bootstrap.clone(), topic.to_owned());
    blocking(move || kafka::produce(&b, &t, keyed_inputs(keys, per_key)).unwrap()).await;
    (broker, bootstrap)
}

/// Copies inputs after a short, varying wait. Sequence numbers ending in 3 fail twice
/// (transient), 49 of every 50 is invalid (permanent); `stuck` retries while the gate is shut.
#[derive(Clone, Default)]
struct Flaky {
    output: String,
    stuck: Option<String>,
    gate: Arc<AtomicBool>,
    running: Arc<AtomicUsize>,
    most_running: Arc<AtomicUsize>,
    processed: Arc<AtomicUsize>,
}

impl Kernel for Flaky {
    fn name(&self) -> &str {
        "flaky"
    }
    fn default_topics(&self) -> Vec<String> {
        vec![]
    }
    async fn process(&self, msg: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(now, Ordering::SeqCst);
        let n: u64 = msg.text()?.parse().map_err(KernelError::permanent)?;
        tokio::time::sleep(Duration::from_micros(n % 4 * 700)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        let key = String::from_utf8_lossy(msg.key().unwrap_or_default()).into_owned();
        if self.stuck.as_deref() == Some(key.as_str()) && !self.gate.load(Ordering::SeqCst) {
            return Ok(Outcome::retry_after(Duration::from_millis(20)));
        }
        if self.stuck.is_none() {
            if n % 10 == 3 && ctx.attempt() <= 2 {
                return Err(KernelError::transient("try again"));
            }
            if n % 50 == 49 {
                return Err(KernelError::permanent("invalid"));
            }
        }
        self.processed.fetch_add(1, Ordering::SeqCst);
        ctx.send(
            Record::to(&self.output)
                .maybe_key(msg.key_bytes())
                .value(n.to_string()),
        );
        Ok(Outcome::Ack)
    }
}

fn keyed_config(bootstrap: &str, topic: &str, ordering: ProcessingOrder) -> clustera::Config {
    let mut c = config_kip848("flaky", bootstrap, topic);
    c.runtime.ordering = ordering;
    c.runtime.max_in_flight = 64;
    c.runtime.max_attempts = None;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn key_ordering_keeps_each_keys_order_under_retries_and_dead_letters() {
    let (keys, per_key) = (20, 100);
    let (_broker, bootstrap) = mock_with_keys("ko-in", 1, keys, per_key).await;
    let kernel = Flaky {
        output: "ko-out".into(),
        ..Flaky::default()
    };
    let run = start(
        keyed_config(&bootstrap, "ko-in", ProcessingOrder::Key),
        kernel.clone(),
    );
    let b = bootstrap.clone();
    wait_for_blocking(
        "every input committed",
        Duration::from_secs(120),
        move || fully_committed(&b, "flaky-consumer-group", "ko-in"),
    )
    .await;
    let stats = run.stop().await;
    let outputs = blocking({
        let b = bootstrap.clone();
        move || kafka::read_topic(&b, "ko-out").unwrap()
    })
    .await;
    let seen = FirstAppearances::of(&outputs);
    // Per key, 2 of every 100 sequence numbers (49 and 99) are invalid.
    assert_eq!(seen.distinct(), keys * (per_key - 2));
    assert_eq!(seen.duplicates, 0);
    assert_eq!(
        seen.reordered_keys(),
        0,
        "every key's outputs in input order"
    );
    assert_eq!(stats.dead_lettered, (keys * 2) as u64);
    let letters = blocking({
        let b = bootstrap.clone();
        move || kafka::read_topic(&b, "ko-in.dlq").unwrap()
    })
    .await;
    assert_eq!(letters.len(), keys * 2);
    assert!(
        kernel.most_running.load(Ordering::SeqCst) > 1,
        "messages of different keys ran concurrently"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_holds_back_only_its_own_key() {
    let (keys, per_key) = (10, 20);
    let (_broker, bootstrap) = mock_with_keys("kr-in", 1, keys, per_key).await;
    let kernel = Flaky {
        output: "kr-out".into(),
        stuck: Some("key-0".into()),
        ..Flaky::default()
    };
    let run = start(
        keyed_config(&bootstrap, "kr-in", ProcessingOrder::Key),
        kernel.clone(),
    );
    let others = (keys - 1) * per_key;
    wait_for(
        "every other key's messages",
        Duration::from_secs(60),
        || kernel.processed.load(Ordering::SeqCst) == others,
    )
    .await;
    assert_eq!(
        committed_offset(&bootstrap, "kr-in").await.unwrap_or(0),
        0,
        "the commit waits at key-0's first message"
    );
    kernel.gate.store(true, Ordering::SeqCst);
    let b = bootstrap.clone();
    wait_for_blocking(
        "every input committed",
        Duration::from_secs(60),
        move || fully_committed(&b, "flaky-consumer-group", "kr-in"),
    )
    .await;
    run.stop().await;
    let outputs = blocking({
        let b = bootstrap.clone();
        move || kafka::read_topic(&b, "kr-out").unwrap()
    })
    .await;
    let seen = FirstAppearances::of(&outputs);
    assert_eq!((seen.distinct(), seen.duplicates), (keys * per_key, 0));
    assert_eq!(seen.reordered_keys(), 0);
}

async fn committed_offset(bootstrap: &str, topic: &str) -> Option<i64> {
    let (b, t) = (bootstrap.to_owned(), topic.to_owned());
    blocking(move || {
        kafka::committed_offsets(&b, "flaky-consumer-group", &t)
            .unwrap()
            .get(&0)
            .copied()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unordered_processing_loses_nothing() {
    let (_broker, bootstrap) = mock_with_keys("kn-in", 2, 5, 60).await;
    let kernel = Flaky {
        output: "kn-out".into(),
        ..Flaky::default()
    };
    let run = start(
        keyed_config(&bootstrap, "kn-in", ProcessingOrder::Unordered),
        kernel.clone(),
    );
    let b = bootstrap.clone();
    wait_for_blocking(
        "every input committed",
        Duration::from_secs(60),
        move || fully_committed(&b, "flaky-consumer-group", "kn-in"),
    )
    .await;
    let stats = run.stop().await;
    let outputs = blocking({
        let b = bootstrap.clone();
        move || kafka::read_topic(&b, "kn-out").unwrap()
    })
    .await;
    let seen = FirstAppearances::of(&outputs);
    // Per key, 60 sequence numbers of which one (49) is invalid.
    assert_eq!((seen.distinct(), seen.duplicates), (5 * 59, 0));
    assert_eq!(stats.dead_lettered, 5);
}

/// Copies key and value once the gate is open.
#[derive(Clone, Default)]
struct GatedKeyedCopy {
    gate: Arc<AtomicBool>,
    running: Arc<AtomicUsize>,
}

impl Kernel for GatedKeyedCopy {
    fn name(&self) -> &str {
        "keyed"
    }
    fn default_topics(&self) -> Vec<String> {
        vec![]
    }
    async fn process(&self, msg: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        self.running.fetch_add(1, Ordering::SeqCst);
        while !self.gate.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        let record = Record::to("kb-out").maybe_key(msg.key_bytes());
        ctx.send(record.value(msg.value_bytes().unwrap_or_default()));
        Ok(Outcome::Ack)
    }
}

/// The rebalance lands while the first member has messages of many keys in process (held in
/// the kernel past the drain timeout), so its revoked partitions are handed over with gaps
/// in their offset maps.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebalance_during_concurrent_processing_loses_nothing_and_keeps_key_order() {
    let (keys, per_key) = (40, 100);
    let (_broker, bootstrap) = mock_with_keys("kb-in", 4, keys, per_key).await;
    let kernel = GatedKeyedCopy::default();
    let config = || {
        let mut c = config_kip848("keyed", &bootstrap, "kb-in");
        c.runtime.ordering = ProcessingOrder::Key;
        c.runtime.drain_timeout = Duration::from_millis(500);
        c
    };
    let a = start(config(), kernel.clone());
    wait_for(
        "A to hold a message of every key",
        Duration::from_secs(60),
        || kernel.running.load(Ordering::SeqCst) == keys,
    )
    .await;
    let b = start(config(), kernel.clone());
    let sb = b.stats.clone();
    wait_for("B to take partitions", Duration::from_secs(60), || {
        sb.snapshot().partitions_assigned >= 1
    })
    .await;
    kernel.gate.store(true, Ordering::SeqCst);
    let bs = bootstrap.clone();
    wait_for_blocking(
        "every input committed",
        Duration::from_secs(120),
        move || fully_committed(&bs, "keyed-consumer-group", "kb-in"),
    )
    .await;
    a.stop().await;
    b.stop().await;
    let outputs = blocking({
        let b = bootstrap.clone();
        move || kafka::read_topic(&b, "kb-out").unwrap()
    })
    .await;
    let seen = FirstAppearances::of(&outputs);
    assert_eq!(seen.distinct(), keys * per_key, "nothing lost");
    assert_eq!(
        seen.reordered_keys(),
        0,
        "every key's first appearances in input order"
    );
}

/// A kernel asking for batches.
struct Batching;

impl Kernel for Batching {
    fn name(&self) -> &str {
        "batching"
    }
    fn default_topics(&self) -> Vec<String> {
        vec![]
    }
    fn max_batch(&self) -> usize {
        100
    }
    async fn process(&self, _: &Message, _: &mut Context) -> Result<Outcome, KernelError> {
        Ok(Outcome::Ack)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_ordering_with_batches_is_refused_at_start() {
    let broker = MockBroker::start(1).unwrap();
    broker.create_topic("kx-in", 1).unwrap();
    let mut c = config_kip848("batching", broker.bootstrap(), "kx-in");
    c.runtime.ordering = ProcessingOrder::Key;
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        Runtime::new(c, Batching).run_until(std::future::pending()),
    )
    .await
    .expect("refused at once, not run");
    match result {
        Err(RuntimeError::Config(e)) => {
            let text = e.to_string();
            assert!(text.contains("CLUSTERA_ORDERING"), "{text}");
            assert!(text.contains("CLUSTERA_BATCH_SIZE=1"), "{text}");
        }
        other => panic!("expected a configuration error, got {other:?}"),
    }
}
