//! Faulty chunk streams, produced by hand: duplicates and reordering are absorbed; a missing,
//! corrupted or inconsistent chunk gets the client an error, and nothing partial reaches the
//! REST API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use clustera::testing::kafka;
use clustera_send_protocol::{
    BodyInfo, Chunk, Chunker, Envelope, ErrorCode, JobId, MemorySink, Reassembly, RequestHead,
};
use common::*;

use common::portal as portal_with;

const CHUNK: u32 = 1000;

fn head(job: JobId, body: &[u8]) -> Vec<u8> {
    Envelope::Request(RequestHead {
        job_id: job,
        method: "POST".into(),
        endpoint: "/v1/echo".into(),
        headers: vec![],
        body: BodyInfo::of(body, CHUNK),
        sent_at_ms: 0,
        client_id: None,
        reply_to: None,
    })
    .encode()
}

fn chunks(job: JobId, body: &[u8]) -> Vec<Vec<u8>> {
    Chunker::new(job).encode_all(body, CHUNK).collect()
}

/// Sends `messages` in order (an idempotent producer: a plain one may reorder on retries).
async fn produce(bootstrap: &str, job: JobId, messages: Vec<Vec<u8>>) {
    let kafka = clustera::Config::for_brokers("kafkasend-test-producer", bootstrap, &[]);
    let producer = clustera_send::transport::JobProducer::new(&kafka, REQUESTS).unwrap();
    for m in messages {
        producer.send(job, &m).await.unwrap();
    }
}

