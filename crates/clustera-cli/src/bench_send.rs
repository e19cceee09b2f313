//! `clustera bench-send`: KafkaSend's round trip against a direct HTTP call of the same body
//! to the same server, and the portal's memory during a large transfer.
//!
//! The REST API is an in-process server on loopback (echo, a streaming upload that only
//! hashes, a streaming generated download). The portal runs as its own process
//! (`clustera portal`), so its resident memory can be read from `/proc`. The broker is tansu
//! (librdkafka's mock cluster keeps only about 5 MB per partition) unless `--brokers` names
//! another.

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use axum::body::{Body as HttpBody, Bytes};
use axum::extract::Path;
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use clustera::testing::{kafka, process_memory, Tansu};
use clustera_send::client::{Body, Client, Quiet, Request};
use clustera_send::config::Wire;
use futures::StreamExt;
use sha2::Digest;

/// Arguments of `clustera bench-send`.
#[derive(Args)]
pub struct BenchSendArgs {
    /// Megabytes in the round trip (up and back).
    #[arg(long, default_value_t = 50)]
    mb: usize,
    /// Rounds of the round trip and of the direct call.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Megabytes uploaded, then downloaded, while the portal's memory is watched (0: skip).
    #[arg(long, default_value_t = 500)]
    rss_mb: usize,
    /// Use this broker instead of starting tansu.
    #[arg(long)]
    brokers: Option<String>,
}

const REQUESTS: &str = "kafkasend-requests";
const RESPONSES: &str = "kafkasend-responses";

