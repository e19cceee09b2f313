//! `clustera demo`: the whole outbox pipeline on embedded defaults. A throwaway PostgreSQL, the
//! in-process development broker, the relay (outbox → Kafka, Debezium format), the processor
//! kernel (Kafka → read models), a load of realistic events, then the report and the verifier.
//!
//! `clustera demo orders` is the other demo: seed 002's order-processing system
//! ([`crate::demo_orders`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use clustera::testing::MockBroker;
use clustera::{Config, Runtime};
use clustera_outbox::relay::wakeup::Wakeups;
use clustera_outbox::relay::{init, Relay, RelayConfig};
use clustera_outbox::testing::Postgres;
use clustera_outbox::{OutboxProcessor, PgStore};
use clustera_outbox_demo::{activity, load, report};
use tokio_postgres::NoTls;

/// Arguments of `clustera demo`: the outbox demo's, or another demo.
#[derive(Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "\
Examples:
  clustera demo                             # the outbox pipeline: PostgreSQL, relay, processor
  clustera demo --events 2000 --rate 500    # at a steady rate: the latency benchmark
  clustera demo orders                      # seed 002's order processing: five kernels
  clustera demo orders --orders 5000 --json # the summary as JSON, for scripts"
)]
pub struct DemoArgs {
    #[command(subcommand)]
    other: Option<OtherDemo>,
    #[command(flatten)]
    outbox: OutboxDemoArgs,
}

/// The demos other than the default one.
#[derive(Subcommand)]
enum OtherDemo {
    /// Seed 002's order-processing system: five kernels (orders, inventory, payment, shipping,
    /// notification) with idempotent handlers, retries, a dead-letter topic and a replay, on
    /// the embedded broker, then a summary checked against what the storefront sent.
    Orders(crate::demo_orders::OrdersArgs),
}

/// Runs the demo asked for: the outbox pipeline by default.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    match args.other {
        Some(OtherDemo::Orders(orders)) => crate::demo_orders::run(orders).await,
        None => run_outbox(args.outbox).await,
    }
}

