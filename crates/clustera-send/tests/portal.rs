//! The portal end to end on librdkafka's mock cluster, with a real REST API and token
//! endpoint on loopback: round trips, concurrency, allow-lists, strict and permissive modes,
//! redirects, OAuth2 expiry and 401, job timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use clustera_send::client::{Body, ClientError, Quiet, Request};
use clustera_send_protocol::ErrorCode;
use common::*;

const T: Duration = Duration::from_secs(30);
const CHUNK: u32 = 64 * 1024;

fn request(method: &str, endpoint: &str, headers: &[(&str, &str)]) -> Request {
    Request {
        method: method.into(),
        endpoint: endpoint.into(),
        headers: headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn refused(result: Result<clustera_send::client::Response, ClientError>) -> (ErrorCode, String) {
    match result {
        Err(ClientError::Portal { code, message }) => (code, message),
        Err(e) => panic!("expected a portal error, got {e}"),
        Ok(r) => panic!("expected a portal error, got HTTP {}", r.status),
    }
}

fn body_of(r: &clustera_send::client::Response) -> Vec<u8> {
    r.body
        .read(0, usize::try_from(r.body.len()).unwrap())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_concurrent_jobs_each_get_their_own_response() {
    let (_broker, bootstrap) = mock();
    let api = Api::start().await;
    let metrics_addr = free_addr();
    let _portal = portal(
        &bootstrap,
        &api,
        &[
            ("KAFKASEND_CHUNK_SIZE", "65536"),
            ("CLUSTERA_HTTP_ADDR", metrics_addr.as_str()),
            ("PORTAL_ALLOWED_RESPONSE_HEADERS", "*"),
        ],
    )
    .await;
    let client = std::sync::Arc::new(client(&bootstrap, CHUNK).await);
    let sizes = [
        0usize, 1, 65_535, 65_536, 65_537, 100_000, 150_001, 200_000, 7, 131_072,
    ];
    let jobs = sizes.iter().enumerate().map(|(i, &size)| {
        let client = client.clone();
        async move {
            let body = bytes(size, i as u64 + 1);
            let response = client
                .send(
                    request(
                        "POST",
                        "/v1/echo",
                        &[("Content-Type", "application/octet-stream")],
                    ),
                    Body::Bytes(body.clone()),
                    T,
                    &Quiet,
                )
                .await
                .unwrap_or_else(|e| panic!("job {i} ({size} bytes): {e}"));
            (i, body, response)
        }
    });
    let results = futures::future::join_all(jobs).await;
    for (i, body, response) in results {
        assert_eq!(response.status, 200, "job {i}");
        assert_eq!(body_of(&response), body, "job {i} got someone else's body");
        assert!(response
            .headers
            .iter()
            .any(|(k, v)| k == "x-echo" && v == "yes"));
        assert!(
            !response.headers.iter().any(|(k, _)| k == "set-cookie"),
            "credentials only when listed by name"
        );
    }
    assert_eq!(
        api.seen().len(),
        sizes.len(),
        "one call per job, none twice"
    );
    let total: u64 = sizes.iter().map(|s| *s as u64).sum();
    let expected = [
        "clustera_kafkasend_jobs_total{kernel=\"kafkasend-portal\",result=\"ok\"} 10".to_owned(),
        "clustera_kafkasend_jobs_active{kernel=\"kafkasend-portal\"} 0".to_owned(),
        format!("clustera_kafkasend_body_bytes_total{{kernel=\"kafkasend-portal\",direction=\"request\"}} {total}"),
    ];
    // The portal counts a job once Kafka acknowledged its response, which may be just after
    // the client has it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let missing: Vec<_> = expected
            .iter()
            .filter(|l| !metrics.contains(l.as_str()))
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{missing:?} not in\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn strict_mode_refuses_what_is_not_allowed_and_forwards_what_is() {
    let (_broker, bootstrap) = mock();
    let api = Api::start().await;
    let _portal = portal(
        &bootstrap,
        &api,
        &[(
            "PORTAL_ALLOWED_HEADERS",
            "Content-Type,X-Request-ID,Authorization,Idempotency-Key",
        )],
    )
    .await;
    let client = client(&bootstrap, CHUNK).await;
    let send = |r: Request| client.send(r, Body::Empty, T, &Quiet);

    let (code, message) = refused(send(request("GET", "/v1/admin", &[])).await);
    assert_eq!(code, ErrorCode::ForbiddenEndpoint, "{message}");
    let (code, _) = refused(send(request("GET", "/v1/documents/1/secret", &[])).await);
    assert_eq!(
        code,
        ErrorCode::ForbiddenEndpoint,
        "* stays within a segment"
    );
    let (code, message) = refused(
        send(request(
            "GET",
            "/v1/documents/1",
            &[("Authorization", "Bearer mine")],
        ))
        .await,
    );
    assert_eq!(
        code,
        ErrorCode::ForbiddenHeader,
        "listed, but never forwarded: {message}"
    );
    let (code, message) = refused(
        send(request(
            "GET",
            "/v1/documents/1",
            &[("Idempotency-Key", "\"mine\"")],
        ))
        .await,
    );
    assert_eq!(
        code,
        ErrorCode::ForbiddenHeader,
        "listed, but the portal's own: {message}"
    );
    let (code, _) = refused(send(request("GET", "/v1/documents/1", &[("X-Other", "1")])).await);
    assert_eq!(code, ErrorCode::ForbiddenHeader);
    let (code, _) = refused(send(request("TRACE", "/v1/documents/1", &[])).await);
    assert_eq!(code, ErrorCode::InvalidRequest);
    for endpoint in [
        "//evil.example/v1/echo",
        "/v1/%2e%2e/admin",
        "http://169.254.169.254/",
        "/../admin",
    ] {
        let (code, message) = refused(send(request("GET", endpoint, &[])).await);
        assert_eq!(code, ErrorCode::SsrfBlocked, "{endpoint}: {message}");
    }
    assert!(api.seen().is_empty(), "nothing refused reached the API");

    let ok = send(request(
        "GET",
        "/v1/documents/42",
        &[("X-Request-ID", "r-1")],
    ))
    .await
    .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(body_of(&ok), br#"{"id":"42"}"#);
    let seen = api.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers.get("x-request-id").map(String::as_str),
        Some("r-1")
    );
    // The job's id, as a structured-field string.
    let key = seen[0].headers.get("idempotency-key").unwrap();
    let id = key.strip_prefix('"').and_then(|k| k.strip_suffix('"'));
    assert!(
        id.is_some_and(|id| id.parse::<clustera_send_protocol::JobId>().is_ok()),
        "{key}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permissive_mode_drops_forbidden_headers_and_redirects_are_not_followed() {
    let (_broker, bootstrap) = mock();
    let api = Api::start().await;
    let _portal = portal(&bootstrap, &api, &[("PORTAL_STRICT_SECURITY", "false")]).await;
    let client = client(&bootstrap, CHUNK).await;
    let response = client
        .send(
            request(
                "GET",
                "/v1/documents/7",
                &[
                    ("Authorization", "Bearer stolen"),
                    ("Cookie", "session=1"),
                    ("X-Forwarded-For", "10.0.0.1"),
                    ("Idempotency-Key", "\"mine\""),
                    ("X-Request-ID", "r-7"),
                ],
            ),
            Body::Empty,
            T,
            &Quiet,
        )
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    let seen = &api.seen()[0];
    assert_eq!(seen.headers.get("authorization"), None);
    assert_eq!(seen.headers.get("cookie"), None);
    assert_eq!(seen.headers.get("x-forwarded-for"), None);
    assert_ne!(
        seen.headers.get("idempotency-key").map(String::as_str),
        Some("\"mine\""),
        "the portal's key, not the client's"
    );
    assert_eq!(
        seen.headers.get("x-request-id").map(String::as_str),
        Some("r-7")
    );

    // The API redirects to an internal address: the portal answers with the 302 itself.
    let response = client
        .send(request("GET", "/v1/redirect", &[]), Body::Empty, T, &Quiet)
        .await
        .unwrap();
    assert_eq!(response.status, 302);
    assert_eq!(
        api.state
            .internal_hits
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the redirect was not followed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_are_cached_refreshed_on_expiry_and_once_on_401() {
    let (_broker, bootstrap) = mock();
    let api = Api::start().await;
    let tokens = TokenServer::start(&api).await;
    let _portal = portal(
        &bootstrap,
        &api,
        &[
            ("OAUTH2_TOKEN_URL", tokens.url.as_str()),
            ("OAUTH2_CLIENT_ID", "portal-client"),
            ("OAUTH2_CLIENT_SECRET", "s3cret"),
            ("OAUTH2_SCOPE", "documents"),
        ],
    )
    .await;
    let client = client(&bootstrap, CHUNK).await;
    let get = || {
        client.send(
            request("GET", "/v1/documents/1", &[]),
            Body::Empty,
            T,
            &Quiet,
        )
    };
    for _ in 0..3 {
        assert_eq!(get().await.unwrap().status, 200);
    }
    let issued = || tokens.issued.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(issued(), 1, "one token for three calls");
    let last_auth = || {
        api.seen()
            .last()
            .unwrap()
            .headers
            .get("authorization")
            .cloned()
    };
    assert_eq!(last_auth().as_deref(), Some("Bearer token-1"));

    // The API stops accepting the token: one 401, one refresh, the call succeeds.
    api.state
        .accepted
        .lock()
        .unwrap()
        .as_mut()
        .unwrap()
        .remove("token-1");
    assert_eq!(get().await.unwrap().status, 200);
    assert_eq!(issued(), 2);
    assert_eq!(last_auth().as_deref(), Some("Bearer token-2"));

    // Short-lived tokens are refreshed before they expire.
    tokens
        .expires_in
        .store(1, std::sync::atomic::Ordering::SeqCst);
    api.state
        .accepted
        .lock()
        .unwrap()
        .as_mut()
        .unwrap()
        .remove("token-2");
    assert_eq!(get().await.unwrap().status, 200); // 401 → token-3 (1 s)
    assert_eq!(issued(), 3);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get().await.unwrap().status, 200);
    assert_eq!(issued(), 4, "expired token replaced before the call");
    assert_eq!(last_auth().as_deref(), Some("Bearer token-4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_401_before_the_spooled_body_was_read_is_retried_with_every_byte() {
    let (_broker, bootstrap) = mock();
    let api = EarlyRefusalApi::start().await;
    let tokens = TokenServer::start_for(api.state.clone()).await;
    let _portal = portal_at(
        &bootstrap,
        &format!("{}/api", api.url),
        &[
            ("PORTAL_ALLOWED_ENDPOINTS", "/v1/upload"),
            ("OAUTH2_TOKEN_URL", tokens.url.as_str()),
            ("OAUTH2_CLIENT_ID", "portal-client"),
            ("OAUTH2_CLIENT_SECRET", "s3cret"),
            ("PORTAL_SPOOL_THRESHOLD_BYTES", "1000"),
        ],
    )
    .await;
    let client = client(&bootstrap, CHUNK).await;
    let upload = |body: Vec<u8>| {
        client.send(
            request("POST", "/v1/upload", &[]),
            Body::Bytes(body),
            T,
            &Quiet,
        )
    };
    assert_eq!(upload(b"first".to_vec()).await.unwrap().status, 200);
    // The token is revoked; the API refuses it before reading the spooled 3 MB body, while
    // the portal is still sending it, and the retry must send every byte from the start.
    api.state
        .accepted
        .lock()
        .unwrap()
        .as_mut()
        .unwrap()
        .remove("token-1");
    let body = bytes(3 * 1024 * 1024 + 17, 401);
    let response = upload(body.clone()).await.unwrap();
    assert_eq!(response.status, 200);
    let received: serde_json::Value = serde_json::from_slice(&body_of(&response)).unwrap();
    use sha2::Digest;
    assert_eq!(received["size"], body.len());
    assert_eq!(received["sha256"], hex::encode(sha2::Sha256::digest(&body)));
    assert_eq!(tokens.issued.load(std::sync::atomic::Ordering::SeqCst), 2);
    let calls: Vec<_> = api
        .seen()
        .into_iter()
        .map(|s| s.headers.get("authorization").cloned().unwrap_or_default())
        .collect();
    assert_eq!(
        calls,
        ["Bearer token-1", "Bearer token-1", "Bearer token-2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_401_refreshes_the_token_at_most_once_per_generation() {
    let (_broker, bootstrap) = mock();
    let api = Api::start().await;
    let tokens = TokenServer::start(&api).await;
    // An `expires_in` too large for any clock: cached (for at most a day), no panic.
    tokens
        .expires_in
        .store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
    let _portal = portal(
        &bootstrap,
        &api,
        &[
            ("OAUTH2_TOKEN_URL", tokens.url.as_str()),
            ("OAUTH2_CLIENT_ID", "portal-client"),
            ("OAUTH2_CLIENT_SECRET", "s3cret"),
        ],
    )
    .await;
    let client = client(&bootstrap, CHUNK).await;
    let issued = || tokens.issued.load(std::sync::atomic::Ordering::SeqCst);
    let get = |endpoint: &str| client.send(request("GET", endpoint, &[]), Body::Empty, T, &Quiet);
    assert_eq!(get("/v1/documents/1").await.unwrap().status, 200);
    assert_eq!(issued(), 1);
    // An endpoint that answers 401 to every token: one refresh (token-2, refused too), then
    // no more, however many jobs call it; the 401 goes back to the client.
    for _ in 0..3 {
        assert_eq!(get("/v1/unauthorized").await.unwrap().status, 401);
    }
    assert_eq!(issued(), 2, "one refresh for three jobs");
    let unauthorized = api
        .seen()
        .iter()
        .filter(|s| s.path == "/api/v1/unauthorized")
        .count();
    assert_eq!(unauthorized, 4, "a retry for the first job only");
    // Other endpoints go on with the current token.
    assert_eq!(get("/v1/documents/2").await.unwrap().status, 200);
    assert_eq!(issued(), 2);
    assert_eq!(
        api.seen()
            .last()
            .unwrap()
            .headers
            .get("authorization")
            .map(String::as_str),
        Some("Bearer token-2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_past_the_job_timeout_is_answered_with_an_error_and_limits_hold() {
    let (_broker, bootstrap) = mock();
    let api = Api::start().await;
    let _portal = portal(
        &bootstrap,
        &api,
        &[
            ("PORTAL_JOB_TIMEOUT_SECONDS", "2"),
            ("PORTAL_MAX_CONCURRENT_JOBS", "1"),
        ],
    )
    .await;
    let client = client(&bootstrap, CHUNK).await;
    let slow = client.send(request("GET", "/v1/slow", &[]), Body::Empty, T, &Quiet);
    let second = async {
        // Sent once the slow job holds the portal's only place.
        while api.seen().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        client
            .send(
                request("GET", "/v1/documents/1", &[]),
                Body::Empty,
                T,
                &Quiet,
            )
            .await
    };
    let (slow, second) = tokio::join!(slow, second);
    let (code, message) = refused(second);
    assert_eq!(code, ErrorCode::Busy, "{message}");
    let (code, message) = refused(slow);
    assert_eq!(code, ErrorCode::Timeout, "{message}");
    assert!(message.contains("within 2 s"), "{message}");
    // The place is free again.
    let ok = client
        .send(
            request("GET", "/v1/documents/1", &[]),
            Body::Empty,
            T,
            &Quiet,
        )
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    // The client's own timeout is reported as such.
    let e = client
        .send(
            request("GET", "/v1/slow", &[]),
            Body::Empty,
            Duration::from_millis(300),
            &Quiet,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ClientError::Timeout(_)), "{e}");
}
