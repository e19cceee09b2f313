//! The runtime's core guarantees on librdkafka's mock cluster: ordering, retries, dead letters,
//! outputs acknowledged before commits, and final commits equal to the high watermarks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use clustera::dead_letter_headers as dlq;
use clustera::testing::kafka;
use clustera::{Context, Kernel, KernelError, Message, Outcome, Record};
use serde_json::json;

use common::*;

/// Acks most messages with one output; retries every 100th once; dead-letters every 200th.
struct Scripted {
    output: String,
    /// Per partition, the offsets whose outcome was final, in processing order.
    seen: Mutex<HashMap<i32, Vec<i64>>>,
}

#[derive(serde::Deserialize)]
struct Seq {
    seq: u64,
}

impl Kernel for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn default_topics(&self) -> Vec<String> {
        vec![]
    }
    async fn process(&self, msg: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        let Seq { seq } = msg.json()?;
        let outcome = if seq % 200 == 0 {
            Outcome::dead_letter(format!("seq {seq} is unlucky"))
        } else if seq % 100 == 1 && ctx.attempt() == 1 {
            return Ok(Outcome::retry());
        } else {
            ctx.send(
                Record::to(&self.output)
                    .maybe_key(msg.key_bytes())
                    .json(&json!({"seq": seq, "attempt": ctx.attempt()}))
                    .unwrap(),
            );
            Outcome::Ack
        };
        self.seen
            .lock()
            .unwrap()
            .entry(msg.partition())
            .or_default()
            .push(msg.offset());
        Ok(outcome)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_messages_with_retries_and_dead_letters() {
    const N: usize = 10_000;
    let (_broker, bootstrap) = mock_with_sequence(&[("in", 4), ("out", 4), ("in.dlq", 1)], N).await;

    let kernel = Scripted {
        output: "out".into(),
        seen: Mutex::new(HashMap::new()),
    };
    let config = config("scripted", &bootstrap, "in");
    let group = config.group_id.clone();
    let summary = run_to_completion(config, kernel, &bootstrap, "in", N).await;

    let expected_dead = N.div_ceil(200);
    assert_eq!(summary.processed(), N as u64, "{summary:?}");
    assert_eq!(summary.dead_lettered, expected_dead as u64);
    assert_eq!(summary.acked, (N - expected_dead) as u64);
    assert_eq!(
        summary.retries,
        (N / 100) as u64,
        "every 100th retried exactly once"
    );

    let b = bootstrap.clone();
    let (inputs, outputs, dead, committed, high) = blocking(move || {
        (
            input_positions(&b, "in"),
            kafka::read_topic(&b, "out").unwrap(),
            kafka::read_topic(&b, "in.dlq").unwrap(),
            kafka::committed_offsets(&b, &group, "in").unwrap(),
            kafka::high_watermarks(&b, "in").unwrap(),
        )
    })
    .await;
    assert_eq!(inputs.len(), N);
    assert_eq!(
        committed, high,
        "final committed offsets equal the high watermarks"
    );

    // Outputs equal acks: one per acked input, none for dead letters, none from failed attempts.
    assert_eq!(outputs.len(), N - expected_dead);
    let mut seqs = output_seqs(&outputs);
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), N - expected_dead, "no duplicate outputs");
    assert!(seqs.iter().all(|s| s % 200 != 0));

    // Every dead letter carries the original and its provenance.
    assert_eq!(dead.len(), expected_dead);
    for d in &dead {
        let p: i32 = d.header(dlq::ORIGINAL_PARTITION).unwrap().parse().unwrap();
        let o: i64 = d.header(dlq::ORIGINAL_OFFSET).unwrap().parse().unwrap();
        let key = inputs
            .get(&(p, o))
            .expect("dead letter points at a real input");
        assert_eq!(d.key.as_deref(), Some(key.as_slice()));
        let seq: u64 = serde_json::from_slice::<serde_json::Value>(d.value.as_deref().unwrap())
            .unwrap()["seq"]
            .as_u64()
            .unwrap();
        assert_eq!(seq % 200, 0);
        assert_eq!(d.header(dlq::ORIGINAL_TOPIC).as_deref(), Some("in"));
        assert_eq!(
            d.header(dlq::CONSUMER_GROUP).as_deref(),
            Some("scripted-consumer-group")
        );
        assert_eq!(d.header(dlq::KERNEL).as_deref(), Some("scripted"));
        assert_eq!(d.header(dlq::ATTEMPTS).as_deref(), Some("1"));
        assert!(d.header(dlq::ERROR).unwrap().contains("unlucky"));
        assert!(
            d.header(dlq::ORIGINAL_TIMESTAMP)
                .unwrap()
                .parse::<i64>()
                .unwrap()
                > 0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_are_processed_in_order() {
    const N: usize = 1_000;
    let (_broker, bootstrap) = mock_with_sequence(&[("ordered", 4)], N).await;
    let kernel = std::sync::Arc::new(Scripted {
        output: "ordered-out".into(),
        seen: Mutex::new(HashMap::new()),
    });
    struct Shared(std::sync::Arc<Scripted>);
    impl Kernel for Shared {
        fn name(&self) -> &str {
            "ordered"
        }
        fn default_topics(&self) -> Vec<String> {
            vec![]
        }
        async fn process(&self, m: &Message, c: &mut Context) -> Result<Outcome, KernelError> {
            self.0.process(m, c).await
        }
    }
    let mut cfg = config("ordered", &bootstrap, "ordered");
    // A tiny prefetch makes librdkafka's backpressure act all the time.
    for (k, v) in [
        ("queued.min.messages", "5"),
        ("queued.max.messages.kbytes", "1"),
    ] {
        cfg.properties
            .insert(k.into(), clustera::config::Secret::new(v));
    }
    let running = start(cfg, Shared(kernel.clone()));
    let stats = running.stats.clone();
    wait_for("all processed", Duration::from_secs(120), || {
        stats.snapshot().processed() >= N as u64
    })
    .await;
    running.stop().await;
    let seen = kernel.seen.lock().unwrap().clone();
    let b = bootstrap.clone();
    let inputs = blocking(move || input_positions(&b, "ordered")).await;
    let mut expected: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o) in inputs.keys() {
        expected.entry(*p).or_default().push(*o);
    }
    for (p, offsets) in expected {
        assert_eq!(
            seen.get(&p),
            Some(&offsets),
            "partition {p}: every offset once, in order"
        );
    }
}