async fn api() -> anyhow::Result<String> {
    let app = Router::new()
        .route("/api/echo", post(|body: Bytes| async move { body }))
        .route(
            "/api/upload",
            post(|body: HttpBody| async move {
                let mut stream = body.into_data_stream();
                let (mut hasher, mut n) = (sha2::Sha256::new(), 0usize);
                while let Some(Ok(piece)) = stream.next().await {
                    hasher.update(&piece);
                    n += piece.len();
                }
                format!("{n} {}", hex::encode(hasher.finalize()))
            }),
        )
        .route(
            "/api/blob/{n}",
            get(|Path(n): Path<usize>| async move {
                let piece = Bytes::from(vec![0x5a; 1 << 20]);
                let pieces = n.div_ceil(1 << 20);
                let stream = futures::stream::iter((0..pieces).map(move |i| {
                    let len = (n - i * (1 << 20)).min(1 << 20);
                    Ok::<_, std::io::Error>(piece.slice(..len))
                }));
                HttpBody::from_stream(stream)
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::disable());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/api", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

struct Portal(Child);

impl Drop for Portal {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) used by `pid` so far.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat, 11 and 12 after the name and state.
    Ok((ticks(11) + ticks(12)) / 100.0)
}

fn temp_file(mb: usize) -> anyhow::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::NamedTempFile::new()?;
    let block: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    for _ in 0..mb {
        file.write_all(&block)?;
    }
    file.flush()?;
    Ok(file)
}

fn request(method: &str, endpoint: &str) -> Request {
    Request {
        method: method.into(),
        endpoint: endpoint.into(),
        headers: vec![("Content-Type".into(), "application/octet-stream".into())],
    }
}

/// Runs the benchmark and prints throughputs, their ratio and the portal's memory growth.
pub async fn run(args: BenchSendArgs) -> anyhow::Result<()> {
    let tansu = match &args.brokers {
        Some(_) => None,
        None => Some(
            tokio::task::spawn_blocking(Tansu::start)
                .await?
                .map_err(anyhow::Error::msg)?,
        ),
    };
    let bootstrap = match (&args.brokers, &tansu) {
        (Some(b), _) => b.clone(),
        (None, Some(t)) => t.bootstrap().to_owned(),
        (None, None) => unreachable!("tansu is started without --brokers"),
    };
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        for topic in [REQUESTS, RESPONSES] {
            kafka::create_topic(b.as_str(), topic, 3)?;
        }
        kafka::create_topic(b.as_str(), &format!("{REQUESTS}.dlq"), 1)?;
        Ok(())
    })
    .await??;
    let api = api().await?;
    let portal = Portal(
        Command::new(std::env::current_exe()?)
            .arg("portal")
            .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
            .env("PORTAL_API_BASE_URL", &api)
            .env("PORTAL_ALLOWED_ENDPOINTS", "/echo,/upload,/blob/*")
            .env("CLUSTERA_HTTP_ADDR", "off")
            // tansu, like the mock cluster, answers a fetch with no data only when its wait
            // expires (Kafka answers as soon as data arrives): keep the wait short.
            .env("KAFKA_PROPERTY_FETCH_WAIT_MAX_MS", "10")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .context("starting `clustera portal`")?,
    );
    let pid = portal.0.id();
    let kafka = clustera::Config::for_brokers("bench-send", &bootstrap, &[]);
    let wire = Wire::from_vars(&|_| None)?;
    let client = tokio::task::spawn_blocking(move || Client::connect(&kafka, wire)).await??;
    // Ready once a small job goes through (the portal has joined its group).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ping = client
            .send(
                request("POST", "/echo"),
                Body::Bytes(b"ping".to_vec()),
                Duration::from_secs(5),
                &Quiet,
            )
            .await;
        if ping.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the portal did not answer within 60 s: {:?}", ping.err());
        }
    }
    let idle_rss = process_memory(pid)?.rss_kb;

    let file = temp_file(args.mb)?;
    let body = std::fs::read(file.path())?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    println!(
        "{} MB round trip (up through Kafka, the API echoes it, back through Kafka):",
        args.mb
    );
    let mut ratios = Vec::new();
    for round in 1..=args.rounds {
        let started = Instant::now();
        let echoed = http
            .post(format!("{api}/echo"))
            .body(body.clone())
            .send()
            .await?
            .bytes()
            .await?;
        let direct = started.elapsed();
        if echoed.len() != body.len() {
            bail!("the direct echo returned {} bytes", echoed.len());
        }
        let cpu = (cpu_seconds(pid)?, cpu_seconds(std::process::id())?);
        let started = Instant::now();
        let response = client
            .send(
                request("POST", "/echo"),
                Body::File(file.path().to_owned()),
                Duration::from_secs(600),
                &Quiet,
            )
            .await?;
        let through = started.elapsed();
        let cpu = (
            cpu_seconds(pid)? - cpu.0,
            cpu_seconds(std::process::id())? - cpu.1,
        );
        if response.body.len() != body.len() as u64 {
            bail!("the round trip returned {} bytes", response.body.len());
        }
        let mb = args.mb as f64;
        let ratio = direct.as_secs_f64() / through.as_secs_f64();
        ratios.push(ratio);
        println!(
            "  round {round}: KafkaSend {:>7.1} MB/s ({:.2} s; CPU s: portal {:.2}, client and API {:.2})   direct HTTP {:>7.1} MB/s ({:.3} s)   ratio {ratio:.3}",
            mb / through.as_secs_f64(),
            through.as_secs_f64(),
            cpu.0,
            cpu.1,
            mb / direct.as_secs_f64(),
            direct.as_secs_f64()
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "  median ratio (KafkaSend / direct): {:.3}",
        ratios[ratios.len() / 2]
    );
    drop(body);

    if args.rss_mb > 0 {
        let big = temp_file(args.rss_mb)?;
        let started = Instant::now();
        let up = client
            .send(
                request("POST", "/upload"),
                Body::File(big.path().to_owned()),
                Duration::from_secs(1800),
                &Quiet,
            )
            .await?;
        let up_time = started.elapsed();
        let answer = up.body.read(0, 200)?;
        let started = Instant::now();
        let n = args.rss_mb << 20;
        let down = client
            .send(
                request("GET", &format!("/blob/{n}")),
                Body::Empty,
                Duration::from_secs(1800),
                &Quiet,
            )
            .await?;
        let down_time = started.elapsed();
        if down.body.len() != n as u64 {
            bail!("the download returned {} bytes", down.body.len());
        }
        let peak = process_memory(pid)?.peak_kb;
        println!(
            "{} MB up in {:.1} s (API saw: {}), {} MB down in {:.1} s",
            args.rss_mb,
            up_time.as_secs_f64(),
            String::from_utf8_lossy(&answer)
                .split(' ')
                .next()
                .unwrap_or("?"),
            args.rss_mb,
            down_time.as_secs_f64()
        );
        println!(
            "portal resident memory: {:.1} MB when idle, peak {:.1} MB: growth {:.1} MB",
            idle_rss as f64 / 1024.0,
            peak as f64 / 1024.0,
            (peak.saturating_sub(idle_rss)) as f64 / 1024.0
        );
    }
    drop(portal);
    Ok(())
}
