//! `CLUSTERA_GUARANTEE=exactly-once` on librdkafka's mock cluster: transactions committed
//! with retries, an abort that rewinds every partition to its last commit and dead-letters the
//! input whose output was refused, a producer fenced by a newer instance, and the refusals.
//!
//! The mock cluster implements the transactional protocol (producer ids, epochs and fencing,
//! AddPartitionsToTxn, TxnOffsetCommit, EndTxn) but not its effects on the log: it writes no
//! commit or abort markers, reports no aborted transactions to `read_committed` fetches, and
//! does not store transactional offset commits. So these tests check what the runtime does
//! (what it commits, aborts, rewinds and redoes) within one process; see RELIABILITY.md for
//! what no broker on this machine can show.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clustera::config::{Guarantee, ProcessingOrder};
use clustera::testing::kafka;
use clustera::{Context, Kernel, KernelError, Message, Outcome, Record, Runtime, RuntimeError};

use common::*;

/// Processing calls per input (partition, offset).
type Calls = Arc<Mutex<HashMap<(i32, i64), u32>>>;

/// Copies each input (`{"seq": n}`) to `output`. Inputs whose `seq` is listed in `flaky` fail
/// transiently on their first attempt; the one equal to `oversized` gets an output larger than
/// any broker accepts.
#[derive(Clone, Default)]
struct Copier {
    output: String,
    flaky_every: Option<u64>,
    oversized: Option<u64>,
    calls: Calls,
}

impl Kernel for Copier {
    fn name(&self) -> &str {
        "copier"
    }
    fn default_topics(&self) -> Vec<String> {
        vec![]
    }

    async fn process(&self, m: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        *self
            .calls
            .lock()
            .unwrap()
            .entry((m.partition(), m.offset()))
            .or_default() += 1;
        let seq = m.json::<serde_json::Value>()?["seq"].as_u64().unwrap();
        if self.flaky_every.is_some_and(|n| seq % n == 5) && ctx.attempt() == 1 {
            return Err(KernelError::transient("first attempts of these fail"));
        }
        let value = if self.oversized == Some(seq) {
            vec![b'x'; 2_000_000]
        } else {
            m.value().unwrap_or_default().to_vec()
        };
        let key = m.key().unwrap_or_default().to_vec();
        ctx.send(Record::to(&self.output).key(key).value(value));
        Ok(Outcome::Ack)
    }
}

fn exactly_once(name: &str, bootstrap: &str, topic: &str, id: &str) -> clustera::Config {
    let mut c = config_kip848(name, bootstrap, topic);
    c.runtime.guarantee = Guarantee::ExactlyOnce;
    c.runtime.transactional_id = Some(id.to_owned());
    c.runtime.commit_interval = Duration::from_millis(100);
    c
}

