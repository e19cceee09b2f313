//! `clustera bench`: the kernel runtime with a no-op kernel against a hand-written rdkafka
//! consume-and-commit loop with the same at-least-once guarantee, on the same broker and
//! topic, in one run. Each run reads the whole topic under its own consumer group; the time is
//! measured from the partitions' assignment (when fetching starts) to the last message done.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use clap::Args;
use clustera::testing::{kafka, MockBroker};
use clustera::{Config, Context, Kernel, KernelError, Message, Outcome, Runtime};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientConfig, ClientContext, Message as _};

/// Arguments of `clustera bench`.
#[derive(Args)]
pub struct BenchArgs {
    /// Messages in the topic.
    #[arg(long, default_value_t = 1_000_000)]
    messages: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 32)]
    partitions: i32,
    /// Payload bytes per message (the mock cluster keeps about 5 MB per partition).
    #[arg(long, default_value_t = 32)]
    payload: usize,
    /// Rounds; each runs the raw loop and the kernel once, alternating which goes first.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Run only one side (`raw` or `kernel`), for profiling.
    #[arg(long, value_parser = ["raw", "kernel"])]
    only: Option<String>,
    /// Use this broker instead of the embedded mock cluster (the topic must not exist yet).
    #[arg(long, env = "KAFKA_BOOTSTRAP_SERVERS")]
    brokers: Option<String>,
    /// The kernel's memory budget in bytes (`CLUSTERA_MEMORY_BYTES`); 0 turns it off, as
    /// before the budget existed.
    #[arg(long, default_value_t = clustera::config::budget::DEFAULT_MEMORY_BYTES)]
    memory: u64,
    /// `fetch.wait.max.ms` for both readers. The embedded broker answers a waiting fetch only
    /// when the wait expires; with the budget's small queues librdkafka's 500 ms starves the
    /// kernel there (not on Kafka, which answers as soon as data arrives).
    #[arg(long, default_value_t = 10)]
    fetch_wait_ms: u64,
}

struct Noop;

impl Kernel for Noop {
    fn name(&self) -> &str {
        "bench-noop"
    }
    fn default_topics(&self) -> Vec<String> {
        vec![]
    }
    async fn process(&self, _: &Message, _: &mut Context) -> Result<Outcome, KernelError> {
        Ok(Outcome::Ack)
    }
}

/// Runs the benchmark and prints rates and their ratio.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mock = match &args.brokers {
        Some(_) => None,
        None => Some(MockBroker::start(1).context("starting the mock cluster")?),
    };
    let bootstrap = match (&args.brokers, &mock) {
        (Some(b), _) => b.clone(),
        (None, Some(m)) => m.bootstrap().to_owned(),
        (None, None) => unreachable!("one of them is set"),
    };
    let topic = format!("bench-{}", std::process::id());
    let (b, t, n, p, size) = (
        bootstrap.clone(),
        topic.clone(),
        args.messages,
        args.partitions,
        args.payload,
    );
    if let Some(m) = &mock {
        m.create_topic(&topic, p)?;
    }
    let external = mock.is_none();
    let produce_secs = tokio::task::spawn_blocking(move || {
        if external {
            kafka::create_topic(&b, &t, p)?;
        }
        let started = Instant::now();
        let payload = vec![b'x'; size];
        kafka::produce(
            &b,
            &t,
            (0..n).map(|i| {
                (
                    Some(i.to_string().into_bytes()),
                    payload.clone(),
                    Vec::new(),
                )
            }),
        )?;
        anyhow::Ok(started.elapsed().as_secs_f64())
    })
    .await??;
    println!("produced {n} messages of {size} B to {p} partitions in {produce_secs:.2} s");

    let mut raw_rates = Vec::new();
    let mut kernel_rates = Vec::new();
    let mut raw_cpu = Vec::new();
    let mut kernel_cpu = Vec::new();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 {
            ["raw", "kernel"]
        } else {
            ["kernel", "raw"]
        };
        for which in order {
            if args.only.as_deref().is_some_and(|only| only != which) {
                continue;
            }
            let group = format!("{topic}-{which}-{round}");
            let cpu_before = process_cpu_seconds();
            let secs = if which == "raw" {
                let (b, t, g) = (bootstrap.clone(), topic.clone(), group.clone());
                let fetch_wait = args.fetch_wait_ms;
                tokio::task::spawn_blocking(move || raw_loop(&b, &t, &g, n, fetch_wait)).await??
            } else {
                kernel_run(
                    &bootstrap,
                    &topic,
                    &group,
                    n,
                    args.memory,
                    args.fetch_wait_ms,
                )
                .await?
            };
            let cpu = process_cpu_seconds()
                .zip(cpu_before)
                .map(|(after, before)| after - before);
            let rate = n as f64 / secs;
            let cpu_text = cpu.map_or(String::new(), |c| format!(", {c:.2} CPU s"));
            println!("round {round}: {which:<6} {rate:>12.0} msg/s ({secs:.2} s{cpu_text})");
            if let Some(c) = cpu {
                if which == "raw" {
                    raw_cpu.push(c)
                } else {
                    kernel_cpu.push(c)
                }
            }
            let (b, t) = (bootstrap.clone(), topic.clone());
            let done = tokio::task::spawn_blocking(move || {
                anyhow::Ok(
                    kafka::committed_offsets(&b, &group, &t)? == kafka::high_watermarks(&b, &t)?,
                )
            })
            .await??;
            ensure!(
                done,
                "{which}: committed offsets do not reach the high watermarks"
            );
            if which == "raw" {
                raw_rates.push(rate)
            } else {
                kernel_rates.push(rate)
            }
        }
    }
    if raw_rates.is_empty() || kernel_rates.is_empty() {
        return Ok(());
    }
    // Rates drift within a process (allocator and page-cache warm-up), so each round's pair is
    // compared directly and the median of those ratios is the headline figure.
    let mut ratios: Vec<f64> = kernel_rates
        .iter()
        .zip(&raw_rates)
        .map(|(k, r)| k / r)
        .collect();
    let raw = median(&mut raw_rates);
    let kernel = median(&mut kernel_rates);
    println!("\nmedian raw loop: {raw:.0} msg/s");
    println!("median kernel:   {kernel:.0} msg/s");
    println!("ratio of medians kernel/raw: {:.3}", kernel / raw);
    let shown: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!("per-round ratios: {}", shown.join(" "));
    println!(
        "median per-round ratio: {:.3}  (target >= 0.95)",
        median(&mut ratios)
    );
    if !raw_cpu.is_empty() && !kernel_cpu.is_empty() {
        // Whole-process CPU (broker included), from group join to shutdown: steadier than
        // wall time on a small machine.
        println!(
            "median process CPU per run: raw {:.2} s, kernel {:.2} s",
            median(&mut raw_cpu),
            median(&mut kernel_cpu)
        );
    }
    drop(mock);
    Ok(())
}

