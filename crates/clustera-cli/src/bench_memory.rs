//! `clustera bench-memory`: the transform example as its own process on 300,000 small JSON
//! messages, with the memory budget (`CLUSTERA_MEMORY_BYTES`, default 16 MiB) and without it
//! (`off`: librdkafka's 8 MiB of prefetch per partition, as before the budget), side by side
//! in one run and for each partition count: peak resident memory (VmHWM) and throughput.
//!
//! Throughput is inputs over the time from the process's start to its group's commits
//! reaching the high watermarks (KIP-848 joins at once; commits every 100 ms), so it includes
//! start-up, the same for both sides. Both sides use a 10 ms `fetch.wait.max.ms`, since the
//! embedded broker does not answer a waiting fetch when data arrives.

use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use clustera::testing::{kafka, process_memory, MockBroker};

use crate::bench_kernel::{spawn, stop, transform_bin, transform_command, wait_committed};

use crate::bench::median;

/// Arguments of `clustera bench-memory`.
#[derive(Args)]
pub struct BenchMemoryArgs {
    /// Messages in the input topic.
    #[arg(long, default_value_t = 300_000)]
    messages: usize,
    /// Partition counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,64")]
    partitions: Vec<i32>,
    /// Rounds per partition count; each runs both sides, alternating which goes first.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Extra environment for the budget side, as NAME=VALUE (to try other settings).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
}

/// One run of the transform example.
struct Sample {
    peak_mb: f64,
    rate: f64,
}

/// Runs the benchmark and prints peak memory and rates with their ratios.
pub async fn run(args: BenchMemoryArgs) -> anyhow::Result<()> {
    let transform = transform_bin()?;
    println!(
        "transform example, {} small JSON messages, budget (16 MiB default) vs off:",
        args.messages
    );
    for &partitions in &args.partitions {
        let broker = MockBroker::start(1).context("starting the mock cluster")?;
        let bootstrap = broker.bootstrap().to_owned();
        let input = format!("mem-in-{partitions}");
        broker.create_topic(&input, partitions)?;
        broker.create_topic(&format!("mem-out-{partitions}"), partitions)?;
        // Written in 16 KB batches, the Java producer's default. A consumer holds at least one
        // whole batch per partition whatever its limits (KIP-74), so a topic written in
        // librdkafka's 1 MB batches costs up to 1 MB per partition on any consumer.
        let mut producer = rdkafka::ClientConfig::new();
        producer
            .set("bootstrap.servers", &bootstrap)
            .set("batch.size", "16384");
        let (b, t, n) = (producer, input.clone(), args.messages);
        tokio::task::spawn_blocking(move || {
            kafka::produce(
                &b,
                &t,
                (0..n).map(|i| {
                    (
                        Some(format!("user-{}", i % 1000).into_bytes()),
                        format!(
                            r#"{{"seq":{i},"user":"user-{}","action":"click"}}"#,
                            i % 1000
                        )
                        .into_bytes(),
                        Vec::new(),
                    )
                }),
            )
        })
        .await??;
        let (mut budget, mut off) = (Vec::new(), Vec::new());
        for round in 0..args.rounds {
            for with_budget in [round % 2 == 0, round % 2 == 1] {
                let group = format!("mem-{partitions}-{round}-{with_budget}");
                let extra: &[String] = if with_budget { &args.env } else { &[] };
                let setup = Setup {
                    transform: &transform,
                    bootstrap: &bootstrap,
                    input: &input,
                    partitions,
                    messages: args.messages,
                };
                let sample = run_once(&setup, &group, with_budget, extra).await?;
                if with_budget {
                    budget.push(sample);
                } else {
                    off.push(sample);
                }
            }
        }
        let stat =
            |v: &[Sample], f: fn(&Sample) -> f64| median(&mut v.iter().map(f).collect::<Vec<_>>());
        let (bp, op) = (stat(&budget, |s| s.peak_mb), stat(&off, |s| s.peak_mb));
        let (br, or) = (stat(&budget, |s| s.rate), stat(&off, |s| s.rate));
        println!(
            "  {partitions:>3} partitions: peak RSS {bp:.1} MB with the budget, {op:.1} MB without \
             ({:.2}x); {br:.0} vs {or:.0} messages/s (ratio {:.2})",
            bp / op,
            br / or
        );
        for (name, v) in [("budget", &budget), ("off", &off)] {
            let runs: Vec<String> = v
                .iter()
                .map(|s| format!("{:.1} MB {:.0}/s", s.peak_mb, s.rate))
                .collect();
            println!("      {name:>6}: {}", runs.join(", "));
        }
    }
    Ok(())
}

/// What every run of one partition count shares.
struct Setup<'a> {
    transform: &'a std::path::Path,
    bootstrap: &'a str,
    input: &'a str,
    partitions: i32,
    messages: usize,
}

async fn run_once(
    setup: &Setup<'_>,
    group: &str,
    with_budget: bool,
    extra: &[String],
) -> anyhow::Result<Sample> {
    let Setup {
        transform,
        bootstrap,
        input,
        partitions,
        messages,
    } = *setup;
    let started = Instant::now();
    let mut command = transform_command(
        transform,
        bootstrap,
        input,
        &format!("mem-out-{partitions}"),
        group,
    );
    command.env(
        "CLUSTERA_MEMORY_BYTES",
        if with_budget { "16MiB" } else { "off" },
    );
    // Last, so they can override the settings above.
    for pair in extra {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--env {pair}: expected NAME=VALUE"))?;
        command.env(k, v);
    }
    let mut child = spawn(&mut command, transform)?;
    let done = wait_committed(&mut child, bootstrap, group, input, None).await;
    let elapsed = started.elapsed();
    let peak = process_memory(child.id()).map(|m| m.peak_kb);
    stop(child).await;
    done?;
    Ok(Sample {
        peak_mb: peak? as f64 / 1024.0,
        rate: messages as f64 / elapsed.as_secs_f64(),
    })
}
