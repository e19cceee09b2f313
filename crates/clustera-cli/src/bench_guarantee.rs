//! `clustera bench-guarantee`: the transform example with `CLUSTERA_GUARANTEE=at-least-once`
//! and `exactly-once`, alternately in one run, on librdkafka's mock cluster; prints each
//! round's rate and the ratio of the medians (exactly-once / at-least-once).
//!
//! A rate runs from the process's start to the output topic holding one record per input, so
//! start-up (and, under exactly-once, registering the transactional producer) is charged to
//! both. The mock cluster answers transactional requests without writing markers; a real
//! broker's commit adds a marker per partition and a round trip to the transaction
//! coordinator, so this ratio is an upper bound of what a real cluster gives.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use clustera::testing::{kafka, MockBroker};

use crate::bench::median;
use crate::bench_kernel::{spawn, stop, transform_bin, transform_command};

/// Arguments of `clustera bench-guarantee`.
#[derive(Args)]
pub struct BenchGuaranteeArgs {
    /// Messages in the input topic.
    #[arg(long, default_value_t = 100_000)]
    messages: usize,
    /// Partitions of the input and output topics.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Rounds of each side, alternating.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// `CLUSTERA_COMMIT_INTERVAL_MS` for both sides (under exactly-once, one transaction each).
    #[arg(long, default_value_t = 100)]
    commit_interval_ms: u64,
}

/// Runs both sides alternately and prints their rates and the ratio.
pub async fn run(args: BenchGuaranteeArgs) -> anyhow::Result<()> {
    let transform = transform_bin()?;
    let broker = MockBroker::start(1).context("starting the mock cluster")?;
    let bootstrap = broker.bootstrap().to_owned();
    broker.create_topic("guarantee-in", args.partitions)?;
    let (b, n) = (bootstrap.clone(), args.messages);
    tokio::task::spawn_blocking(move || kafka::produce_sequence(&b, "guarantee-in", n)).await??;
    println!(
        "transform example, {} messages on {} partitions, commit interval {} ms:",
        args.messages, args.partitions, args.commit_interval_ms
    );
    let sides = ["at-least-once", "exactly-once"];
    let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=args.rounds {
        for (i, side) in sides.iter().enumerate() {
            let output = format!("guarantee-out-{side}-{round}");
            broker.create_topic(&output, args.partitions)?;
            let started = Instant::now();
            let group = format!("guarantee-{side}-{round}");
            let mut command =
                transform_command(&transform, &bootstrap, "guarantee-in", &output, &group);
            command
                .env("CLUSTERA_GUARANTEE", side)
                .env("CLUSTERA_TRANSACTIONAL_ID", format!("bench-{round}"))
                .env(
                    "CLUSTERA_COMMIT_INTERVAL_MS",
                    args.commit_interval_ms.to_string(),
                );
            let mut child = spawn(&mut command, &transform)?;
            let done = wait_for_outputs(&mut child, &bootstrap, &output, args.messages).await;
            let elapsed = started.elapsed();
            stop(child).await;
            done?;
            let rate = args.messages as f64 / elapsed.as_secs_f64();
            println!(
                "  round {round} {side:>13}: {:.2} s, {rate:.0} messages/s",
                elapsed.as_secs_f64()
            );
            rates[i].push(rate);
        }
    }
    let (alo, eo) = (median(&mut rates[0]), median(&mut rates[1]));
    println!(
        "  medians: at-least-once {alo:.0}, exactly-once {eo:.0} messages/s; exactly-once / \
         at-least-once = {:.2}",
        eo / alo
    );
    Ok(())
}

/// Waits until `topic` holds `count` records, or fails if the kernel exits first.
async fn wait_for_outputs(
    child: &mut std::process::Child,
    bootstrap: &str,
    topic: &str,
    count: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the transform example exited early: {status}");
        }
        let (b, t) = (bootstrap.to_owned(), topic.to_owned());
        let written: i64 = tokio::task::spawn_blocking(move || {
            kafka::high_watermarks(&b, &t).map(|h| h.values().sum())
        })
        .await??;
        if written >= count as i64 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{topic}: {written} of {count} outputs after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