/// Outputs per `seq`.
fn seq_counts(outputs: &[kafka::Consumed]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for s in output_seqs(outputs) {
        *counts.entry(s).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_commit_without_an_abort_and_every_output_is_written_once() {
    const COUNT: usize = 3_000;
    let (_broker, bootstrap) = mock_with_sequence(&[("eo-in", 3), ("eo-out", 3)], COUNT).await;
    let kernel = Copier {
        output: "eo-out".into(),
        flaky_every: Some(97),
        ..Copier::default()
    };
    let calls = kernel.calls.clone();
    let running = start(
        exactly_once("eo-retry", &bootstrap, "eo-in", "eo-retry-1"),
        kernel,
    );
    let stats = running.stats.clone();
    wait_for("every input processed", Duration::from_secs(120), || {
        stats.snapshot().processed() >= COUNT as u64
    })
    .await;
    let s = running.stop().await;
    let outputs = blocking(move || kafka::read_topic(&bootstrap, "eo-out").unwrap()).await;
    let counts = seq_counts(&outputs);
    let flaky = (0..COUNT as u64).filter(|n| n % 97 == 5).count();
    assert_eq!(s.aborts, 0, "a retry never reaches the transaction: {s:?}");
    assert_eq!(s.retries, flaky as u64);
    assert_eq!(counts.len(), COUNT, "lost: {}", COUNT - counts.len());
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicated.is_empty(), "duplicated: {duplicated:?}");
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), COUNT);
    let twice = calls.values().filter(|n| **n == 2).count();
    assert_eq!(
        twice, flaky,
        "each flaky input is called twice, the rest once"
    );
    assert!(calls.values().all(|n| *n <= 2));
    assert!(s.commits >= 2, "committed in several transactions: {s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_output_aborts_rewinds_to_the_last_commit_and_dead_letters_its_input() {
    const COUNT: usize = 2_000;
    const REFUSED: u64 = 1_234;
    let (_broker, bootstrap) =
        mock_with_sequence(&[("ab-in", 2), ("ab-out", 2), ("ab-in.dlq", 1)], COUNT).await;
    let kernel = Copier {
        output: "ab-out".into(),
        oversized: Some(REFUSED),
        ..Copier::default()
    };
    let calls = kernel.calls.clone();
    let running = start(
        exactly_once("eo-abort", &bootstrap, "ab-in", "eo-abort-1"),
        kernel,
    );
    let stats = running.stats.clone();
    let b = bootstrap.clone();
    wait_for_blocking("the dead letter", Duration::from_secs(120), move || {
        kafka::read_topic(&b, "ab-in.dlq").unwrap().len() == 1
    })
    .await;
    let calls_total = || calls.lock().unwrap().len();
    wait_for("every input processed", Duration::from_secs(120), || {
        calls_total() == COUNT && stats.snapshot().processed() >= COUNT as u64
    })
    .await;
    let s = running.stop().await;
    assert_eq!(s.aborts, 1, "{s:?}");
    assert_eq!(s.outputs_refused, 1, "{s:?}");

    let letters = {
        let b = bootstrap.clone();
        blocking(move || kafka::read_topic(&b, "ab-in.dlq").unwrap()).await
    };
    assert_eq!(letters.len(), 1, "one dead letter");
    let reason = letters[0].header("clustera.error").unwrap_or_default();
    assert!(reason.contains("refused"), "{reason}");
    let letter_seq: serde_json::Value =
        serde_json::from_slice(letters[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(letter_seq["seq"], REFUSED);

    // The rewind went back to each partition's last commit: the inputs processed twice are,
    // in every partition, one unbroken run of offsets, and nothing was skipped.
    let calls = calls.lock().unwrap().clone();
    let refused_at = calls
        .keys()
        .copied()
        .find(|(p, o)| {
            letters[0].header("clustera.original.partition") == Some(p.to_string())
                && letters[0].header("clustera.original.offset") == Some(o.to_string())
        })
        .expect("the refused input was processed");
    assert_eq!(
        calls[&refused_at], 1,
        "dead-lettered the second time without calling the kernel"
    );
    let mut redone = 0;
    for partition in 0..2 {
        // The refused input counts as redone: the second time it was dead-lettered.
        let twice: Vec<i64> = calls
            .iter()
            .filter(|(at, n)| at.0 == partition && (**n == 2 || **at == refused_at))
            .map(|((_, o), _)| *o)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if let (Some(first), Some(last)) = (twice.first(), twice.last()) {
            assert_eq!(
                (last - first + 1) as usize,
                twice.len(),
                "partition {partition}: the redone inputs are contiguous"
            );
        }
        redone += twice.len();
    }
    redone -= 1;
    assert!(calls.values().all(|n| *n <= 2));
    assert!(
        redone >= 1,
        "the aborted transaction's inputs were processed again"
    );
    assert_eq!(calls.len(), COUNT, "every input processed");

    // Every input but the refused one has its output; the mock keeps the aborted
    // transaction's records visible, so each input appears at most as often as it was
    // processed (a real broker hides the aborted copies from read_committed consumers).
    let outputs = blocking(move || kafka::read_topic(&bootstrap, "ab-out").unwrap()).await;
    let counts = seq_counts(&outputs);
    assert_eq!(counts.len(), COUNT - 1, "every output but the refused one");
    assert!(!counts.contains_key(&REFUSED));
    let visible_twice = counts.values().filter(|n| **n == 2).count();
    assert!(visible_twice <= redone, "{visible_twice} > {redone}");
}

/// The mock cluster hands a second producer with the same `transactional.id` a new producer id
/// instead of bumping the epoch, so it never fences by itself; the broker's answer is injected.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_producer_fenced_by_the_broker_stops_the_kernel_and_commits_nothing_more() {
    use rdkafka::types::RDKafkaApiKey;
    use rdkafka::types::RDKafkaRespErr;
    const COUNT: usize = 400;
    let (broker, bootstrap) = mock_with_sequence(&[("fe-in", 2), ("fe-out", 2)], COUNT).await;
    let slow = SlowCopy {
        output: "fe-out".into(),
        delay: Duration::from_millis(20),
    };
    let runtime = Runtime::new(exactly_once("fe", &bootstrap, "fe-in", "fe-shared"), slow);
    let stats = runtime.stats();
    let running = tokio::spawn(runtime.run_until(std::future::pending::<()>()));
    wait_for("a first commit", Duration::from_secs(60), || {
        stats.snapshot().commits >= 1
    })
    .await;
    broker.cluster().request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    let ended = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("the fenced instance stops on its own")
        .unwrap();
    match ended {
        Err(RuntimeError::Fatal(reason)) => {
            assert!(reason.contains("fenced"), "{reason}");
        }
        other => panic!("expected a fatal fencing error, got {other:?}"),
    }
    let s = stats.snapshot();
    assert_eq!(s.aborts, 0, "a fenced producer cannot abort: {s:?}");
    assert!(s.processed() < COUNT as u64, "stopped mid-run: {s:?}");
}

/// Defers a task: not possible under exactly-once.
struct Deferring;

impl Kernel for Deferring {
    fn name(&self) -> &str {
        "deferring"
    }
    fn default_topics(&self) -> Vec<String> {
        vec![]
    }

    async fn process(&self, _m: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        ctx.defer(|_out| async { Ok(Outcome::Ack) });
        Ok(Outcome::Ack)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_task_under_exactly_once_stops_the_kernel_with_a_clear_error() {
    let (_broker, bootstrap) = mock_with_sequence(&[("de-in", 1)], 5).await;
    let runtime = Runtime::new(exactly_once("de", &bootstrap, "de-in", "de-1"), Deferring);
    let ended = tokio::time::timeout(
        Duration::from_secs(60),
        runtime.run_until(std::future::pending::<()>()),
    )
    .await
    .expect("stops on its own");
    match ended {
        Err(RuntimeError::Fatal(reason)) => {
            assert!(reason.contains("Context::defer"), "{reason}");
            assert!(reason.contains("exactly-once"), "{reason}");
        }
        other => panic!("expected a fatal error, got {other:?}"),
    }
}

#[test]
fn exactly_once_with_key_ordering_is_refused_at_start_up() {
    let e = clustera::testing::config_from_pairs(&[
        ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9"),
        ("CLUSTERA_GUARANTEE", "exactly-once"),
        ("CLUSTERA_ORDERING", "key"),
    ])
    .unwrap_err();
    assert_eq!(e.variable, "CLUSTERA_ORDERING");
    assert!(e.problem.contains("exactly-once"), "{e}");
    let ok = clustera::testing::config_from_pairs(&[
        ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9"),
        ("CLUSTERA_GUARANTEE", "exactly-once"),
    ])
    .unwrap();
    assert_eq!(ok.runtime.ordering, ProcessingOrder::Partition);
}