/// Every response message of `job`, once its error or its complete body has arrived.
async fn answer(bootstrap: &str, job: JobId) -> Result<Vec<u8>, (ErrorCode, String)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let b = bootstrap.to_owned();
        let records =
            tokio::task::spawn_blocking(move || kafka::read_topic(b.as_str(), RESPONSES).unwrap())
                .await
                .unwrap();
        let mut head = None;
        let mut parts: Vec<Chunk> = Vec::new();
        for r in records
            .iter()
            .filter(|r| r.key.as_deref() == Some(job.key().as_bytes()))
        {
            match Envelope::decode(r.value.as_deref().unwrap()).unwrap() {
                Envelope::Error(e) => return Err((e.code, e.message)),
                Envelope::Response(h) => head = Some(h),
                Envelope::Chunk(c) => parts.push(c),
                Envelope::Request(_) => {}
            }
        }
        if let Some(h) = head {
            let mut r = Reassembly::new(h.body.clone(), 1 << 20, 1 << 30).unwrap();
            let mut sink = MemorySink::default();
            for c in &parts {
                let data = c.bytes().unwrap();
                r.accept(c, &data, &mut sink).unwrap();
            }
            if r.is_complete() {
                return Ok(sink.0);
            }
        }
        assert!(Instant::now() < deadline, "no answer for job {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn faulty_chunk_streams() {
    let _logs = clustera::telemetry::init_logging_with_default("clustera_send=warn");
    let (_broker, bootstrap) = mock();
    let api = Api::start().await;
    let metrics_addr = free_addr();
    let portal = portal_with(
        &bootstrap,
        &api,
        &[
            ("KAFKASEND_CHUNK_SIZE", "1000"),
            ("PORTAL_JOB_IDLE_TIMEOUT_SECONDS", "1"),
            ("PORTAL_MAX_BODY_BYTES", "100000"),
            ("CLUSTERA_HTTP_ADDR", metrics_addr.as_str()),
            ("KAFKA_GROUP_PROTOCOL", "consumer"),
        ],
    )
    .await;
    let body = bytes(3500, 9); // four chunks: 1000, 1000, 1000, 500

    // Duplicated and out of order: absorbed.
    let ok = JobId::new();
    let c = chunks(ok, &body);
    produce(
        &bootstrap,
        ok,
        vec![
            head(ok, &body),
            c[2].clone(),
            c[0].clone(),
            c[0].clone(),
            c[3].clone(),
            c[1].clone(),
            c[2].clone(),
        ],
    )
    .await;
    assert_eq!(answer(&bootstrap, ok).await.unwrap(), body);

    // A chunk never arrives: the idle timeout answers, naming what is missing.
    let missing = JobId::new();
    let c = chunks(missing, &body);
    produce(
        &bootstrap,
        missing,
        vec![
            head(missing, &body),
            c[0].clone(),
            c[1].clone(),
            c[3].clone(),
        ],
    )
    .await;
    let (code, message) = answer(&bootstrap, missing).await.unwrap_err();
    assert_eq!(code, ErrorCode::Incomplete, "{message}");
    assert!(
        message.contains("3 of 4 chunks received, 1 missing"),
        "{message}"
    );

    // A chunk whose bytes do not match its checksum.
    let corrupted = JobId::new();
    let c = chunks(corrupted, &body);
    let mut bad: serde_json::Value = serde_json::from_slice(&c[1]).unwrap();
    bad["data"] =
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, vec![0u8; 1000]).into();
    produce(
        &bootstrap,
        corrupted,
        vec![
            head(corrupted, &body),
            c[0].clone(),
            serde_json::to_vec(&bad).unwrap(),
        ],
    )
    .await;
    let (code, message) = answer(&bootstrap, corrupted).await.unwrap_err();
    assert_eq!(code, ErrorCode::ChecksumMismatch, "{message}");

    // A chunk consistent with itself but not with the body: caught by the body's SHA-256.
    let forged = JobId::new();
    let mut c = chunks(forged, &body);
    c[3] = Chunker::new(forged).encode(3, 4, &[7u8; 500]);
    produce(&bootstrap, forged, [vec![head(forged, &body)], c].concat()).await;
    let (code, message) = answer(&bootstrap, forged).await.unwrap_err();
    assert_eq!(code, ErrorCode::ChecksumMismatch, "{message}");

    // A chunk that disagrees with the head's total.
    let inconsistent = JobId::new();
    let c = chunks(inconsistent, &body);
    let wrong_total = Chunker::new(inconsistent).encode(1, 5, &body[1000..2000]);
    produce(
        &bootstrap,
        inconsistent,
        vec![head(inconsistent, &body), c[0].clone(), wrong_total],
    )
    .await;
    let (code, message) = answer(&bootstrap, inconsistent).await.unwrap_err();
    assert_eq!(code, ErrorCode::Inconsistent, "{message}");

    // Chunks of a job whose head the portal never saw.
    let orphan = JobId::new();
    produce(&bootstrap, orphan, chunks(orphan, &body)[1..].to_vec()).await;
    let (code, _) = answer(&bootstrap, orphan).await.unwrap_err();
    assert_eq!(code, ErrorCode::Incomplete);

    // Not a KafkaSend message, keyed by a job: answered; not keyed: dead-lettered.
    let garbage = JobId::new();
    produce(&bootstrap, garbage, vec![b"{not json".to_vec()]).await;
    let (code, _) = answer(&bootstrap, garbage).await.unwrap_err();
    assert_eq!(code, ErrorCode::InvalidRequest);
    let b = bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        kafka::produce(
            b.as_str(),
            REQUESTS,
            [(None, b"\x00garbage".to_vec(), Vec::new())],
        )
        .unwrap()
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let b = bootstrap.clone();
        let dead = tokio::task::spawn_blocking(move || {
            kafka::read_topic(b.as_str(), &format!("{REQUESTS}.dlq")).unwrap()
        })
        .await
        .unwrap();
        if dead.len() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the unkeyed message was not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A head announcing a terabyte: refused before anything is allocated for it.
    let huge = JobId::new();
    let head_of_huge = Envelope::Request(RequestHead {
        job_id: huge,
        method: "POST".into(),
        endpoint: "/v1/echo".into(),
        headers: vec![],
        body: BodyInfo {
            size: 1 << 40,
            sha256: "00".repeat(32),
            total_chunks: u32::try_from((1u64 << 40).div_ceil(1000)).unwrap(),
            chunk_size: 1000,
        },
        sent_at_ms: 0,
        client_id: None,
        reply_to: None,
    })
    .encode();
    produce(&bootstrap, huge, vec![head_of_huge]).await;
    let (code, message) = answer(&bootstrap, huge).await.unwrap_err();
    assert_eq!(code, ErrorCode::TooLarge, "{message}");

    // Only the complete, valid job reached the API.
    assert_eq!(api.seen().len(), 1, "{:?}", api.seen());

    // A job still arriving when the portal stops is neither answered nor committed: the
    // next portal reads its head again and runs it once the rest has arrived.
    let cut = JobId::new();
    let c = chunks(cut, &body);
    produce(&bootstrap, cut, vec![head(cut, &body), c[0].clone()]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let receiving = "clustera_kafkasend_jobs_active{kernel=\"kafkasend-portal\"} 1";
    while !reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .contains(receiving)
    {
        assert!(Instant::now() < deadline, "the portal never took the job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    portal.stop().await;
    produce(&bootstrap, cut, c[1..].to_vec()).await;
    let _next = portal_with(
        &bootstrap,
        &api,
        &[
            ("KAFKASEND_CHUNK_SIZE", "1000"),
            ("PORTAL_JOB_IDLE_TIMEOUT_SECONDS", "1"),
            ("PORTAL_MAX_BODY_BYTES", "100000"),
            ("KAFKA_GROUP_PROTOCOL", "consumer"),
        ],
    )
    .await;
    // `answer` returns the first error it finds: none was sent for the job.
    assert_eq!(answer(&bootstrap, cut).await.unwrap(), body);
    assert_eq!(api.seen().len(), 2, "{:?}", api.seen());
}
