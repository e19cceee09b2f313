//! `Kernel::process_batch`: batches form from what is fetched, final outcomes are taken in
//! order, and whatever a batch leaves undecided (a retry, a transient error, a panic) goes
//! through the one-message path, so every message still ends exactly once, in order.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use clustera::testing::kafka;
use clustera::{Context, Kernel, KernelError, Message, Outcome, Record};
use serde_json::json;

use common::*;

#[derive(Default)]
struct Batching {
    /// Sizes of the batches the runtime handed over.
    batches: Mutex<Vec<usize>>,
    /// Per partition, offsets in the order their outcome became final.
    finals: Mutex<HashMap<i32, Vec<i64>>>,
    panicked: AtomicBool,
}

fn seq(msg: &Message) -> u64 {
    msg.json::<serde_json::Value>().unwrap()["seq"]
        .as_u64()
        .unwrap()
}

impl Batching {
    fn finalize(&self, msg: &Message, ctx: &mut Context, path: &str) -> Outcome {
        self.finals
            .lock()
            .unwrap()
            .entry(msg.partition())
            .or_default()
            .push(msg.offset());
        let seq = seq(msg);
        if seq.is_multiple_of(97) {
            return Outcome::dead_letter(format!("seq {seq} is unlucky"));
        }
        ctx.send(
            Record::to("batched-out")
                .maybe_key(msg.key_bytes())
                .json(&json!({"seq": seq, "path": path}))
                .unwrap(),
        );
        Outcome::Ack
    }
}

impl Kernel for Batching {
    fn name(&self) -> &str {
        "batching"
    }
    fn default_topics(&self) -> Vec<String> {
        vec![]
    }
    fn max_batch(&self) -> usize {
        64
    }
    async fn process(&self, msg: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        Ok(self.finalize(msg, ctx, "one"))
    }
    async fn process_batch(
        &self,
        messages: &[Message],
        contexts: &mut [Context],
    ) -> Vec<Result<Outcome, KernelError>> {
        self.batches.lock().unwrap().push(messages.len());
        if messages.iter().any(|m| seq(m) == 1234) && !self.panicked.swap(true, Ordering::SeqCst) {
            panic!("the batch containing seq 1234 panics once");
        }
        let mut results = Vec::new();
        for (msg, ctx) in messages.iter().zip(contexts.iter_mut()) {
            let seq = seq(msg);
            if seq % 50 == 7 {
                // Everything from here on is left to the one-message path.
                results.push(Ok(Outcome::retry()));
                return results;
            }
            if seq % 77 == 3 {
                results.push(Err(KernelError::transient(std::io::Error::other("flaky"))));
                return results;
            }
            results.push(Ok(self.finalize(msg, ctx, "batch")));
        }
        results
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_end_every_message_once_and_in_order() {
    const N: usize = 5_000;
    let (_broker, bootstrap) =
        mock_with_sequence(&[("batched", 3), ("batched-out", 3), ("batched.dlq", 1)], N).await;
    let kernel = std::sync::Arc::new(Batching::default());
    struct Shared(std::sync::Arc<Batching>);
    impl Kernel for Shared {
        fn name(&self) -> &str {
            "batching"
        }
        fn default_topics(&self) -> Vec<String> {
            vec![]
        }
        fn max_batch(&self) -> usize {
            self.0.max_batch()
        }
        async fn process(&self, m: &Message, c: &mut Context) -> Result<Outcome, KernelError> {
            self.0.process(m, c).await
        }
        async fn process_batch(
            &self,
            m: &[Message],
            c: &mut [Context],
        ) -> Vec<Result<Outcome, KernelError>> {
            self.0.process_batch(m, c).await
        }
    }
    let config = config("batching", &bootstrap, "batched");
    let summary = run_to_completion(config, Shared(kernel.clone()), &bootstrap, "batched", N).await;
    let dead = (0..N as u64).filter(|s| s % 97 == 0).count();
    assert_eq!(summary.processed(), N as u64, "{summary:?}");
    assert_eq!(summary.dead_lettered, dead as u64);

    let batches = kernel.batches.lock().unwrap().clone();
    assert!(
        batches.iter().any(|&n| n > 1),
        "fetched messages were batched: {batches:?}"
    );
    assert!(batches.iter().all(|&n| (1..=64).contains(&n)));
    assert!(kernel.panicked.load(Ordering::SeqCst), "the panic happened");

    // Final outcomes: each offset exactly once, in offset order, per partition.
    let b = bootstrap.clone();
    let inputs = blocking(move || input_positions(&b, "batched")).await;
    let finals = kernel.finals.lock().unwrap().clone();
    for (partition, offsets) in &finals {
        let expected: Vec<i64> = inputs
            .keys()
            .filter(|(p, _)| p == partition)
            .map(|(_, o)| *o)
            .collect();
        let first_difference = offsets.iter().zip(&expected).position(|(a, b)| a != b);
        assert!(
            first_difference.is_none() && offsets.len() == expected.len(),
            "partition {partition}: {} finals for {} inputs, first out of order at index {first_difference:?}",
            offsets.len(),
            expected.len()
        );
    }
    assert_eq!(finals.values().map(Vec::len).sum::<usize>(), N);

    // Outputs: one per acked message, none from batch attempts that were not accepted.
    let b = bootstrap.clone();
    let outputs = blocking(move || kafka::read_topic(&b, "batched-out").unwrap()).await;
    let mut seqs = output_seqs(&outputs);
    assert_eq!(seqs.len(), N - dead);
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), N - dead, "no duplicate outputs");
    let one_by_one = outputs
        .iter()
        .filter(|o| {
            o.value
                .as_deref()
                .unwrap()
                .windows(5)
                .any(|w| w == b"\"one\"")
        })
        .count();
    assert!(
        one_by_one > 0,
        "retries and transient errors went one by one"
    );
}