/// Records when the raw loop's partitions were first assigned.
#[derive(Default)]
struct AssignmentClock(std::sync::Mutex<Option<Instant>>);

impl AssignmentClock {
    fn assigned_at(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ClientContext for AssignmentClock {}

impl ConsumerContext for AssignmentClock {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert_with(Instant::now);
        }
    }
}

/// User plus system CPU seconds of this process so far, from `/proc/self/stat` (Linux only).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // The kernel's USER_HZ is 100 on every Linux architecture Clustera targets.
    Some(ticks / 100.0)
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The baseline: poll, "process" (nothing), store the offset, commit every second and at the
/// end. At-least-once because an offset is stored only after its message was handled.
fn raw_loop(
    bootstrap: &str,
    topic: &str,
    group: &str,
    expected: usize,
    fetch_wait_ms: u64,
) -> anyhow::Result<f64> {
    let consumer: BaseConsumer<AssignmentClock> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // The largest prefetch librdkafka allows: with one shared queue, the default
        // (100,000 messages for all partitions together) starves this loop.
        .set("queued.min.messages", "10000000")
        .set("queued.max.messages.kbytes", "2097151")
        .create_with_context(AssignmentClock::default())?;
    consumer.subscribe(&[topic])?;
    let mut seen = 0usize;
    let mut last_commit = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < expected {
        ensure!(
            Instant::now() < deadline,
            "raw loop timed out at {seen} messages"
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                std::hint::black_box(m.payload());
                consumer.store_offset_from_message(&m)?;
                seen += 1;
            }
            Some(Err(e)) => anyhow::bail!("raw loop: {e}"),
            None => {}
        }
        if last_commit.elapsed() >= Duration::from_secs(1) {
            let _ = consumer.commit_consumer_state(CommitMode::Async);
            last_commit = Instant::now();
        }
    }
    consumer.commit_consumer_state(CommitMode::Sync)?;
    let started = consumer.context().assigned_at();
    let secs = started.map_or(0.0, |s| s.elapsed().as_secs_f64());
    consumer.unsubscribe();
    Ok(secs)
}

/// The same work through the runtime with a no-op kernel; time from the assignment to the
/// last message done. The final commit happens at shutdown, which is timed and printed separately.
async fn kernel_run(
    bootstrap: &str,
    topic: &str,
    group: &str,
    expected: usize,
    memory: u64,
    fetch_wait_ms: u64,
) -> anyhow::Result<f64> {
    let mut config = Config::for_brokers("bench-noop", bootstrap, &[topic]);
    config.group_id = group.to_owned();
    config.runtime.memory_bytes = (memory > 0).then_some(memory);
    config.properties.insert(
        "fetch.wait.max.ms".into(),
        clustera::config::Secret::new(fetch_wait_ms.to_string()),
    );
    let runtime = Runtime::new(config, Noop);
    let stats = runtime.stats();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run_until(async {
        let _ = stop_rx.await;
    }));
    let deadline = Instant::now() + Duration::from_secs(600);
    while stats.snapshot().partitions_assigned == 0 {
        ensure!(Instant::now() < deadline, "kernel was assigned nothing");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    while stats.snapshot().processed() < expected as u64 {
        ensure!(Instant::now() < deadline, "kernel timed out");
        // Coarse enough not to compete with the workers; adds at most 5 ms to the kernel's time.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let processing = started.elapsed().as_secs_f64();
    let stopping = Instant::now();
    let _ = stop_tx.send(());
    task.await??;
    println!(
        "         kernel: shutdown (drain, final commit, leave group, flush) took {:.2} s, not counted",
        stopping.elapsed().as_secs_f64()
    );
    Ok(processing)
}
