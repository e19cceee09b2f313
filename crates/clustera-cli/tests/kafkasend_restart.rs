//! `clustera portal` killed (SIGKILL) in the middle of a 20 MB upload job and started again:
//! the job's request is read again, the API is called again with the same `Idempotency-Key`,
//! and the client gets exactly one answer. On tansu, since librdkafka's mock cluster keeps
//! only about 5 MB per partition and the job's messages all go to one partition.
//!
//! The group protocol: KIP-848 (`group.protocol=consumer`) would hand the partition to the
//! restarted portal without a classic rebalance, but tansu 0.6 does not serve it (a portal
//! asking for it is never assigned anything), and a killed member holds its partitions until
//! its session expires under either protocol. So the portals use the classic protocol with a
//! short session timeout: the restarted portal takes the partition once the killed one's
//! session (6 s) has expired.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use clustera::testing::{kafka, Tansu};
use clustera_send::client::{Body, Client, Quiet, Request};
use clustera_send::config::Wire;
use clustera_send_protocol::Envelope;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_clustera");
const REQUESTS: &str = "kafkasend-requests";
const RESPONSES: &str = "kafkasend-responses";
const SIZE: usize = 20 * 1024 * 1024;

/// What the API saw: one `Idempotency-Key` per call, and how many bodies arrived whole.
#[derive(Default)]
struct Calls {
    keys: Mutex<Vec<Option<String>>>,
    whole: AtomicUsize,
}

/// An upload API on loopback whose first call never answers (the portal is killed during
/// it); later calls answer with the body's size and SHA-256.
async fn api(calls: Arc<Calls>) -> String {
    let app = Router::new()
        .route(
            "/api/v1/upload",
            post(
                |State(calls): State<Arc<Calls>>, h: HeaderMap, body: Bytes| async move {
                    let key = h
                        .get("idempotency-key")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let first = {
                        let mut keys = calls.keys.lock().unwrap();
                        keys.push(key);
                        keys.len() == 1
                    };
                    if body.len() == SIZE {
                        calls.whole.fetch_add(1, Ordering::SeqCst);
                    }
                    if first {
                        std::future::pending::<()>().await;
                    }
                    axum::Json(serde_json::json!({
                        "size": body.len(),
                        "sha256": hex::encode(Sha256::digest(&body)),
                    }))
                },
            ),
        )
        .layer(DefaultBodyLimit::disable())
        .with_state(calls);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A portal process, killed (SIGKILL) when dropped.
struct Portal(Child);

impl Portal {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Portal {
    fn drop(&mut self) {
        self.kill();
    }
}

fn portal(bootstrap: &str, api: &str) -> Portal {
    let child = Command::new(BIN)
        .arg("portal")
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
        .env("PORTAL_API_BASE_URL", api)
        .env("PORTAL_ALLOWED_ENDPOINTS", "/v1/upload")
        .env("PORTAL_ALLOWED_HEADERS", "Content-Type")
        .env("KAFKA_PROPERTY_SESSION_TIMEOUT_MS", "6000")
        .env("KAFKA_PROPERTY_HEARTBEAT_INTERVAL_MS", "1000")
        .env("KAFKA_PROPERTY_FETCH_WAIT_MAX_MS", "10")
        .env("CLUSTERA_HTTP_ADDR", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Portal(child)
}

/// Waits for `what`, polling every 50 ms (no deadline is asserted beyond `limit`).
async fn until(what: &str, limit: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_portal_killed_mid_job_runs_it_again_after_a_restart_and_answers_once() {
    let tansu = tokio::task::spawn_blocking(|| {
        let dead_letters = format!("{REQUESTS}.dlq");
        Tansu::start_with_topics(&[(REQUESTS, 1), (RESPONSES, 1), (&dead_letters, 1)])
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}"));
    let bootstrap = tansu.bootstrap().to_owned();
    let calls = Arc::new(Calls::default());
    let api = api(calls.clone()).await;
    let mut first = portal(&bootstrap, &api);

    let mut config = clustera::Config::for_brokers("kafkasend-test-client", &bootstrap, &[]);
    config.properties.insert(
        "fetch.wait.max.ms".into(),
        clustera::config::Secret::new("10"),
    );
    let wire = Wire::from_vars(&|_| None).unwrap();
    let client = Arc::new(
        tokio::task::spawn_blocking(move || Client::connect(&config, wire))
            .await
            .unwrap()
            .unwrap(),
    );
    let body: Vec<u8> = (0..SIZE as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(&body).unwrap();
    file.flush().unwrap();
    let sending = {
        let (client, path) = (client.clone(), file.path().to_owned());
        tokio::spawn(async move {
            client
                .send(
                    Request {
                        method: "POST".into(),
                        endpoint: "/v1/upload".into(),
                        headers: vec![("Content-Type".into(), "application/octet-stream".into())],
                    },
                    Body::File(path),
                    Duration::from_secs(600),
                    &Quiet,
                )
                .await
        })
    };

    // The whole request reached the API, which holds the call: kill the portal now.
    until("the first call", Duration::from_secs(300), || {
        calls.whole.load(Ordering::SeqCst) == 1
    })
    .await;
    first.kill();
    let second = portal(&bootstrap, &api);

    let response = sending.await.unwrap().unwrap();
    assert_eq!(response.status, 200);
    let answer: serde_json::Value = serde_json::from_slice(
        &response
            .body
            .read(0, usize::try_from(response.body.len()).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(answer["size"], SIZE);
    assert_eq!(answer["sha256"], hex::encode(Sha256::digest(&body)));

    // Two calls, whole, with the same key naming the job.
    let keys = calls.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(calls.whole.load(Ordering::SeqCst), 2);
    assert!(keys[0].is_some() && keys[0] == keys[1], "{keys:?}");

    // Exactly one answer on the response topic, for that job.
    let b = bootstrap.clone();
    let answers: Vec<(Vec<u8>, Envelope)> =
        tokio::task::spawn_blocking(move || kafka::read_topic(b.as_str(), RESPONSES).unwrap())
            .await
            .unwrap()
            .into_iter()
            .filter_map(|r| Some((r.key?, Envelope::decode(r.value.as_deref()?).ok()?)))
            .filter(|(_, e)| matches!(e, Envelope::Response(_) | Envelope::Error(_)))
            .collect();
    assert_eq!(answers.len(), 1, "one answer for the job");
    let job = String::from_utf8(answers[0].0.clone()).unwrap();
    assert_eq!(keys[0].as_deref(), Some(format!("\"{job}\"").as_str()));
    assert_eq!(client.duplicate_answers(), 0);
    drop(second);
}
