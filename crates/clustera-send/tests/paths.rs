//! The hostile path corpus through the production path: endpoints made canonical by the guard,
//! cut to the path under the base (`relative_path`) and judged by the policy
//! (`clustera_send::target::target`), and then end to end through a portal on the mock cluster
//! to an API on a bare socket that records each request line as it arrived. Every hostile
//! endpoint is refused; the legitimate ones arrive in exactly their canonical form.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use clustera_send::client::{Body, ClientError, Quiet, Request};
use clustera_send::path::PathRules;
use clustera_send::policy::Policy;
use clustera_send::ssrf::{Guard, SystemResolver};
use clustera_send::target::target;
use clustera_send_protocol::ErrorCode;
use common::*;

/// The allow-list of the review, under the base path `/api`.
const ALLOWED: &str = "/v1/download/*,/v2/**";

/// Endpoints that must never reach the API, whatever the allow-list's globs would make of
/// them. Families: `;` path parameters (`..;`), overlong UTF-8, fullwidth and other NFKC
/// look-alikes, zero-width and format characters, `*`, empty segments, trailing dots and
/// spaces, double encoding, NUL and other controls, backslashes, encoded delimiters.
const HOSTILE: &[&str] = &[
    "/v1/download/..;",
    "/v1/download/..;/..;/admin",
    "/v2/..;/..;/..;/admin",
    "/v2/a/..;/admin",
    "/v1/download/x;/../../admin",
    "/v2/a;jsessionid=x",
    "/v2/a%3Bjsessionid=x",
    "/v2/a%3b",
    "/v2/%c0%ae%c0%ae/admin",
    "/v2/%c0%ae/admin",
    "/v2/%e0%80%ae%e0%80%ae/admin",
    "/v2/%c0%af",
    "/v2/%c1%9c",
    "/v2/\u{ff0e}\u{ff0e}/admin",
    "/v2/%EF%BC%8E%EF%BC%8E/admin",
    "/v2/\u{ff0e}\u{ff0e}\u{ff0f}admin",
    "/v2/\u{2024}\u{2024}/admin",
    "/v2/%E2%80%A4%E2%80%A4/admin",
    "/v2/\u{fe52}\u{fe52}/admin",
    "/v2/a\u{2215}admin",
    "/v2/a\u{200b}/admin",
    "/v2/%E2%80%8B",
    "/v2/ad\u{feff}min",
    "/v2/ad%E2%80%8Dmin",
    "/v2/*",
    "/v2/%2A",
    "/v2/a*b",
    "/v2//admin",
    "/v2/a//b",
    "/v1/download//etc/passwd",
    "/v2/a/",
    "//evil.example/v2/a",
    "/v2/admin.",
    "/v2/admin%2e",
    "/v2/admin%20",
    "/v2/admin ",
    "/v1/download/..",
    "/v1/download/%2e%2e",
    "/v1/download/.%2e/admin",
    "/v1/download/...",
    "/v2/a/%2e/b",
    "/v2/%252e%252e/admin",
    "/v2/%25252e",
    "/v2/%2e%2e%2fadmin",
    "/v2/%2f%2fevil.example",
    "/v2/a%00",
    "/v2/a%00.json",
    "/v2/a\u{0}b",
    "/v2/a%0d%0aHost:evil",
    "/v2/a%09b",
    "/v2/a%5c..%5cadmin",
    "/v2/a\\..\\admin",
    "/v2/a?x=1#frag",
    "/v2/a%23frag",
    "/v2/a%3F",
    "/v2/file::$DATA",
    "/v2/%40evil.example",
    "/v2/a:8080",
    "/v2/%",
    "/v2/a%zz",
    "/v2/a?%00=1",
    "/v2/a?x=%0d%0a",
    "http://evil.example/v2/a",
    "/v1/download/a/b",
    "/v1/admin",
];

/// Legitimate endpoints and the exact request line each must produce.
const CANONICAL: &[(&str, &str)] = &[
    ("/v2/reports/2024", "GET /api/v2/reports/2024 HTTP/1.1"),
    ("/v1/download/%41bc", "GET /api/v1/download/Abc HTTP/1.1"),
    (
        "/v1/download/report.pdf?x=a+b&y=%7E&&z",
        "GET /api/v1/download/report.pdf?x=a%20b&y=~&z HTTP/1.1",
    ),
    ("/v2/caf%C3%A9", "GET /api/v2/caf%C3%A9 HTTP/1.1"),
    ("/v2/caf\u{e9}/x", "GET /api/v2/caf%C3%A9/x HTTP/1.1"),
    (
        "/v2/a/b!e'f(g)h+i,j=k~l",
        "GET /api/v2/a/b!e'f(g)h+i,j=k~l HTTP/1.1",
    ),
    ("/v2/q?f[a]=%3B", "GET /api/v2/q?f%5Ba%5D=%3B HTTP/1.1"),
];

