//! Page server time of the console with 1,000 topics and 100 consumer groups, against a
//! baseline of one topic and one group, side by side on the same machine.
//!
//! `cargo run --release -p clustera-console --example bench_pages [-- ROUNDS]`
//!
//! Each setup is a fresh development broker (librdkafka's mock cluster) in this process, with
//! the console serving it on loopback; every page is requested ROUNDS times (default 20) after
//! the lag sampler has seen every group, and the median and 95th percentile of the response
//! time are printed (loopback: response time is the server's time plus well under 1 ms).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use clustera::telemetry::status::{StatusRecord, STATUS_VERSION};
use clustera::testing::{kafka, MockBroker};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const PAGES: [&str; 7] = [
    "/",
    "/topics",
    "/groups",
    "/kernels",
    "/dlq",
    "/groups/group-0",
    "/topics/topic-0",
];

struct Setup {
    _broker: MockBroker,
    url: String,
}

async fn setup(topics: usize, groups: usize) -> Setup {
    let broker = MockBroker::start(1).unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    broker.create_topic("clustera.status", 1).unwrap();
    broker.create_topic("clustera.console.handled", 1).unwrap();
    for i in 0..topics {
        // One in ten is a dead-letter topic.
        let name = if i % 10 == 9 {
            format!("topic-{i}.dlq")
        } else {
            format!("topic-{i}")
        };
        broker.create_topic(&name, 2).unwrap();
    }
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        kafka::produce(
            &b,
            "topic-0",
            (0..100).map(|i| (None, format!("{{\"n\":{i}}}").into_bytes(), vec![])),
        )
        .unwrap();
        let now = clustera_console::now_ms();
        let mut statuses = Vec::new();
        for g in 0..groups {
            let group = format!("group-{g}");
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &b)
                .set("group.id", &group)
                .create()
                .unwrap();
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(
                &format!("topic-{}", g * 10 % topics.max(1)),
                0,
                Offset::Offset(0),
            )
            .unwrap();
            consumer.commit(&tpl, CommitMode::Sync).unwrap();
            let r = StatusRecord {
                version: STATUS_VERSION,
                kernel: format!("kernel-{g}"),
                group,
                client_id: format!("client-{g}"),
                host: "bench".into(),
                pid: 1,
                topics: vec![],
                started_ms: now,
                at_ms: now,
                interval_ms: 3_600_000,
                assigned_partitions: 1,
                in_flight: 0,
                processed: 0,
                dead_lettered: 0,
                retries: 0,
                errors: 0,
                processed_per_s: 0.0,
                dead_lettered_per_s: 0.0,
                retries_per_s: 0.0,
                errors_per_s: 0.0,
                live: true,
                ready: true,
                problems: vec![],
            };
            statuses.push((
                Some(r.key().into_bytes()),
                serde_json::to_vec(&r).unwrap(),
                vec![],
            ));
        }
        kafka::produce(&b, "clustera.status", statuses).unwrap();
    })
    .await
    .unwrap();
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &bootstrap);
    let mut options = clustera_console::Options::new(client);
    options.sample_interval = Duration::from_secs(1);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(clustera_console::serve(
        listener,
        options,
        std::future::pending(),
    ));
    // Until the sampler has seen every group (the overview then shows each one's lag).
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let page = http
            .get(format!("{url}/groups"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if page.matches("/groups/group-").count() == groups && !page.contains('…') {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the sampler did not see every group within 300 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Setup {
        _broker: broker,
        url,
    }
}

async fn measure(url: &str, rounds: usize) -> Vec<(Duration, Duration)> {
    let http = reqwest::Client::new();
    let mut out = Vec::new();
    for page in PAGES {
        let mut times = Vec::new();
        for _ in 0..rounds {
            let t = Instant::now();
            let r = http.get(format!("{url}{page}")).send().await.unwrap();
            assert!(r.status().is_success(), "{page}: {}", r.status());
            let _ = r.bytes().await.unwrap();
            times.push(t.elapsed());
        }
        times.sort();
        out.push((
            times[times.len() / 2],
            times[(times.len() * 95 / 100).min(times.len() - 1)],
        ));
    }
    out
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(20, |r| r.parse().expect("ROUNDS is a number"));
    let baseline = setup(1, 1).await;
    let loaded = setup(1000, 100).await;
    // Both setups live in this process at once; the baseline is measured first.
    let base = measure(&baseline.url, rounds).await;
    let load = measure(&loaded.url, rounds).await;
    println!(
        "{:<18} {:>14} {:>14} {:>16} {:>16} {:>7}",
        "page", "base median", "base p95", "1000/100 median", "1000/100 p95", "ratio"
    );
    for ((page, b), l) in PAGES.iter().zip(&base).zip(&load) {
        println!(
            "{page:<18} {:>12.1}ms {:>12.1}ms {:>14.1}ms {:>14.1}ms {:>6.1}x",
            b.0.as_secs_f64() * 1e3,
            b.1.as_secs_f64() * 1e3,
            l.0.as_secs_f64() * 1e3,
            l.1.as_secs_f64() * 1e3,
            l.0.as_secs_f64() / b.0.as_secs_f64().max(1e-9)
        );
    }
}
