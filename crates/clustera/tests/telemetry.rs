//! The operator surface of a running kernel: `/metrics`, `/healthz`, `/readyz`, and logs that
//! never carry secrets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use clustera::config::Secret;
use clustera::{Context, Kernel, KernelError, Message, Outcome, Runtime};

use common::*;

/// Dead-letters every 10th message; blocks while `gate` is closed.
struct Gated {
    gate: Arc<AtomicBool>,
}

impl Kernel for Gated {
    fn name(&self) -> &str {
        "gated"
    }
    fn default_topics(&self) -> Vec<String> {
        vec![]
    }
    async fn process(&self, msg: &Message, _: &mut Context) -> Result<Outcome, KernelError> {
        while !self.gate.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let v: serde_json::Value = msg.json()?;
        if v["seq"].as_u64().unwrap_or(1).is_multiple_of(10) {
            return Ok(Outcome::dead_letter("every tenth"));
        }
        Ok(Outcome::Ack)
    }
}

fn telemetry_config(bootstrap: &str, topic: &str) -> clustera::Config {
    let mut c = config("gated", bootstrap, topic);
    c.runtime.http_addr = Some("127.0.0.1:0".parse().unwrap());
    c.runtime.stall_timeout = Duration::from_secs(1);
    c.properties
        .insert("statistics.interval.ms".into(), Secret::new("200"));
    c
}

