//! `clustera dev`: librdkafka's mock cluster served on a fixed loopback address.
//!
//! The mock brokers listen on random ports; a small TCP forwarder gives them a fixed bootstrap
//! address. Clients bootstrap there and then connect to the brokers' advertised (random)
//! loopback ports, so everything stays on this machine.

use std::net::SocketAddr;

use anyhow::{bail, Context as _};
use clap::Args;
use clustera::testing::MockBroker;
use tokio::net::{TcpListener, TcpStream};

/// Arguments of `clustera dev`.
#[derive(Args)]
pub struct DevArgs {
    /// Fixed bootstrap address to serve.
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: SocketAddr,
    /// Topics to create up front, as NAME:PARTITIONS (others are created on first use with 4).
    #[arg(long = "topic", value_name = "NAME:PARTITIONS")]
    topics: Vec<String>,
    /// Number of mock brokers.
    #[arg(long, default_value_t = 1)]
    brokers: i32,
}

fn parse_topic(spec: &str) -> anyhow::Result<(&str, i32)> {
    let (name, partitions) = match spec.split_once(':') {
        Some((n, p)) => (
            n,
            p.parse()
                .with_context(|| format!("--topic {spec}: PARTITIONS must be a number"))?,
        ),
        None => (spec, 4),
    };
    if name.is_empty() || partitions < 1 {
        bail!("--topic {spec}: expected NAME:PARTITIONS with at least one partition");
    }
    Ok((name, partitions))
}

/// Serves until SIGINT or SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let topics = args
        .topics
        .iter()
        .map(|t| parse_topic(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !args.listen.ip().is_loopback() {
        bail!(
            "--listen {}: the development broker only serves loopback addresses",
            args.listen
        );
    }
    let broker = MockBroker::start(args.brokers).context("starting the mock cluster")?;
    for (name, partitions) in &topics {
        broker
            .create_topic(name, *partitions)
            .with_context(|| format!("creating topic {name}"))?;
    }
    let upstream: SocketAddr = broker
        .bootstrap()
        .split(',')
        .next()
        .unwrap_or_default()
        .parse()
        .context("mock cluster bootstrap address")?;
    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is another broker running?)",
            args.listen
        )
    })?;
    eprintln!(
        "clustera dev: IN-MEMORY development broker (librdkafka mock cluster, {} broker(s)).\n\
         \x20 Data is lost on exit and each partition keeps only about 5 MB: not for volume tests.\n\
         \x20 bootstrap: {}   (brokers: {})\n\
         \x20 Unknown topics are created on first use. Ctrl-C to stop.",
        args.brokers,
        args.listen,
        broker.bootstrap()
    );
    println!("{}", args.listen);
    let serve = async {
        loop {
            match listener.accept().await {
                Ok((client, _)) => {
                    tokio::spawn(forward(client, upstream));
                }
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            }
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = clustera::runtime::signal() => {}
    }
    eprintln!("clustera dev: stopped");
    drop(broker);
    Ok(())
}

async fn forward(mut client: TcpStream, upstream: SocketAddr) {
    match TcpStream::connect(upstream).await {
        Ok(mut server) => {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
        Err(e) => tracing::warn!(error = %e, "cannot reach the mock broker"),
    }
}
