//! `clustera outbox`: the CDC outbox pipeline. PostgreSQL from `DATABASE_URL`, Kafka from the
//! runtime's `KAFKA_*` variables (or `--brokers`).

use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use clustera::infra::http::{http_addr_from_vars, HTTP_ADDR_VARIABLE};
use clustera_outbox::relay::wakeup::Wakeups;
use clustera_outbox::relay::{init, mark_since, ReadMode, Relay, RelayConfig, RelayTelemetry};
use clustera_outbox::{OutboxProcessor, PgStore, PoolSettings};
use clustera_outbox_demo::{activity, load, report};

/// Arguments of `clustera outbox`.
#[derive(Args)]
pub struct OutboxArgs {
    /// PostgreSQL connection string.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: OutboxCommand,
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// Create the outbox table, the publication and the replication slot (idempotent). A new
    /// slot has the rows already in the outbox relayed first, unless
    /// CLUSTERA_OUTBOX_SNAPSHOT=never.
    Init,
    /// Send again the outbox rows since a point in time (after a lost slot, say), as snapshot
    /// reads, then exit. What is not finished is sent by the relay's next start.
    Resend {
        /// The earliest row to send: a time PostgreSQL reads as `timestamptz`
        /// (`2026-12-01T00:00:00Z`), compared with the time column.
        #[arg(long)]
        since: String,
        /// The rows' time column (default: CLUSTERA_OUTBOX_TIME_COLUMN, else created_at).
        #[arg(
            long,
            env = "CLUSTERA_OUTBOX_TIME_COLUMN",
            default_value = "created_at"
        )]
        time_column: String,
        /// Bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS).
        #[arg(long)]
        brokers: Option<String>,
    },
    /// Stream outbox inserts to Kafka as Debezium change events until Ctrl-C.
    #[command(after_help = crate::help::OUTBOX)]
    Relay {
        /// Bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS).
        #[arg(long)]
        brokers: Option<String>,
    },
    /// Run the processor kernel: change events into PostgreSQL read models.
    Process,
    /// Insert generated Activity App events (users 40%, activities 30%, participants 30%).
    Load {
        /// How many.
        #[arg(long, default_value_t = 1000)]
        events: usize,
        /// Events per transaction (ignored with --rate).
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Insert at this steady rate (events/s) instead of as fast as possible.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Throughput, latency (outbox commit to read model), success rate, per-type counts.
    Report,
    /// Check the read models against the outbox; non-zero exit on any problem.
    Verify,
    /// Benchmark the relay alone: a backlog of outbox rows (inserted in transactions of
    /// `--batch`) relayed into the embedded broker, streaming and peek side by side, each on
    /// a fresh throwaway PostgreSQL and broker. Needs no DATABASE_URL.
    BenchRelay {
        /// Events per run.
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        /// Rows per inserting transaction.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Runs of each read mode, alternating.
        #[arg(long, default_value_t = 2)]
        rounds: usize,
    },
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    clustera_outbox::pg::connect(url)
        .await
        .context("connecting to DATABASE_URL")
}

/// `/healthz` of the relay fails after this long without a completed round, unless
/// `CLUSTERA_STALL_TIMEOUT_MS` says otherwise.
const RELAY_STALL: std::time::Duration = std::time::Duration::from_secs(60);

/// The relay's stall timeout: `CLUSTERA_STALL_TIMEOUT_MS`, as for a kernel, else 60 s.
fn relay_stall() -> anyhow::Result<std::time::Duration> {
    let ms = clustera::infra::env::number::<u64>(
        &clustera::infra::env::env_var,
        "CLUSTERA_STALL_TIMEOUT_MS",
    )?;
    Ok(ms.map_or(RELAY_STALL, std::time::Duration::from_millis))
}

/// Where the relay serves `/metrics`, `/healthz` and `/readyz` when `CLUSTERA_HTTP_ADDR` is
/// not set: not a kernel's 8080, so a relay and a kernel (the processor) run side by side on
/// one host with their defaults.
pub const RELAY_HTTP_ADDR: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8081);

/// The relay's listener: `CLUSTERA_HTTP_ADDR` as for a kernel, else [`RELAY_HTTP_ADDR`].
fn relay_http_addr(
    var: clustera::infra::env::Vars<'_>,
) -> anyhow::Result<Option<std::net::SocketAddr>> {
    Ok(match var(HTTP_ADDR_VARIABLE) {
        None => Some(RELAY_HTTP_ADDR),
        Some(_) => http_addr_from_vars(var)?,
    })
}

