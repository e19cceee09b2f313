//! Admission that one client cannot exhaust, on the mock cluster with a real API on loopback:
//! places shared fairly between client ids, bytes counted as they arrive (never as declared),
//! a first-chunk timeout, a minimum chunk size, response bodies within the limits, and
//! duplicate heads on every partition admitted once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use clustera::testing::kafka;
use clustera_send::client::{Body, ClientError, Quiet, Request};
use clustera_send::transport::JobProducer;
use clustera_send_protocol::{BodyInfo, Chunker, Envelope, ErrorCode, JobId, RequestHead};
use common::*;
use rdkafka::producer::{FutureProducer, FutureRecord};

const T: Duration = Duration::from_secs(60);

fn head(job: JobId, client: &str, method: &str, endpoint: &str, body: BodyInfo) -> Vec<u8> {
    Envelope::Request(RequestHead {
        job_id: job,
        method: method.into(),
        endpoint: endpoint.into(),
        headers: vec![],
        body,
        sent_at_ms: 0,
        client_id: Some(client.into()),
        reply_to: None,
    })
    .encode()
}

/// A body the head only declares: its SHA-256 is never checked, since no chunk comes.
fn declared(size: u64, chunk_size: u32) -> BodyInfo {
    BodyInfo {
        size,
        sha256: "00".repeat(32),
        total_chunks: clustera_send_protocol::chunk_count(size, chunk_size),
        chunk_size,
    }
}

fn producer(bootstrap: &str) -> JobProducer {
    JobProducer::new(
        &clustera::Config::for_brokers("admission-test", bootstrap, &[]),
        REQUESTS,
    )
    .unwrap()
}

/// Every answer (response head or error) on the response topic, by job.
async fn answers(bootstrap: &str) -> HashMap<JobId, Vec<Envelope>> {
    let b = bootstrap.to_owned();
    let records = tokio::task::spawn_blocking(move || kafka::read_topic(&b, RESPONSES).unwrap())
        .await
        .unwrap();
    let mut by_job: HashMap<JobId, Vec<Envelope>> = HashMap::new();
    for r in records {
        let e = Envelope::decode(r.value.as_deref().unwrap()).unwrap();
        if matches!(e, Envelope::Response(_) | Envelope::Error(_)) {
            by_job.entry(e.job_id()).or_default().push(e);
        }
    }
    by_job
}

/// Waits until `done` holds for the answers so far, and returns them.
async fn until(
    bootstrap: &str,
    what: &str,
    done: impl Fn(&HashMap<JobId, Vec<Envelope>>) -> bool,
) -> HashMap<JobId, Vec<Envelope>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = answers(bootstrap).await;
        if done(&a) {
            return a;
        }
        assert!(Instant::now() < deadline, "never: {what}; answers: {a:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn errors<'a>(
    answers: &'a HashMap<JobId, Vec<Envelope>>,
    jobs: &'a [JobId],
    code: ErrorCode,
) -> Vec<&'a str> {
    jobs.iter()
        .filter_map(|j| answers.get(j))
        .flatten()
        .filter_map(|e| match e {
            Envelope::Error(e) if e.code == code => Some(e.message.as_str()),
            _ => None,
        })
        .collect()
}