async fn get(url: String) -> (u16, String) {
    let r = reqwest::get(&url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// The value of the series whose line starts with `prefix` (name and labels).
fn series(metrics: &str, prefix: &str) -> Vec<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_count_what_was_processed_and_lag_reaches_zero() {
    const N: usize = 2_000;
    let (_broker, bootstrap) = mock_with_sequence(&[("m-in", 4), ("m-in.dlq", 1)], N).await;
    let runtime = Runtime::new(
        telemetry_config(&bootstrap, "m-in"),
        Gated {
            gate: Arc::new(AtomicBool::new(true)),
        },
    );
    let (stats, telemetry) = (runtime.stats(), runtime.telemetry());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run_until(async {
        let _ = rx.await;
    }));
    wait_for("all processed", Duration::from_secs(60), || {
        stats.snapshot().processed() >= N as u64
    })
    .await;
    let addr = telemetry.http_addr().expect("listener bound");
    let url = format!("http://{addr}/metrics");

    // Lag comes from librdkafka's statistics: wait until every partition reports 0.
    let mut last = String::new();
    for _ in 0..100 {
        last = get(url.clone()).await.1;
        let lags = series(&last, "clustera_consumer_lag{");
        if lags.len() == 4 && lags.iter().all(|l| *l == 0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lags = series(&last, "clustera_consumer_lag{");
    assert_eq!(lags, vec![0.0; 4], "lag per partition reaches 0:\n{last}");

    let snapshot = stats.snapshot();
    let total = |outcome: &str| -> f64 {
        series(&last, "clustera_messages_total{")
            .into_iter()
            .zip(
                last.lines()
                    .filter(|l| l.starts_with("clustera_messages_total{")),
            )
            .filter(|(_, line)| line.contains(&format!("outcome=\"{outcome}\"")))
            .map(|(v, _)| v)
            .sum()
    };
    assert_eq!(total("ack"), snapshot.acked as f64, "{last}");
    assert_eq!(total("dead_letter"), snapshot.dead_lettered as f64);
    assert_eq!(snapshot.dead_lettered, (N / 10) as u64);
    assert_eq!(
        series(&last, "clustera_dead_letters_total{")
            .iter()
            .sum::<f64>(),
        (N / 10) as f64
    );
    assert_eq!(series(&last, "clustera_assigned_partitions{"), vec![4.0]);
    assert_eq!(
        series(&last, "clustera_processing_duration_seconds_count{")
            .iter()
            .sum::<f64>(),
        N as f64
    );
    assert!(last.contains("kernel=\"gated\""));
    assert!(last.contains("# EOF"), "OpenMetrics text");
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn healthz_fails_while_processing_is_stalled_and_recovers_readyz_follows_the_group() {
    let (_broker, bootstrap) = mock_with_sequence(&[("h-in", 2)], 200).await;
    let gate = Arc::new(AtomicBool::new(false));
    let runtime = Runtime::new(
        telemetry_config(&bootstrap, "h-in"),
        Gated { gate: gate.clone() },
    );
    let telemetry = runtime.telemetry();
    let stats = runtime.stats();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(runtime.run_until(async {
        let _ = rx.await;
    }));
    wait_for("the listener", Duration::from_secs(10), || {
        telemetry.http_addr().is_some()
    })
    .await;
    let base = format!("http://{}", telemetry.http_addr().unwrap());

    // Not ready before joining the group (the mock delays the first join by about 3 s).
    let (status, body) = get(format!("{base}/readyz")).await;
    assert_eq!(status, 503, "{body}");
    let t = telemetry.clone();
    wait_for("readiness", Duration::from_secs(30), move || {
        t.health.readiness().ok
    })
    .await;
    assert_eq!(get(format!("{base}/readyz")).await.0, 200);

    // The kernel is blocked: after the stall timeout liveness fails, naming the partitions.
    let mut unhealthy = None;
    for _ in 0..100 {
        let (status, body) = get(format!("{base}/healthz")).await;
        if status == 503 {
            unhealthy = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = unhealthy.expect("healthz turned unhealthy while processing was stalled");
    assert!(
        body.contains("h-in[") && body.contains("no message finished"),
        "{body}"
    );

    // Unblocked: progress resumes and liveness recovers.
    gate.store(true, Ordering::Relaxed);
    wait_for("processing", Duration::from_secs(30), || {
        stats.snapshot().processed() >= 200
    })
    .await;
    let mut healthy = false;
    for _ in 0..100 {
        if get(format!("{base}/healthz")).await.0 == 200 {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(healthy, "healthz recovered after the stall ended");
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs() {
    let (_broker, bootstrap) = mock_with_sequence(&[("s-in", 1)], 10).await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let cert = include_str!("../src/config/testdata/client.crt");
    let key = include_str!("../src/config/testdata/client.key");
    let password = "pa55-w0rd-that-must-not-leak";
    let mut child = Command::new(example_bin("transform"))
        .env_clear()
        .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
        .env("KAFKA_TOPIC", "s-in")
        .env("KAFKA_CA_CERT", b64(cert))
        .env("KAFKA_CLIENT_CERT", b64(cert))
        .env("KAFKA_CLIENT_KEY", b64(key))
        .env("KAFKA_SASL_MECHANISM", "PLAIN")
        .env("KAFKA_SASL_USERNAME", "user")
        .env("KAFKA_SASL_PASSWORD", password)
        // librdkafka's own debug output, all of it, through our subscriber.
        .env("KAFKA_PROPERTY_DEBUG", "all")
        .env("RUST_LOG", "trace")
        .env("CLUSTERA_HTTP_ADDR", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The TLS handshake with the plaintext mock fails and is retried, logging as it goes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let logs =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        logs.lines().count() > 20,
        "the kernel logged (debug): {} lines",
        logs.lines().count()
    );
    assert!(!logs.contains(password), "password leaked");
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let cert_body: String = cert.lines().filter(|l| !l.starts_with("-----")).collect();
    for (what, secret) in [("key", &key_body), ("certificate", &cert_body)] {
        for chunk in secret.as_bytes().chunks(32) {
            let chunk = std::str::from_utf8(chunk).unwrap();
            assert!(!logs.contains(chunk), "{what} material leaked: {chunk}");
        }
    }
    assert!(!logs.contains(&b64(key)[..40]), "base64 key leaked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_is_continued_into_every_output() {
    let (_broker, bootstrap) = mock_with_sequence(&[("tr-in", 2), ("tr-out", 2)], 0).await;
    let trace = |i: usize| format!("00-{:032x}-{:016x}-01", 0xabc0 + i, 0x1000 + i);
    let b = bootstrap.clone();
    blocking(move || {
        clustera::testing::kafka::produce(
            &b,
            "tr-in",
            (0..20).map(|i| {
                let headers = if i % 2 == 0 {
                    vec![
                        ("traceparent".to_owned(), trace(i)),
                        ("tracestate".to_owned(), "vendor=1".to_owned()),
                    ]
                } else {
                    Vec::new()
                };
                (
                    Some(format!("k{i}").into_bytes()),
                    format!("{{\"seq\":{i}}}").into_bytes(),
                    headers,
                )
            }),
        )
        .unwrap()
    })
    .await;
    let running = start(
        config("copy", &bootstrap, "tr-in"),
        SlowCopy {
            output: "tr-out".into(),
            delay: Duration::ZERO,
        },
    );
    let stats = running.stats.clone();
    wait_for("processing", Duration::from_secs(30), || {
        stats.snapshot().processed() >= 20
    })
    .await;
    running.stop().await;
    let b = bootstrap.clone();
    let (inputs, outputs) = blocking(move || {
        (
            clustera::testing::kafka::read_topic(&b, "tr-in").unwrap(),
            clustera::testing::kafka::read_topic(&b, "tr-out").unwrap(),
        )
    })
    .await;
    assert_eq!(outputs.len(), 20);
    for (out, (p, o)) in outputs.iter().zip(transform_sources(&outputs)) {
        let input = inputs
            .iter()
            .find(|m| m.partition == p && m.offset == o)
            .unwrap();
        match input.header("traceparent") {
            None => assert_eq!(out.header("traceparent"), None, "no trace in, none out"),
            Some(tp) => {
                let got = out.header("traceparent").expect("trace continued");
                let (want, have): (Vec<&str>, Vec<&str>) =
                    (tp.split('-').collect(), got.split('-').collect());
                assert_eq!(have[0], "00");
                assert_eq!(have[1], want[1], "same trace id");
                assert_ne!(have[2], want[2], "a new span id for the processing span");
                assert_eq!(have[3], want[3], "same flags");
                assert_eq!(out.header("tracestate").as_deref(), Some("vendor=1"));
            }
        }
    }
}
