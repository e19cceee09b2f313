//! `clustera outbox`: the CDC outbox pipeline. PostgreSQL from `DATABASE_URL`, Kafka from the
//! runtime's `KAFKA_*` variables (or `--brokers`).

use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use clustera::infra::http::http_addr_from_vars;
use clustera_outbox::relay::wakeup::Wakeups;
use clustera_outbox::relay::{init, Relay, RelayConfig, RelayTelemetry};
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
    /// Create the outbox table, the publication and the replication slot (idempotent).
    Init,
    /// Stream outbox inserts to Kafka as Debezium change events until Ctrl-C.
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
    let url = args
        .database_url
        .context("DATABASE_URL is not set (or pass --database-url)")?;
    let config = RelayConfig::default();
    match args.command {
        OutboxCommand::Init => {
            init(&connect(&url).await?, &config).await?;
            println!(
                "outbox ready: table {}.{}, publication {}, slot {}",
                config.schema, config.table, config.publication, config.slot
            );
        }
        OutboxCommand::Relay { brokers } => {
            let kafka = clustera::Config::tool_from_env(brokers.as_deref())?;
            let http_addr = http_addr_from_vars(&clustera::infra::env::env_var)?;
            let wakeups = Wakeups::listen(&url, &config.channel)
                .await
                .context("listening for outbox notifications")?;
            let telemetry = Arc::new(RelayTelemetry::new(relay_stall()?));
            let relay = Relay::connect(&url, &kafka, config)
                .await
                .context("connecting to DATABASE_URL")?
                .with_wakeups(wakeups)
                .with_telemetry(telemetry.clone());
            // Serves until dropped, at the end of this arm.
            let _http = match http_addr {
                Some(addr) => Some(clustera::infra::serve(addr, telemetry).await?),
                None => None,
            };
            tracing::info!("relaying outbox inserts; Ctrl-C to stop");
            relay.run_until(clustera::runtime::signal()).await?;
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
