//! Clients are isolated: a message is answered only as the job its Kafka key names, answers go
//! to the head's `reply_to` topic when `PORTAL_REPLY_TOPICS` allows it, and error answers say
//! what was wrong without the API's address or what an upstream answered.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use clustera::testing::kafka;
use clustera_send::client::{Body, Client, ClientError, Quiet, Request};
use clustera_send::config::Wire;
use clustera_send::transport::JobProducer;
use clustera_send_protocol::{BodyInfo, Envelope, ErrorCode, JobId, RequestHead};
use common::*;

const T: Duration = Duration::from_secs(30);

fn get(endpoint: &str) -> Request {
    Request {
        method: "GET".into(),
        endpoint: endpoint.into(),
        headers: vec![],
    }
}

fn head(job: JobId, reply_to: Option<&str>) -> Vec<u8> {
    Envelope::Request(RequestHead {
        job_id: job,
        method: "GET".into(),
        endpoint: "/v1/documents/1".into(),
        headers: vec![],
        body: BodyInfo::of(b"", 1000),
        sent_at_ms: 0,
        client_id: Some("isolation-test".into()),
        reply_to: reply_to.map(str::to_owned),
    })
    .encode()
}

/// The decoded messages on `topic` keyed by `job`, once there are `n` of them (or after the
/// deadline, however many there are).
async fn keyed(bootstrap: &str, topic: &str, job: JobId, n: usize) -> Vec<Envelope> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (b, t) = (bootstrap.to_owned(), topic.to_owned());
        let records = tokio::task::spawn_blocking(move || kafka::read_topic(&b, &t).unwrap())
            .await
            .unwrap();
        let found: Vec<Envelope> = records
            .iter()
            .filter(|r| r.key.as_deref() == Some(job.key().as_bytes()))
            .map(|r| Envelope::decode(r.value.as_deref().unwrap()).unwrap())
            .collect();
        if found.len() >= n || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_is_answered_only_as_the_job_its_key_names() {
    let (_broker, bootstrap) = mock();
    let api = Api::start().await;
    let _portal = portal(&bootstrap, &api, &[]).await;
    let kafka_config = clustera::Config::for_brokers("isolation-test", &bootstrap, &[]);
    let requests = JobProducer::new(&kafka_config, REQUESTS).unwrap();

    // A head claiming the victim's job id, keyed by the sender's own.
    let (sender, victim) = (JobId::new(), JobId::new());
    requests.send(sender, &head(victim, None)).await.unwrap();
    let answers = keyed(&bootstrap, RESPONSES, sender, 1).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    let Envelope::Error(e) = &answers[0] else {
        panic!("{answers:?}")
    };
    assert_eq!((e.job_id, e.code), (sender, ErrorCode::InvalidRequest));
    assert!(e.message.contains("is not its job_id"), "{}", e.message);

    // A legitimate job afterwards: answered once, and still nothing for the victim.
    let client = client(&bootstrap, 1000).await;
    assert_eq!(
        client
            .send(get("/v1/documents/2"), Body::Empty, T, &Quiet)
            .await
            .unwrap()
            .status,
        200
    );
    assert!(keyed(&bootstrap, RESPONSES, victim, 0).await.is_empty());
    assert_eq!(
        api.seen().len(),
        1,
        "the spoofed head never reached the API"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn answers_go_to_the_allowed_reply_topic_of_the_head() {
    let (broker, bootstrap) = mock();
    broker.create_topic("replies.team-a", 1).unwrap();
    broker.create_topic("elsewhere", 1).unwrap();
    let api = Api::start().await;
    let _portal = portal(
        &bootstrap,
        &api,
        &[("PORTAL_REPLY_TOPICS", "replies.*,kafkasend-responses")],
    )
    .await;
    let kafka_config = clustera::Config::for_brokers("isolation-client", &bootstrap, &[]);
    let wire = Wire {
        response_topic: "replies.team-a".into(),
        ..wire(1000)
    };
    let team_a = tokio::task::spawn_blocking(move || Client::connect(&kafka_config, wire))
        .await
        .unwrap()
        .unwrap()
        .with_client_id("team-a");
    let response = team_a
        .send(get("/v1/documents/7"), Body::Empty, T, &Quiet)
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    let b = bootstrap.clone();
    let shared = tokio::task::spawn_blocking(move || kafka::read_topic(&b, RESPONSES).unwrap())
        .await
        .unwrap();
    assert!(shared.is_empty(), "nothing on the shared topic: {shared:?}");
    let seen = api.seen();
    assert_eq!(seen.len(), 1);

    // A topic outside PORTAL_REPLY_TOPICS: refused, on the portal's response topic.
    let job = JobId::new();
    let requests = JobProducer::new(
        &clustera::Config::for_brokers("isolation-test", &bootstrap, &[]),
        REQUESTS,
    )
    .unwrap();
    requests
        .send(job, &head(job, Some("elsewhere")))
        .await
        .unwrap();
    let answers = keyed(&bootstrap, RESPONSES, job, 1).await;
    let [Envelope::Error(e)] = answers.as_slice() else {
        panic!("{answers:?}")
    };
    assert_eq!(e.code, ErrorCode::InvalidRequest);
    assert!(e.message.contains("\"elsewhere\""), "{}", e.message);
    assert!(keyed(&bootstrap, "elsewhere", job, 0).await.is_empty());
    assert_eq!(api.seen().len(), 1, "the refused job was not called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn error_answers_name_no_internal_address_or_upstream_body() {
    let (_broker, bootstrap) = mock();
    // An API that is not there: its port was free a moment ago.
    let closed = free_addr();
    let consumer = ("KAFKA_GROUP_PROTOCOL", "consumer");
    let down = portal_at(&bootstrap, &format!("http://{closed}/api"), &[consumer]).await;
    let client = client(&bootstrap, 1000).await;
    let e = client
        .send(get("/v1/documents/1"), Body::Empty, T, &Quiet)
        .await
        .unwrap_err();
    let ClientError::Portal { code, message } = e else {
        panic!("{e}")
    };
    assert_eq!(code, ErrorCode::Upstream);
    assert_eq!(
        message,
        "the API could not be reached: the connection failed"
    );
    let port = closed.rsplit(':').next().unwrap();
    assert!(
        !message.contains("127.0.0.1") && !message.contains(port),
        "{message}"
    );
    down.stop().await;

    // A token endpoint that fails with internal details in its body.
    let app = Router::new().route(
        "/oauth/token",
        post(|| async {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "database password hunter2 rejected at db-7.internal",
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token_url = format!("http://{}/oauth/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let api = Api::start().await;
    let _portal = portal(
        &bootstrap,
        &api,
        &[
            ("OAUTH2_TOKEN_URL", token_url.as_str()),
            ("OAUTH2_CLIENT_ID", "portal-client"),
            ("OAUTH2_CLIENT_SECRET", "s3cret"),
            consumer,
        ],
    )
    .await;
    let e = client
        .send(get("/v1/documents/1"), Body::Empty, T, &Quiet)
        .await
        .unwrap_err();
    let ClientError::Portal { code, message } = e else {
        panic!("{e}")
    };
    assert_eq!(code, ErrorCode::Upstream);
    assert_eq!(
        message,
        "the token endpoint refused to issue a token (HTTP 500)"
    );
    assert!(api.seen().is_empty());
}