/// Arguments of the outbox demo (`clustera demo`).
#[derive(Args)]
struct OutboxDemoArgs {
    /// Events to generate (users 40%, activities 30%, participants 30%).
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    /// Events per outbox transaction (ignored with --rate).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Insert at this steady rate (events/s) instead of as fast as possible: the latency
    /// benchmark's mode.
    #[arg(long)]
    rate: Option<f64>,
    /// Relay every event to Kafka first, then start the processor: measures the processor's
    /// own throughput (the latency report then includes the wait).
    #[arg(long)]
    staged: bool,
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// The most events `--staged` can hold on the embedded broker (about 700 bytes each, 4
/// partitions of about 5 MB).
const STAGED_LIMIT: usize = 25_000;

/// Runs the pipeline and prints the report; fails if the verifier finds a problem.
async fn run_outbox(args: OutboxDemoArgs) -> anyhow::Result<()> {
    let pace = crate::outbox::pace(args.batch, args.rate)?;
    if args.staged && args.events > STAGED_LIMIT {
        bail!(
            "--staged holds every event on the embedded broker, which keeps only about 5 MB per \
             partition: at most {STAGED_LIMIT} events (run the relay and processor against a \
             real broker for more)"
        );
    }
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await?
        .map_err(anyhow::Error::msg)
        .context("starting a throwaway PostgreSQL")?;
    let broker = MockBroker::start(1).context("starting the embedded broker")?;
    let topic = RelayConfig::default()
        .topic()
        .context("the default relay format has one topic")?;
    broker.create_topic(&topic, 4)?;
    broker.create_topic(&format!("{topic}.dlq"), 1)?;
    let bootstrap = broker.bootstrap().to_owned();
    println!("PostgreSQL {}  (throwaway, wal_level=logical)", pg.url());
    println!("Kafka      {bootstrap}  (embedded librdkafka mock cluster)");

    let client = connect(pg.url()).await?;
    init(pg.url(), &RelayConfig::default()).await?;
    let store = Arc::new(PgStore::connect(pg.url()).await?);

    let kafka = clustera::Config::for_brokers("outbox-demo-relay", &bootstrap, &[]);
    let config = RelayConfig::default();
    let wakeups = Wakeups::listen(pg.url(), &config.channel).await?;
    let relay = Relay::connect(pg.url(), &kafka, config)
        .await?
        .with_wakeups(wakeups);
    let relayed = relay.relayed();
    let relay = Stoppable::spawn(|stop| relay.run_until(stop));

    let processor = if args.staged {
        load_events(pg.url(), args.events, pace).await?;
        let deadline = Instant::now() + Duration::from_secs(600);
        while relayed.load(Ordering::Relaxed) < args.events as u64 {
            if Instant::now() > deadline {
                bail!("the relay did not send every event within 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!("relayed {} events; starting the processor", args.events);
        start_processor(&bootstrap, &topic, store).await?
    } else {
        // Latency should measure the pipeline, not the first group join.
        let processor = start_processor(&bootstrap, &topic, store).await?;
        load_events(pg.url(), args.events, pace).await?;
        processor
    };
    let processing = wait_processed(&client, args.events).await?;
    if args.staged {
        println!("(staged: the latency below includes the wait for the processor to start)");
        println!(
            "processor: {} events in {:.2} s = {:.0} events/s (one consumer, {} partitions)",
            args.events,
            processing.as_secs_f64(),
            args.events as f64 / processing.as_secs_f64().max(1e-9),
            4
        );
    }
    processor.stop().await??;
    relay.stop().await??;

    println!("\n{}", report::report(&client).await?);
    let problems = report::verify(&client).await?;
    if problems.is_empty() {
        println!("\nverify: OK (document counts, referential integrity, field completeness)");
        Ok(())
    } else {
        for p in &problems {
            eprintln!("verify: {p}");
        }
        bail!("{} verification problem(s)", problems.len())
    }
}

/// A spawned task that runs until told to stop.
pub(crate) struct Stoppable<T> {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<T>,
}

impl<T: Send + 'static> Stoppable<T> {
    pub(crate) fn spawn<F>(run: impl FnOnce(BoxFuture<'static, ()>) -> F) -> Self
    where
        F: std::future::Future<Output = T> + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(Box::pin(async {
            let _ = stopped.await;
        })));
        Self { stop, task }
    }

    pub(crate) async fn stop(self) -> Result<T, tokio::task::JoinError> {
        let _ = self.stop.send(());
        self.task.await
    }
}

pub(crate) type BoxFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Starts the processor kernel and waits until it holds its partitions.
async fn start_processor(
    bootstrap: &str,
    topic: &str,
    store: Arc<PgStore>,
) -> anyhow::Result<Stoppable<Result<clustera::StatsSnapshot, clustera::RuntimeError>>> {
    let mut config = Config::for_brokers("outbox-processor", bootstrap, &[topic]);
    config.runtime.commit_interval = Duration::from_millis(500);
    // The embedded broker answers a fetch with no data only when its wait expires; it is not
    // woken by new records as Kafka is. Its default 500 ms wait would be the latency floor;
    // 2 ms costs idle fetches (a few hundred a second), which only this embedded demo pays.
    config.properties.insert(
        "fetch.wait.max.ms".into(),
        clustera::config::Secret::new("2"),
    );
    // KIP-848: the embedded broker serves the next-generation group protocol, with which a
    // member joins without the classic protocol's initial rebalance delay.
    config.properties.insert(
        "group.protocol".into(),
        clustera::config::Secret::new("consumer"),
    );
    let runtime = Runtime::new(config, OutboxProcessor::new(activity::registry(), store));
    let stats = runtime.stats();
    let processor = Stoppable::spawn(|stop| runtime.run_until(stop));
    let deadline = Instant::now() + Duration::from_secs(60);
    while stats.snapshot().partitions_assigned == 0 {
        if Instant::now() > deadline {
            bail!("the processor did not join its consumer group within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(processor)
}

async fn load_events(url: &str, events: usize, pace: load::Pace) -> anyhow::Result<()> {
    let started = Instant::now();
    let counts = load::generate(url, events, pace).await?;
    println!(
        "inserted {events} events into the outbox in {:.2} s: {}",
        started.elapsed().as_secs_f64(),
        counts
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Waits until every event has been written by its handlers, printing the rate each second.
/// Returns the time it took.
async fn wait_processed(
    client: &tokio_postgres::Client,
    events: usize,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    let mut last = (started, 0i64);
    loop {
        let done: i64 = client
            .query_one("SELECT count(DISTINCT event_id) FROM processed_events", &[])
            .await?
            .get(0);
        let now = Instant::now();
        if done >= events as i64 || now.duration_since(last.0) >= Duration::from_secs(1) {
            let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
            println!("  processed {done:>7} / {events}   current {rate:>8.0} events/s");
            last = (now, done);
        }
        if done >= events as i64 {
            return Ok(started.elapsed());
        }
        if now > deadline {
            bail!("the pipeline did not finish within 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
