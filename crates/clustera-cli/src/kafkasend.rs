//! `clustera portal` and `clustera send`: KafkaSend's two ends.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use clustera_send::client::{Body, Client, Progress, Request};
use clustera_send::config::{PortalConfig, Wire};
use clustera_send::portal::Portal;
use indicatif::{ProgressBar, ProgressStyle};

/// Arguments of `clustera portal` (everything else comes from the environment).
#[derive(Args)]
pub struct PortalArgs {}

/// Where the portal serves `/metrics`, `/healthz` and `/readyz` when `CLUSTERA_HTTP_ADDR` is
/// not set: neither a kernel's 8080 nor the relay's 8081, so all three run on one host with
/// their defaults.
pub const PORTAL_HTTP_ADDR: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8082);

/// Runs the portal until SIGINT or SIGTERM.
pub async fn portal(_args: PortalArgs) -> anyhow::Result<()> {
    let config = PortalConfig::from_env()?;
    let mut kafka = clustera::Config::from_env(
        "kafkasend-portal",
        std::slice::from_ref(&config.wire.request_topic),
    )?;
    if std::env::var_os(clustera::infra::http::HTTP_ADDR_VARIABLE).is_none() {
        kafka.runtime.http_addr = Some(PORTAL_HTTP_ADDR);
    }
    Portal::run(config, kafka, clustera::runtime::signal()).await?;
    Ok(())
}

/// Arguments of `clustera send`.
#[derive(Args)]
pub struct SendArgs {
    /// The endpoint under the portal's API, e.g. /api/v1/upload.
    #[arg(long)]
    endpoint: String,
    /// HTTP method (default: POST with a file, GET without).
    #[arg(long)]
    method: Option<String>,
    /// A request header, NAME=VALUE (repeatable; the portal forwards only allowed ones).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// The request body: a file, or - for standard input.
    #[arg(long)]
    file: Option<PathBuf>,
    /// Where to write the response body (default: standard output).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Seconds to wait for the whole response.
    #[arg(long, default_value_t = 960)]
    timeout: u64,
    /// Bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS).
    #[arg(long)]
    brokers: Option<String>,
    /// Who this client is to the portal, which shares its capacity fairly between clients
    /// (default: the host name).
    #[arg(long, env = "KAFKASEND_CLIENT_ID")]
    client_id: Option<String>,
}

struct Bars {
    upload: ProgressBar,
    download: ProgressBar,
}

impl Bars {
    fn new() -> Self {
        let style = ProgressStyle::with_template(
            "{prefix:>9} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = |prefix: &'static str| {
            let b = ProgressBar::new(0)
                .with_style(style.clone())
                .with_prefix(prefix);
            b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            b
        };
        Self {
            upload: bar("uploading"),
            download: bar("receiving"),
        }
    }
}

impl Progress for Bars {
    fn uploaded(&self, sent: u64, total: u64) {
        self.upload.set_length(total);
        self.upload.set_position(sent);
    }

    fn downloaded(&self, received: u64, total: u64) {
        if !self.upload.is_finished() {
            self.upload.finish();
        }
        self.download.set_length(total);
        self.download.set_position(received);
    }
}

/// Sends one job and writes its response body; fails on an error response or a timeout.
pub async fn send(args: SendArgs) -> anyhow::Result<()> {
    let wire = Wire::from_vars(&clustera::infra::env::env_var)?;
    let mut headers = Vec::new();
    for h in &args.headers {
        let (name, value) = h
            .split_once('=')
            .with_context(|| format!("--header {h:?} is not NAME=VALUE"))?;
        headers.push((name.trim().to_owned(), value.to_owned()));
    }
    // Standard input is spooled to a temporary file first: the head must carry its size and
    // hash before the first chunk.
    let _stdin_copy;
    let body = match &args.file {
        None => Body::Empty,
        Some(p) if p.as_os_str() == "-" => {
            let copy =
                tokio::task::spawn_blocking(|| -> std::io::Result<tempfile::NamedTempFile> {
                    let mut copy = tempfile::NamedTempFile::new()?;
                    std::io::copy(&mut std::io::stdin().lock(), &mut copy)?;
                    Ok(copy)
                })
                .await??;
            let path = copy.path().to_owned();
            _stdin_copy = copy;
            Body::File(path)
        }
        Some(p) => {
            if !p.is_file() {
                bail!("--file {}: not a readable file", p.display());
            }
            Body::File(p.clone())
        }
    };
    let method = args
        .method
        .unwrap_or_else(|| if args.file.is_some() { "POST" } else { "GET" }.to_owned())
        .to_ascii_uppercase();
    let kafka = clustera::Config::tool_from_env(args.brokers.as_deref())?;
    let client = tokio::task::spawn_blocking(move || Client::connect(&kafka, wire))
        .await?
        .context("connecting to Kafka")?;
    let client = match args.client_id {
        Some(id) => client.with_client_id(id),
        None => client,
    };
    let bars = Bars::new();
    let request = Request {
        method,
        endpoint: args.endpoint,
        headers,
    };
    let response = client
        .send(request, body, Duration::from_secs(args.timeout), &bars)
        .await;
    bars.upload.finish_and_clear();
    bars.download.finish_and_clear();
    let response = response?;
    let length = response.body.len();
    let body = response.body;
    let output = args.output.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let mut out: Box<dyn std::io::Write> = match &output {
            Some(p) => Box::new(
                std::fs::File::create(p).with_context(|| format!("--output {}", p.display()))?,
            ),
            None => Box::new(std::io::stdout().lock()),
        };
        let mut offset = 0;
        while offset < length {
            let piece = body.read(offset, 1 << 20)?;
            out.write_all(&piece)?;
            offset += piece.len() as u64;
        }
        out.flush()?;
        Ok(())
    })
    .await??;
    eprintln!("HTTP {} ({length} bytes)", response.status);
    if response.status >= 400 {
        bail!("the API answered HTTP {}", response.status);
    }
    Ok(())
}