/// The load's pace from `--batch` and `--rate`.
pub fn pace(batch: usize, rate: Option<f64>) -> anyhow::Result<load::Pace> {
    use load::Pace;
    match rate {
        Some(r) if !(r.is_finite() && r > 0.0) => {
            anyhow::bail!("--rate must be a positive number of events per second, not {r}")
        }
        Some(per_second) => Ok(Pace::Steady { per_second }),
        None if batch == 0 => anyhow::bail!("--batch must be at least 1"),
        None => Ok(Pace::Burst { batch }),
    }
}

/// Runs the subcommand.
pub async fn run(args: OutboxArgs) -> anyhow::Result<()> {
    if let OutboxCommand::BenchRelay {
        events,
        batch,
        rounds,
    } = args.command
    {
        return bench_relay(events, batch, rounds).await;
    }
    let url = args
        .database_url
        .context("DATABASE_URL is not set (or pass --database-url)")?;
    let config = RelayConfig::from_vars(&clustera::infra::env::env_var)?;
    match args.command {
        OutboxCommand::Init => {
            let snapshotted = init(&url, &config).await?;
            println!(
                "outbox ready: table {}.{}, publication {}, slot {}",
                config.schema, config.table, config.publication, config.slot
            );
            if snapshotted > 0 {
                println!(
                    "{snapshotted} rows already in the outbox will be relayed first (snapshot)"
                );
            }
        }
        OutboxCommand::Resend {
            since,
            time_column,
            brokers,
        } => {
            let kafka = clustera::Config::tool_from_env(brokers.as_deref())?;
            let config = RelayConfig {
                time_column,
                ..config
            };
            let client = connect(&url).await?;
            let marked = mark_since(&client, &config, &since)
                .await
                .map_err(|e| anyhow::anyhow!(clustera::infra::error_chain(&e)))
                .with_context(|| {
                    format!("marking rows with {} >= {since:?}", config.time_column)
                })?;
            let mut relay = Relay::connect(&url, &kafka, config.clone())
                .await
                .context("connecting to DATABASE_URL")?;
            if !relay.try_lock().await? {
                println!(
                    "{marked} rows since {since} marked; a relay is running on slot {}: restart \
                     it and it sends them before it streams",
                    config.slot
                );
                return Ok(());
            }
            let sent = relay
                .send_pending()
                .await
                .map_err(|e| anyhow::anyhow!(clustera::infra::error_chain(&e)))?;
            println!("{marked} rows since {since} marked; {sent} sent and acknowledged");
        }
        OutboxCommand::Relay { brokers } => {
            let kafka = clustera::Config::tool_from_env(brokers.as_deref())?;
            let http_addr = relay_http_addr(&clustera::infra::env::env_var)?;
            // Only the peek rounds need waking; the stream is pushed by the server.
            let wakeups = match config.read {
                ReadMode::Peek => Some(
                    Wakeups::listen(&url, &config.channel)
                        .await
                        .context("listening for outbox notifications")?,
                ),
                ReadMode::Stream => None,
            };
            let telemetry = Arc::new(RelayTelemetry::new(relay_stall()?));
            let mut relay = Relay::connect(&url, &kafka, config)
                .await
                .context("connecting to DATABASE_URL")?
                .with_telemetry(telemetry.clone());
            if let Some(w) = wakeups {
                relay = relay.with_wakeups(w);
            }
            // Serves until dropped, at the end of this arm.
            let _http = match http_addr {
                Some(addr) => Some(clustera::infra::serve(addr, telemetry).await?),
                None => None,
            };
            tracing::info!("relaying outbox inserts; Ctrl-C to stop");
            // One line, each cause once (the relay's errors already show their source).
            relay
                .run_until(clustera::runtime::signal())
                .await
                .map_err(|e| anyhow::anyhow!(clustera::infra::error_chain(&e)))?;
        }
        OutboxCommand::Process => {
            let pool = PoolSettings::from_env()?;
            let store = Arc::new(
                PgStore::connect_with(&url, &pool)
                    .await
                    .context("connecting to DATABASE_URL")?,
            );
            let kernel = OutboxProcessor::new(activity::registry(), store)
                .with_settings(clustera_outbox::ProcessorSettings::from_env()?);
            let config = clustera::Config::from_env(
                clustera::Kernel::name(&kernel),
                &clustera::Kernel::default_topics(&kernel),
            )?;
            clustera::Runtime::new(config, kernel).run().await?;
        }
        OutboxCommand::Load {
            events,
            batch,
            rate,
        } => {
            let counts = load::generate(&url, events, pace(batch, rate)?).await?;
            for (t, n) in counts {
                println!("{t}\t{n}");
            }
        }
        OutboxCommand::Report => {
            println!("{}", report::report(&connect(&url).await?).await?);
        }
        // Run above, before DATABASE_URL is required.
        OutboxCommand::BenchRelay { .. } => {}
        OutboxCommand::Verify => {
            let problems = report::verify(&connect(&url).await?).await?;
            for p in &problems {
                println!("{p}");
            }
            if !problems.is_empty() {
                anyhow::bail!("{} verification problem(s)", problems.len());
            }
            println!("OK");
        }
    }
    Ok(())
}

