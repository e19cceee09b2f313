//! `clustera dev`: librdkafka's mock cluster served on a fixed loopback address.
//!
//! The mock brokers listen on random ports; a small TCP forwarder gives them a fixed bootstrap
//! address. Clients bootstrap there and then connect to the brokers' advertised (random)
//! loopback ports, so everything stays on this machine. With `--control ADDR`, an HTTP API on
//! that loopback address injects faults (see [`crate::control`] and `clustera fault`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::Args;
use clustera::testing::MockBroker;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::control::{self, Cluster, ControlRequest, Faults};

/// Arguments of `clustera dev`.
#[derive(Args)]
pub struct DevArgs {
    /// Fixed bootstrap address to serve (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: SocketAddr,
    /// Topics to create up front, as NAME:PARTITIONS (others are created on first use with 4).
    #[arg(long = "topic", value_name = "NAME:PARTITIONS")]
    topics: Vec<String>,
    /// Number of mock brokers (`--brokers` is a deprecated spelling).
    #[arg(
        long = "broker-count",
        alias = "brokers",
        default_value_t = 1,
        value_parser = clap::value_parser!(i32).range(1..=100)
    )]
    broker_count: i32,
    /// Serve the fault-injection API (`clustera fault`) on this loopback address.
    #[arg(long, value_name = "ADDR")]
    control: Option<SocketAddr>,
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

impl Faults for MockBroker {
    fn broker_down(&self, id: i32) -> Result<(), String> {
        self.cluster().broker_down(id).map_err(|e| e.to_string())
    }

    fn broker_up(&self, id: i32) -> Result<(), String> {
        self.cluster().broker_up(id).map_err(|e| e.to_string())
    }

    fn broker_rtt(&self, id: i32, rtt: Duration) -> Result<(), String> {
        self.cluster()
            .broker_round_trip_time(id, rtt)
            .map_err(|e| e.to_string())
    }

    fn push_errors(&self, api: RDKafkaApiKey, errors: &[RDKafkaRespErr]) {
        self.cluster().request_errors(api, errors);
    }

    fn clear_errors(&self, api: RDKafkaApiKey) {
        self.cluster().clear_request_errors(api);
    }
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
    if let Some(control) = args.control {
        if !control.ip().is_loopback() {
            bail!("--control {control}: the control API only serves loopback addresses");
        }
    }
    let broker = MockBroker::start(args.broker_count).context("starting the mock cluster")?;
    for (name, partitions) in &topics {
        broker
            .create_topic(name, *partitions)
            .with_context(|| format!("creating topic {name}"))?;
    }
    let upstreams = broker
        .bootstrap()
        .split(',')
        .map(|a| a.parse::<SocketAddr>())
        .collect::<Result<Vec<_>, _>>()
        .context("mock cluster bootstrap address")?;
    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "cannot listen on {} (is another broker running?)",
            args.listen
        )
    })?;
    let listen = listener.local_addr()?;
    let control_listener = match args.control {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot serve the control API on {addr}"))?,
        ),
        None => None,
    };
    let control_addr = control_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    eprintln!(
        "clustera dev: IN-MEMORY development broker (librdkafka mock cluster, {} broker(s)).\n\
         \x20 Data is lost on exit and each partition keeps only about 5 MB: not for volume tests.\n\
         \x20 bootstrap: {listen}   (brokers: {})\n\
         \x20 Unknown topics are created on first use. Ctrl-C to stop.\n\
         \x20 Consumers: set group.protocol=consumer (KAFKA_GROUP_PROTOCOL=consumer for\n\
         \x20 kernels): with this KIP-848 protocol a member restarted after a clean stop gets its\n\
         \x20 partitions at once, where the classic protocol makes it wait out the session\n\
         \x20 timeout (about 45 s).",
        args.broker_count,
        broker.bootstrap()
    );
    if let Some(addr) = control_addr {
        eprintln!("  control API: http://{addr}   (clustera fault --control {addr} down --for 10)");
    }
    // Machine-readable: the bootstrap address, then the control API's URL.
    println!("{listen}");
    if let Some(addr) = control_addr {
        println!("http://{addr}");
    }

    let (tx, mut rx) = mpsc::channel::<ControlRequest>(16);
    let server = async move {
        match control_listener {
            Some(l) => axum::serve(l, control::router(args.broker_count, tx)).await,
            None => {
                drop(tx);
                std::future::pending().await
            }
        }
    };
    let forwarder = serve_bootstrap(listener, upstreams.into());
    let shutdown = clustera::runtime::signal();
    tokio::pin!(server, forwarder, shutdown);
    let mut cluster = Cluster::new(args.broker_count, listen.to_string());
    loop {
        let wake = cluster.next_up_at();
        let timer = async move {
            match wake {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut forwarder => {}
            _ = &mut shutdown => break,
            served = &mut server => {
                served.context("control API")?;
                break;
            }
            Some((action, reply)) = rx.recv() => {
                let now = Instant::now();
                let result = match &action {
                    Some(action) => cluster.apply(&broker, action, now),
                    None => Ok(String::new()),
                };
                match &result {
                    Ok(message) if !message.is_empty() => eprintln!("clustera dev: {message}"),
                    Ok(_) => {}
                    Err(refusal) => eprintln!("clustera dev: control request failed: {refusal}"),
                }
                let _ = reply.send(result.map(|m| (m, cluster.describe(now))));
            }
            _ = timer => {
                for id in cluster.bring_up_due(&broker, Instant::now()) {
                    eprintln!("clustera dev: broker {id} up again");
                }
            }
        }
    }
    eprintln!("clustera dev: stopped");
    drop(broker);
    Ok(())
}

/// Accepts bootstrap connections and forwards each to the first mock broker that takes it.
async fn serve_bootstrap(listener: TcpListener, upstreams: Arc<[SocketAddr]>) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(forward(client, upstreams.clone()));
            }
            Err(e) => tracing::warn!(error = %e, "accept failed"),
        }
    }
}

async fn forward(mut client: TcpStream, upstreams: Arc<[SocketAddr]>) {
    for upstream in upstreams.iter() {
        if let Ok(mut server) = TcpStream::connect(upstream).await {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            return;
        }
    }
    // Expected while brokers are down through the control API, which says so itself.
    tracing::debug!("cannot reach any mock broker: closing the bootstrap connection");
}
