//! `clustera bench-ordering` (P3): the transform example with simulated I/O
//! (`TRANSFORM_DELAY_MS`, an async sleep) on one partition of messages over many keys, with
//! `CLUSTERA_ORDERING=partition` (one at a time) and `key` (keys concurrently), side by side
//! in one run; then a check that every key's outputs kept their input order.
//!
//! One message at a time takes `delay` per message, so the partition side reads only a
//! prefix of the topic (`--partition-messages`): its rate would not change with more, and the
//! whole topic would take minutes. Both rates run from the process's start to the group's
//! commits reaching their target, so start-up is charged to both (more heavily to the faster
//! key side).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::Args;
use clustera::testing::{kafka, MockBroker};

use crate::bench_kernel::{spawn, stop, transform_bin, transform_command, wait_committed};

/// Arguments of `clustera bench-ordering`.
#[derive(Args)]
pub struct BenchOrderingArgs {
    /// Messages in the input topic (one partition).
    #[arg(long, default_value_t = 40_000)]
    messages: usize,
    /// Distinct keys, spread round-robin over the messages.
    #[arg(long, default_value_t = 1_000)]
    keys: usize,
    /// Simulated I/O per message, in milliseconds (`TRANSFORM_DELAY_MS`).
    #[arg(long, default_value_t = 5)]
    delay_ms: u64,
    /// Messages the one-at-a-time side reads before its rate is taken.
    #[arg(long, default_value_t = 2_000)]
    partition_messages: usize,
    /// `CLUSTERA_MAX_IN_FLIGHT` for the key side.
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
}

/// Runs both sides and prints their rates, the ratio, and the order check.
pub async fn run(args: BenchOrderingArgs) -> anyhow::Result<()> {
    let transform = transform_bin()?;
    let broker = MockBroker::start(1).context("starting the mock cluster")?;
    let bootstrap = broker.bootstrap().to_owned();
    broker.create_topic("order-in", 1)?;
    for side in ["partition", "key"] {
        broker.create_topic(&format!("order-out-{side}"), 1)?;
    }
    let (b, n, keys) = (bootstrap.clone(), args.messages, args.keys);
    tokio::task::spawn_blocking(move || {
        kafka::produce(
            &b,
            "order-in",
            (0..n).map(|i| {
                (
                    Some(format!("key-{}", i % keys).into_bytes()),
                    format!(r#"{{"seq":{i}}}"#).into_bytes(),
                    Vec::new(),
                )
            }),
        )
    })
    .await??;
    println!(
        "transform example, {} ms of simulated I/O per message, {} messages over {} keys on one \
         partition:",
        args.delay_ms, args.messages, args.keys
    );
    let mut rates = Vec::new();
    for (side, target) in [
        ("partition", Some(args.partition_messages as i64)),
        ("key", None),
    ] {
        let started = Instant::now();
        let group = format!("order-{side}");
        let mut command = transform_command(
            &transform,
            &bootstrap,
            "order-in",
            &format!("order-out-{side}"),
            &group,
        );
        command
            .env("TRANSFORM_DELAY_MS", args.delay_ms.to_string())
            .env("CLUSTERA_ORDERING", side)
            .env("CLUSTERA_MAX_IN_FLIGHT", args.max_in_flight.to_string());
        let mut child = spawn(&mut command, &transform)?;
        let done = wait_committed(&mut child, &bootstrap, &group, "order-in", target).await;
        let elapsed = started.elapsed();
        stop(child).await;
        done?;
        let (b, g) = (bootstrap.clone(), group.clone());
        let committed: i64 = tokio::task::spawn_blocking(move || {
            kafka::committed_offsets(&b, &g, "order-in").map(|c| c.values().sum())
        })
        .await??;
        let rate = committed as f64 / elapsed.as_secs_f64();
        println!(
            "  {side:>9}: {committed} messages in {:.2} s: {rate:.0} messages/s",
            elapsed.as_secs_f64()
        );
        rates.push(rate);
        let b = bootstrap.clone();
        let out = format!("order-out-{side}");
        let reordered = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
            Ok(reordered_keys(&kafka::read_topic(&b, &out)?))
        })
        .await??;
        if reordered > 0 {
            bail!("{side}: {reordered} keys' outputs left their input order");
        }
        println!("             every key's outputs in input order");
    }
    println!(
        "  key / partition: {:.0}x (target ≥ 100x)",
        rates[1] / rates[0]
    );
    Ok(())
}

/// Keys whose outputs, in the order they were written (first appearance of each input),
/// name their inputs out of order.
fn reordered_keys(outputs: &[kafka::Consumed]) -> usize {
    let mut per_key: BTreeMap<Vec<u8>, Vec<i64>> = BTreeMap::new();
    let mut seen = std::collections::HashSet::new();
    for o in outputs {
        let source = o
            .value
            .as_deref()
            .and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok())
            .and_then(|v| v["source"]["offset"].as_i64());
        if let (Some(key), Some(offset)) = (&o.key, source) {
            if seen.insert(offset) {
                per_key.entry(key.clone()).or_default().push(offset);
            }
        }
    }
    per_key
        .values()
        .filter(|o| o.windows(2).any(|w| w[0] > w[1]))
        .count()
}
