//! `clustera console`: the web UI (crate `clustera-console`) on the same `KAFKA_*` settings
//! as every other command.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Args;

use crate::connect::{connect, BrokerArgs};

/// Arguments of `clustera console`.
#[derive(Args)]
pub struct ConsoleArgs {
    #[command(flatten)]
    brokers: BrokerArgs,
    /// Address to serve (default: loopback only, port 9021, clear of kernels' 8080 and the
    /// relay's 8081).
    #[arg(long, default_value = clustera_console::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Hide and refuse every mutating action (produce, replay, mark handled, offset reset).
    #[arg(long)]
    read_only: bool,
    /// How often each group's lag is sampled for the charts, in seconds.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    sample_seconds: u64,
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(args: ConsoleArgs) -> anyhow::Result<()> {
    let brokers = args.brokers.clone();
    let client = tokio::task::spawn_blocking(move || connect(&brokers)).await??;
    let mut options = clustera_console::Options::new(client);
    options.read_only = args.read_only;
    options.token = std::env::var("CLUSTERA_CONSOLE_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    options.dlq_topic = std::env::var("CLUSTERA_DLQ_TOPIC")
        .ok()
        .filter(|t| !t.is_empty());
    if let Some(t) = std::env::var("CLUSTERA_STATUS_TOPIC")
        .ok()
        .filter(|t| !t.is_empty() && t != "off")
    {
        options.status_topic = t;
    }
    options.sample_interval = std::time::Duration::from_secs(args.sample_seconds);
    if options.token.is_none() && !args.listen.ip().is_loopback() {
        eprintln!(
            "clustera console: WARNING: serving {} without CLUSTERA_CONSOLE_TOKEN",
            args.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    eprintln!(
        "clustera console: {}{}",
        clustera_console::url(addr),
        if args.read_only { " (read-only)" } else { "" }
    );
    // Machine-readable: the URL alone on stdout.
    println!("{}", clustera_console::url(addr));
    clustera_console::serve(listener, options, clustera::runtime::signal()).await?;
    Ok(())
}