/// One run of `clustera outbox bench-relay`: events/s from the relay's start until Kafka has
/// acknowledged the whole backlog.
async fn bench_relay_once(events: usize, batch: usize, read: ReadMode) -> anyhow::Result<f64> {
    use clustera::testing::MockBroker;
    use clustera_outbox::testing::Postgres;
    let pg = tokio::task::spawn_blocking(Postgres::start)
        .await?
        .map_err(anyhow::Error::msg)
        .context("starting a throwaway PostgreSQL")?;
    let broker = MockBroker::start(1).context("starting the embedded broker")?;
    let config = RelayConfig {
        read,
        ..RelayConfig::default()
    };
    // The mock cluster keeps at most 5 MB per partition: about 600 bytes an event, 4 MB a
    // partition, so every record is kept (the broker's work is the same as a real one's).
    let partitions = i32::try_from(events.div_ceil((4 << 20) / 600).max(4))?;
    let topic = config
        .topic()
        .context("the benchmark writes Debezium change events, to one topic")?;
    broker.create_topic(&topic, partitions)?;
    let client = connect(pg.url()).await?;
    init(pg.url(), &config).await?;
    let mut first = 0i64;
    while first < events as i64 {
        let last = (first + batch as i64).min(events as i64) - 1;
        client
            .execute(
                "INSERT INTO activity.event_outbox (aggregate_id, aggregate_type, event_type, payload)
                 SELECT gen_random_uuid(), 'User', 'UserCreated',
                        jsonb_build_object('user_id', 'u' || i, 'email', 'u' || i || '@example.com', 'username', 'user' || i)
                 FROM generate_series($1::bigint, $2::bigint) AS i",
                &[&first, &last],
            )
            .await?;
        first = last + 1;
    }
    let kafka = clustera::Config::for_brokers("bench-relay", broker.bootstrap(), &[]);
    let relay = Relay::connect(pg.url(), &kafka, config).await?;
    let relayed = relay.relayed();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = std::time::Instant::now();
    let task = tokio::spawn(relay.run_until(async {
        let _ = stopped.await;
    }));
    while relayed.load(std::sync::atomic::Ordering::Relaxed) < events as u64 {
        if task.is_finished() {
            task.await??;
            anyhow::bail!("the relay stopped early");
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let _ = stop.send(());
    task.await??;
    Ok(events as f64 / elapsed.as_secs_f64())
}

/// `clustera outbox bench-relay`.
async fn bench_relay(events: usize, batch: usize, rounds: usize) -> anyhow::Result<()> {
    if events == 0 || batch == 0 || rounds == 0 {
        anyhow::bail!("--events, --batch and --rounds must be at least 1");
    }
    println!("relay alone: {events} events inserted {batch} per transaction before the relay starts; events/s until Kafka acknowledged the last");
    let (mut stream, mut peek) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        for (read, runs) in [(ReadMode::Stream, &mut stream), (ReadMode::Peek, &mut peek)] {
            let rate = bench_relay_once(events, batch, read).await?;
            println!("round {round}: {read:?}: {rate:.0} events/s");
            runs.push(rate);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (s, p) = (median(&mut stream), median(&mut peek));
    println!(
        "median: stream {s:.0} events/s, peek {p:.0} events/s, stream/peek {:.2}",
        s / p
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relay_listens_beside_a_kernel_by_default() {
        assert_eq!(relay_http_addr(&|_| None).unwrap(), Some(RELAY_HTTP_ADDR));
        assert_ne!(
            Some(RELAY_HTTP_ADDR),
            http_addr_from_vars(&|_| None).unwrap(),
            "a kernel's default"
        );
        let set = |v: &'static str| move |n: &str| (n == HTTP_ADDR_VARIABLE).then(|| v.to_owned());
        assert_eq!(
            relay_http_addr(&set("127.0.0.1:9999")).unwrap(),
            Some("127.0.0.1:9999".parse().unwrap())
        );
        assert_eq!(relay_http_addr(&set("off")).unwrap(), None);
    }
}
