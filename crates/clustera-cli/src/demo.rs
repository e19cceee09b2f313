//! `clustera demo`: the whole outbox pipeline on embedded defaults. A throwaway PostgreSQL, the
//! in-process development broker, the relay (outbox → Kafka, Debezium format), the processor
//! kernel (Kafka → read models), a load of realistic events, then the report and the verifier.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use clustera::testing::MockBroker;
use clustera::{Config, Runtime};
use clustera_outbox::relay::{init, Relay, RelayConfig};
use clustera_outbox::testing::Postgres;
use clustera_outbox::{activity, load, report, OutboxProcessor, PgStore};
use rdkafka::ClientConfig;
use tokio_postgres::NoTls;

/// Arguments of `clustera demo`.
#[derive(Args)]
pub struct DemoArgs {
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
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(conn);
    Ok(client)
}

/// Runs the pipeline and prints the report; fails if the verifier finds a problem.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await?
        .map_err(anyhow::Error::msg)
        .context("starting a throwaway PostgreSQL")?;
    let broker = MockBroker::start(1).context("starting the embedded broker")?;
    let topic = RelayConfig::default().topic;
    broker.create_topic(&topic, 4)?;
    broker.create_topic(&format!("{topic}.dlq"), 1)?;
    let bootstrap = broker.bootstrap().to_owned();
    println!("PostgreSQL {}  (throwaway, wal_level=logical)", pg.url());
    println!("Kafka      {bootstrap}  (embedded librdkafka mock cluster)");

    let mut client = connect(pg.url()).await?;
    init(&client, &RelayConfig::default()).await?;
    let store = Arc::new(PgStore::connect(pg.url()).await?);

    let mut kafka = ClientConfig::new();
    kafka.set("bootstrap.servers", &bootstrap);
    let relay = Relay::new(connect(pg.url()).await?, &kafka, RelayConfig::default())?;
    let (stop_relay, relay_stopped) = tokio::sync::oneshot::channel::<()>();
    let relay_task = tokio::spawn(relay.run_until(async {
        let _ = relay_stopped.await;
    }));

    let mut config = Config::for_brokers("outbox-processor", &bootstrap, &[&topic]);
    config.runtime.commit_interval = Duration::from_millis(500);
    // The embedded broker answers a fetch with no data only when its wait expires; it is not
    // woken by new records as Kafka is. Its default 500 ms wait would be the latency floor.
    config.properties.insert(
        "fetch.wait.max.ms".into(),
        clustera::config::Secret::new("10"),
    );
    let runtime = Runtime::new(config, OutboxProcessor::new(activity::registry(), store));
    let processor_stats = runtime.stats();
    let (stop_processor, processor_stopped) = tokio::sync::oneshot::channel::<()>();
    let processor = tokio::spawn(runtime.run_until(async {
        let _ = processor_stopped.await;
    }));

    // Latency should measure the pipeline, not the first group join.
    let joined = Instant::now() + Duration::from_secs(60);
    while processor_stats.snapshot().partitions_assigned == 0 {
        if Instant::now() > joined {
            bail!("the processor did not join its consumer group within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let started = Instant::now();
    let counts = load::generate(
        &mut client,
        args.events,
        crate::outbox::pace(args.batch, args.rate)?,
    )
    .await?;
    println!(
        "inserted {} events into the outbox in {:.2} s: {}",
        args.events,
        started.elapsed().as_secs_f64(),
        counts
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Wait until every event has been written by its handlers, printing the current rate.
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut last = (Instant::now(), 0i64);
    loop {
        let done: i64 = client
            .query_one("SELECT count(DISTINCT event_id) FROM processed_events", &[])
            .await?
            .get(0);
        let now = Instant::now();
        let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(0.001);
        println!(
            "  processed {done:>7} / {}   current {rate:>8.0} events/s",
            args.events
        );
        if done >= args.events as i64 {
            break;
        }
        if now > deadline {
            bail!("the pipeline did not finish within 10 minutes");
        }
        last = (now, done);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = stop_processor.send(());
    let _ = stop_relay.send(());
    processor.await??;
    relay_task.await??;

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