/// A portal metric's value, once it equals `want`.
async fn gauge_reaches(addr: &str, name: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let value = text
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok());
        if value == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is {value:?}, never {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const ACTIVE: &str = "clustera_kafkasend_jobs_active";
const INFLIGHT: &str = "clustera_kafkasend_inflight_bytes";

fn get(endpoint: &str) -> Request {
    Request {
        method: "GET".into(),
        endpoint: endpoint.into(),
        headers: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_flooding_the_portal_does_not_starve_another() {
    let (_broker, bootstrap) = mock();
    let api = Api::start().await;
    let metrics = free_addr();
    let _portal = portal(
        &bootstrap,
        &api,
        &[
            ("PORTAL_MAX_CONCURRENT_JOBS", "4"),
            ("PORTAL_FIRST_CHUNK_TIMEOUT_SECONDS", "600"),
            ("KAFKASEND_CHUNK_SIZE", "4096"),
            ("CLUSTERA_HTTP_ADDR", metrics.as_str()),
        ],
    )
    .await;
    // Eight heads that never send a chunk: four take every place, four are busy.
    let requests = producer(&bootstrap);
    let flood: Vec<JobId> = (0..8).map(|_| JobId::new()).collect();
    for job in &flood {
        let h = head(*job, "flooder", "POST", "/v1/echo", declared(40_000, 4096));
        requests.send(*job, &h).await.unwrap();
    }
    until(&bootstrap, "four flooder jobs busy", |a| {
        errors(a, &flood, ErrorCode::Busy).len() == 4
    })
    .await;
    gauge_reaches(&metrics, ACTIVE, 4).await;

    // Another client's job still succeeds: the flooder, over its share, gives up a place.
    let client = client(&bootstrap, 4096).await.with_client_id("victim");
    let ok = client
        .send(get("/v1/documents/1"), Body::Empty, T, &Quiet)
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    let a = until(&bootstrap, "a fifth flooder job busy", |a| {
        errors(a, &flood, ErrorCode::Busy).len() == 5
    })
    .await;
    let busy = errors(&a, &flood, ErrorCode::Busy);
    assert_eq!(
        busy.iter()
            .filter(|m| m.contains("holds more than its share"))
            .count(),
        1,
        "{busy:?}"
    );
    assert_eq!(
        busy.iter().filter(|m| m.contains("its share")).count(),
        5,
        "{busy:?}"
    );
    assert_eq!(api.seen().len(), 1);
    gauge_reaches(&metrics, ACTIVE, 3).await;
    gauge_reaches(&metrics, INFLIGHT, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn declared_sizes_reserve_nothing_late_first_chunks_and_tiny_chunks_are_refused() {
    let (_broker, bootstrap) = mock();
    let api = Api::start().await;
    let metrics = free_addr();
    let gib = 1u64 << 30;
    let gib_text = gib.to_string();
    let _portal = portal(
        &bootstrap,
        &api,
        &[
            ("PORTAL_MAX_BODY_BYTES", gib_text.as_str()),
            ("PORTAL_MAX_INFLIGHT_BYTES", gib_text.as_str()),
            ("PORTAL_FIRST_CHUNK_TIMEOUT_SECONDS", "3"),
            ("KAFKASEND_CHUNK_SIZE", "65536"),
            ("CLUSTERA_HTTP_ADDR", metrics.as_str()),
        ],
    )
    .await;
    let requests = producer(&bootstrap);
    // Two heads declaring a gibibyte each: were declared sizes reserved, together they would
    // pass the 1 GiB limit and the second, and every later job, would be busy.
    let big = [JobId::new(), JobId::new()];
    for job in &big {
        let h = head(*job, "big", "POST", "/v1/echo", declared(gib, 65536));
        requests.send(*job, &h).await.unwrap();
    }
    gauge_reaches(&metrics, ACTIVE, 2).await;
    gauge_reaches(&metrics, INFLIGHT, 0).await;
    let client = client(&bootstrap, 65536).await.with_client_id("small");
    let body = bytes(100_000, 4);
    let echoed = client
        .send(
            Request {
                method: "POST".into(),
                endpoint: "/v1/echo".into(),
                headers: vec![],
            },
            Body::Bytes(body.clone()),
            T,
            &Quiet,
        )
        .await
        .unwrap();
    assert_eq!(echoed.status, 200);
    assert!(echoed.body.read(0, body.len()).unwrap() == body);

    // Their first chunk never comes: both are dropped, answered `incomplete`.
    let a = until(&bootstrap, "the big jobs swept", |a| {
        errors(a, &big, ErrorCode::Incomplete).len() == 2
    })
    .await;
    for m in errors(&a, &big, ErrorCode::Incomplete) {
        assert!(m.contains("no chunk within 3 s of the head"), "{m}");
    }

    // A gibibyte in one-byte chunks: refused before anything is stored.
    let tiny = JobId::new();
    let h = head(tiny, "tiny", "POST", "/v1/echo", declared(gib, 1));
    requests.send(tiny, &h).await.unwrap();
    let a = until(&bootstrap, "the tiny-chunk job refused", |a| {
        a.contains_key(&tiny)
    })
    .await;
    let tiny = [tiny];
    let refused = errors(&a, &tiny, ErrorCode::InvalidRequest);
    assert_eq!(refused.len(), 1, "{a:?}");
    assert!(
        refused[0].contains("below the portal's minimum of 4096 bytes"),
        "{}",
        refused[0]
    );
    gauge_reaches(&metrics, ACTIVE, 0).await;
    assert_eq!(api.seen().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_heads_on_every_partition_run_the_job_once() {
    let (_broker, bootstrap) = mock();
    let api = Api::start().await;
    let metrics = free_addr();
    let _portal = portal(
        &bootstrap,
        &api,
        &[("CLUSTERA_HTTP_ADDR", metrics.as_str())],
    )
    .await;
    let raw: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let send = |job: JobId, partition: i32, payload: Vec<u8>| {
        let raw = raw.clone();
        async move {
            let key = job.key();
            raw.send(
                FutureRecord::to(REQUESTS)
                    .partition(partition)
                    .key(&key)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        }
    };
    // Twenty jobs with empty bodies, each head sent to all three partitions at once, then
    // one sentinel job per partition: once those are answered, every head before them has
    // been admitted or ignored.
    let jobs: Vec<JobId> = (0..20).map(|_| JobId::new()).collect();
    let mut sends = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let h = head(
            *job,
            "dup",
            "GET",
            &format!("/v1/documents/{i}"),
            BodyInfo::of(b"", 65536),
        );
        for p in 0..3 {
            sends.push(send(*job, p, h.clone()));
        }
    }
    futures::future::join_all(sends).await;
    let sentinels: Vec<JobId> = (0..3).map(|_| JobId::new()).collect();
    for (p, job) in sentinels.iter().enumerate() {
        let h = head(
            *job,
            "dup",
            "GET",
            "/v1/documents/sentinel",
            BodyInfo::of(b"", 65536),
        );
        send(*job, p as i32, h).await;
    }
    let everything: Vec<JobId> = jobs.iter().chain(&sentinels).copied().collect();
    until(&bootstrap, "every job answered", |a| {
        everything.iter().all(|j| a.contains_key(j))
    })
    .await;
    // A duplicate admitted would still hold a place until its own call was answered.
    gauge_reaches(&metrics, ACTIVE, 0).await;
    gauge_reaches(&metrics, INFLIGHT, 0).await;
    assert_eq!(api.seen().len(), 23, "one call per job");
    let a = answers(&bootstrap).await;
    for job in &everything {
        assert_eq!(a[job].len(), 1, "{job}: {:?}", a[job]);
        assert!(matches!(&a[job][0], Envelope::Response(r) if r.status == 200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn response_bodies_count_against_the_limits() {
    let (_broker, bootstrap) = mock();
    let api = Api::start().await;
    let metrics = free_addr();
    let _portal = portal(
        &bootstrap,
        &api,
        &[
            ("PORTAL_MAX_BODY_BYTES", "300000"),
            ("PORTAL_MAX_INFLIGHT_BYTES", "300000"),
            ("KAFKASEND_CHUNK_SIZE", "50000"),
            ("CLUSTERA_HTTP_ADDR", metrics.as_str()),
        ],
    )
    .await;
    let client = client(&bootstrap, 50_000).await.with_client_id("a");
    let e = client
        .send(get("/v1/blob/400000"), Body::Empty, T, &Quiet)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            ClientError::Portal {
                code: ErrorCode::TooLarge,
                ..
            }
        ),
        "{e}"
    );

    // A job of the same client that has sent 100 KB of its 150 KB: those bytes are held.
    let held = JobId::new();
    let body = bytes(150_000, 7);
    let chunks: Vec<Vec<u8>> = Chunker::new(held).encode_all(&body, 50_000).collect();
    let requests = producer(&bootstrap);
    let h = head(held, "a", "POST", "/v1/echo", BodyInfo::of(&body, 50_000));
    requests.send(held, &h).await.unwrap();
    for c in &chunks[..2] {
        requests.send(held, c).await.unwrap();
    }
    gauge_reaches(&metrics, INFLIGHT, 100_000).await;

    // 250 KB more for a response would pass the 300 KB limit: busy. 150 KB fit.
    let e = client
        .send(get("/v1/blob/250000"), Body::Empty, T, &Quiet)
        .await
        .unwrap_err();
    let ClientError::Portal { code, message } = e else {
        panic!("{e}")
    };
    assert_eq!(code, ErrorCode::Busy, "{message}");
    assert!(message.contains("the response does not fit"), "{message}");
    let ok = client
        .send(get("/v1/blob/150000"), Body::Empty, T, &Quiet)
        .await
        .unwrap();
    assert!(ok.body.read(0, 150_000).unwrap() == bytes(150_000, 150_000));
    gauge_reaches(&metrics, INFLIGHT, 100_000).await;

    // The held job completes: its request and its echoed response fit together.
    requests.send(held, &chunks[2]).await.unwrap();
    let a = until(&bootstrap, "the held job answered", |a| {
        a.contains_key(&held)
    })
    .await;
    assert!(
        matches!(&a[&held][..], [Envelope::Response(r)] if r.status == 200),
        "{:?}",
        a[&held]
    );
    gauge_reaches(&metrics, INFLIGHT, 0).await;
    gauge_reaches(&metrics, ACTIVE, 0).await;
}
