//! The client takes the first complete answer of a job: a response cut off by a portal that
//! died while sending it gives way to the next answer, and answers after the one taken (a
//! job run again after a restart) are ignored and counted. The answers are produced by hand.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clustera::testing::kafka;
use clustera_send::client::{Body, Client, ClientError, Quiet, Request, Response};
use clustera_send::transport::JobProducer;
use clustera_send_protocol::{
    BodyInfo, Chunker, Envelope, ErrorCode, ErrorResponse, JobId, ResponseHead,
};
use common::*;

const CHUNK: u32 = 1000;

fn response(job: JobId, status: u16, body: &[u8]) -> Vec<Vec<u8>> {
    let head = Envelope::Response(ResponseHead {
        job_id: job,
        status,
        headers: vec![],
        body: BodyInfo::of(body, CHUNK),
    })
    .encode();
    std::iter::once(head)
        .chain(Chunker::new(job).encode_all(body, CHUNK))
        .collect()
}

/// The id of the first job on the request topic, once it is there.
async fn first_job(bootstrap: &str) -> JobId {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let b = bootstrap.to_owned();
        let records =
            tokio::task::spawn_blocking(move || kafka::read_topic(b.as_str(), REQUESTS).unwrap())
                .await
                .unwrap();
        if let Some(job) =
            records
                .iter()
                .find_map(|r| match Envelope::decode(r.value.as_deref()?).ok()? {
                    Envelope::Request(head) => Some(head.job_id),
                    _ => None,
                })
        {
            return job;
        }
        assert!(Instant::now() < deadline, "the client sent no job");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends `GET endpoint` through `client` in a task of its own.
fn get(
    client: &Arc<Client>,
    endpoint: &str,
) -> tokio::task::JoinHandle<Result<Response, ClientError>> {
    let (client, endpoint) = (client.clone(), endpoint.to_owned());
    tokio::spawn(async move {
        let request = Request {
            method: "GET".into(),
            endpoint,
            headers: vec![],
        };
        client
            .send(request, Body::Empty, Duration::from_secs(60), &Quiet)
            .await
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_complete_answer_wins_and_later_ones_are_counted() {
    let (_broker, bootstrap) = mock();
    let client = Arc::new(client(&bootstrap, CHUNK).await);
    let sending = get(&client, "/v1/documents/1");
    let job = first_job(&bootstrap).await;
    let config = clustera::Config::for_brokers("kafkasend-test-portal", &bootstrap, &[]);
    let answers = JobProducer::new(&config, RESPONSES).unwrap();

    // A response cut off after its first chunk (its portal died), then a run's full answer.
    let first = bytes(2_500, 1);
    let cut = response(job, 500, &bytes(2_500, 9));
    let mut messages: Vec<Vec<u8>> = cut[..2].to_vec();
    messages.extend(response(job, 200, &first));
    for m in &messages {
        answers.send(job, m).await.unwrap();
    }
    let taken = sending.await.unwrap().unwrap();
    assert_eq!(
        taken.status, 200,
        "the complete answer, not the cut-off one"
    );
    assert!(taken.body.read(0, first.len()).unwrap() == first);

    // A second run's answer and an error answer: both ignored, both counted.
    let mut later = response(job, 201, &bytes(1_200, 2));
    later.push(
        Envelope::Error(ErrorResponse {
            job_id: job,
            code: ErrorCode::Timeout,
            message: "a third run timed out".into(),
        })
        .encode(),
    );
    for m in &later {
        answers.send(job, m).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.duplicate_answers() < 2 {
        assert!(
            Instant::now() < deadline,
            "{} duplicate answers counted",
            client.duplicate_answers()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A job of its own is unaffected, and its answer is not a duplicate.
    let sending = get(&client, "/v1/documents/2");
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        assert!(Instant::now() < deadline, "the client sent no second job");
        let b = bootstrap.clone();
        let heads: Vec<JobId> =
            tokio::task::spawn_blocking(move || kafka::read_topic(b.as_str(), REQUESTS).unwrap())
                .await
                .unwrap()
                .iter()
                .filter_map(|r| match Envelope::decode(r.value.as_deref()?).ok()? {
                    Envelope::Request(h) => Some(h.job_id),
                    _ => None,
                })
                .collect();
        if let Some(j) = heads.into_iter().find(|j| *j != job) {
            break j;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for m in response(second, 204, b"") {
        answers.send(second, &m).await.unwrap();
    }
    assert_eq!(sending.await.unwrap().unwrap().status, 204);
    assert_eq!(client.duplicate_answers(), 2);
}
