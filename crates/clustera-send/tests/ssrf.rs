//! The SSRF corpus: client-supplied endpoints and URLs that try to leave the configured API,
//! every one refused; and legitimate ones, accepted. Names resolve through a test resolver.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use clustera_send::ssrf::{Guard, Resolve, SsrfError};
use futures::future::BoxFuture;
use url::Url;

struct TestResolver(HashMap<&'static str, Vec<IpAddr>>);

impl Resolve for TestResolver {
    fn resolve(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        let answer = self.0.get(host).cloned().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host}: NXDOMAIN"))
        });
        Box::pin(async move { answer })
    }
}

fn guard() -> Guard {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let names = HashMap::from([
        ("api.example.test", vec![ip("10.9.8.7")]),
        ("public.example.test", vec![ip("93.184.216.34")]),
        ("public6.example.test", vec![ip("2606:4700::1111")]),
        ("internal.example.test", vec![ip("10.1.2.3")]),
        ("loopback.example.test", vec![ip("127.0.0.1")]),
        ("metadata.example.test", vec![ip("169.254.169.254")]),
        (
            "rebind.example.test",
            vec![ip("93.184.216.34"), ip("127.0.0.1")],
        ),
        ("v6private.example.test", vec![ip("fd12::1")]),
        ("mapped.example.test", vec![ip("::ffff:10.0.0.1")]),
        ("cgnat.example.test", vec![ip("100.64.1.1")]),
        ("empty.example.test", vec![]),
    ]);
    Guard::new(
        Url::parse("http://api.example.test:8080/base").unwrap(),
        Arc::new(TestResolver(names)),
    )
}

/// Endpoints (what a client writes in a request) that must never become a call.
const BAD_ENDPOINTS: &[&str] = &[
    "http://evil.example/x",
    "https://169.254.169.254/latest/meta-data",
    "//evil.example/x",
    "///evil.example",
    "\\\\evil.example\\x",
    "/\\evil.example",
    "/v1/..\\..\\admin",
    "/v1/%2e%2e/admin",
    "/v1/%2E%2E/%2E%2E/admin",
    "/v1/%2f%2fevil.example",
    "/v1%5cevil",
    "/v1/%252e%252e/admin",
    "/v1/%40evil.example",
    "/v1/%3a8080",
    "/v1/%00",
    "/v1/%0d%0aHost:%20evil.example",
    "/v1\r\nHost: evil.example",
    "/v1/x#fragment",
    "v1/upload",
    "/../admin",
    "/v1/../../admin",
    "/%2e%2e/admin",
    "@evil.example/x",
    "/ v1",
    "/v1/x%",
    "/v1/x%g1",
    "http:/evil.example",
    "/\tv1",
    "javascript:alert(1)",
    "file:///etc/passwd",
    "",
    "/v1/%3F%23",
    "/v1/./upload",
    "/v1/a/../upload",
    "/v1/docs/a%20b",
    "/v1/caf%C3%A9",
];

/// Absolute URLs (a redirect's `Location`, say) whose host is internal, in every spelling.
const BAD_URLS: &[&str] = &[
    "http://127.0.0.1/",
    "http://127.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://017700000001/",
    "http://0177.0.0.1/",
    "http://0x7f.0x0.0x0.0x1/",
    "http://0/",
    "http://0.0.0.0/",
    "http://[::1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[64:ff9b:1::a9fe:a9fe]/",
    "http://[2002:a9fe:a9fe::]/",
    "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
    "http://[fd00:ec2::254]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fec0::1]/",
    "http://[ff02::1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://0xa9fea9fe/",
    "http://2852039166/",
    "http://0251.0376.0251.0376/",
    "http://169.254.0.1/",
    "http://10.0.0.1/",
    "http://10.255.255.255/",
    "http://172.16.0.1/",
    "http://172.31.255.255/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://100.127.255.254/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://198.18.0.1/",
    "http://user:pass@public.example.test/",
    "http://public.example.test@127.0.0.1/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://foo.localhost/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata/",
    "http://internal.example.test/",
    "http://loopback.example.test/",
    "http://metadata.example.test/",
    "http://rebind.example.test/",
    "http://v6private.example.test/",
    "http://mapped.example.test/",
    "http://cgnat.example.test/",
    "http://nxdomain.example.test/",
    "http://empty.example.test/",
];

#[test]
fn the_corpus_is_large_enough() {
    assert!(
        BAD_ENDPOINTS.len() + BAD_URLS.len() >= 60,
        "{} variants",
        BAD_ENDPOINTS.len() + BAD_URLS.len()
    );
}

#[test]
fn every_bad_endpoint_is_refused_with_a_reason() {
    let guard = guard();
    for endpoint in BAD_ENDPOINTS {
        match guard.endpoint_url(endpoint) {
            Ok(url) => panic!("{endpoint:?} was accepted as {url}"),
            Err(e) => {
                eprintln!("refused {e}");
                assert!(!e.to_string().is_empty());
            }
        }
    }
}

#[tokio::test]
async fn every_internal_host_is_refused_in_every_spelling() {
    let guard = guard();
    for raw in BAD_URLS {
        let url = Url::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        match guard.check_url(&url).await {
            Ok(addresses) => panic!("{raw} was allowed: {addresses:?}"),
            Err(e) => {
                eprintln!("refused {e}");
                assert!(!e.to_string().is_empty());
            }
        }
    }
}

#[tokio::test]
async fn numeric_encodings_are_judged_as_the_address_they_are() {
    let guard = guard();
    for raw in [
        "http://2852039166/",
        "http://0xa9fea9fe/",
        "http://0251.0376.0251.0376/",
    ] {
        let e = guard
            .check_url(&Url::parse(raw).unwrap())
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                SsrfError::ForbiddenAddress {
                    class: "cloud metadata",
                    ..
                }
            ),
            "{raw}: {e}"
        );
    }
    let e = guard
        .check_url(&Url::parse("http://rebind.example.test/").unwrap())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("127.0.0.1"), "{e}");
}

#[tokio::test]
async fn legitimate_requests_pass() {
    let guard = guard();
    for (endpoint, expected) in [
        ("/v1/upload", "http://api.example.test:8080/base/v1/upload"),
        (
            "/v1/documents/42?x=1&y=2",
            "http://api.example.test:8080/base/v1/documents/42?x=1&y=2",
        ),
        (
            "/v1/docs/a%2Db",
            "http://api.example.test:8080/base/v1/docs/a-b",
        ),
        ("/", "http://api.example.test:8080/base"),
    ] {
        let url = guard
            .endpoint_url(endpoint)
            .unwrap_or_else(|e| panic!("{endpoint}: {e}"));
        assert_eq!(url.as_str(), expected);
    }
    let url = guard.endpoint_url("/v1/%75pload").unwrap();
    assert_eq!(guard.relative_path(&url), "/v1/upload");
    // The configured target is trusted even though it resolves to a private address.
    assert_eq!(
        guard.addresses("api.example.test").await.unwrap(),
        vec!["10.9.8.7".parse::<IpAddr>().unwrap()]
    );
    for raw in [
        "http://public.example.test/",
        "http://public6.example.test/",
        "http://8.8.8.8/",
        "http://[2606:4700::1111]/",
        "http://172.32.0.1/",
        "http://100.128.0.1/",
    ] {
        guard
            .check_url(&Url::parse(raw).unwrap())
            .await
            .unwrap_or_else(|e| panic!("{raw}: {e}"));
    }
}