fn production(non_ascii: bool) -> (Guard, Policy) {
    let guard = Guard::new(
        url::Url::parse("http://api.example.test:8080/api").unwrap(),
        Arc::new(SystemResolver),
    )
    .with_rules(PathRules {
        allow_non_ascii: non_ascii,
        ..PathRules::default()
    });
    let endpoints: Vec<String> = ALLOWED.split(',').map(str::to_owned).collect();
    (guard, Policy::new(&endpoints, &[], true).unwrap())
}

#[test]
fn the_corpus_is_large_enough() {
    assert!(HOSTILE.len() >= 60, "{} hostile endpoints", HOSTILE.len());
}

#[test]
fn every_hostile_endpoint_is_refused_by_the_production_path() {
    for non_ascii in [false, true] {
        let (guard, policy) = production(non_ascii);
        for endpoint in HOSTILE {
            if let Ok(url) = target(&guard, &policy, "GET", endpoint) {
                panic!("{endpoint:?} became {url} (non-ASCII allowed: {non_ascii})");
            }
        }
    }
}

#[test]
fn legitimate_endpoints_become_their_canonical_form() {
    let (guard, policy) = production(true);
    for (endpoint, line) in CANONICAL {
        let url = target(&guard, &policy, "GET", endpoint)
            .unwrap_or_else(|r| panic!("{endpoint}: {}", r.message));
        let path_and_query = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        assert_eq!(format!("GET {path_and_query} HTTP/1.1"), *line);
        // Canonical forms are fixed points: sent again, they come out unchanged.
        let again = target(
            &guard,
            &policy,
            "GET",
            &path_and_query.replacen("/api", "", 1),
        )
        .unwrap();
        assert_eq!(again, url, "{endpoint}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn through_a_portal_only_canonical_request_lines_reach_the_api() {
    let (_broker, bootstrap) = mock();
    let api = RawApi::start().await;
    let _portal = portal_at(
        &bootstrap,
        &format!("{}/api", api.url),
        &[
            ("PORTAL_ALLOWED_ENDPOINTS", ALLOWED),
            ("PORTAL_ALLOW_NON_ASCII_PATHS", "true"),
        ],
    )
    .await;
    let client = Arc::new(client(&bootstrap, 64 * 1024).await);
    let send = |endpoint: &'static str| {
        let client = client.clone();
        async move {
            let request = Request {
                method: "GET".into(),
                endpoint: endpoint.into(),
                headers: vec![],
            };
            (
                endpoint,
                client
                    .send(request, Body::Empty, Duration::from_secs(60), &Quiet)
                    .await,
            )
        }
    };
    let hostile = futures::future::join_all(HOSTILE.iter().map(|e| send(e))).await;
    let mut codes = std::collections::BTreeMap::<&str, usize>::new();
    for (endpoint, result) in hostile {
        match result {
            Err(ClientError::Portal { code, message }) => {
                assert!(
                    matches!(code, ErrorCode::SsrfBlocked | ErrorCode::ForbiddenEndpoint),
                    "{endpoint:?}: {code:?} {message}"
                );
                *codes.entry(code.as_str()).or_default() += 1;
            }
            Err(e) => panic!("{endpoint:?}: {e}"),
            Ok(r) => panic!("{endpoint:?} reached the API (HTTP {})", r.status),
        }
    }
    assert_eq!(codes.values().sum::<usize>(), HOSTILE.len(), "{codes:?}");
    assert!(api.lines().is_empty(), "{:?}", api.lines());

    let legitimate =
        futures::future::join_all(CANONICAL.iter().map(|(endpoint, _)| send(endpoint))).await;
    for (endpoint, result) in legitimate {
        let response = result.unwrap_or_else(|e| panic!("{endpoint}: {e}"));
        assert_eq!(response.status, 200, "{endpoint}");
    }
    let mut lines = api.lines();
    let mut expected: Vec<String> = CANONICAL.iter().map(|(_, l)| (*l).to_owned()).collect();
    lines.sort();
    expected.sort();
    assert_eq!(lines, expected);
}
