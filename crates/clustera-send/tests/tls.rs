//! HTTPS to the REST API: trusted through `PORTAL_API_CA_CERT`, refused without it. The API is
//! a TLS server on loopback with a certificate for 127.0.0.1 from a test CA
//! (`tests/testdata`, valid until 2125).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use base64::Engine as _;
use clustera_send::client::{Body, ClientError, Quiet, Request};
use clustera_send_protocol::ErrorCode;
use common::*;
use tokio::net::{TcpListener, TcpStream};
use tokio_native_tls::{TlsAcceptor, TlsStream};

/// Accepts TLS connections for axum.
struct TlsListener {
    tcp: TcpListener,
    tls: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that does not trust us fails its handshake: wait for the next one.
            if let Ok(tls) = self.tls.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn https_api() -> String {
    let identity = native_tls::Identity::from_pkcs8(
        include_bytes!("testdata/server.crt"),
        include_bytes!("testdata/server.key"),
    )
    .unwrap();
    let tls = TlsAcceptor::from(native_tls::TlsAcceptor::new(identity).unwrap());
    let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://127.0.0.1:{}/api", tcp.local_addr().unwrap().port());
    let app = Router::new().route("/api/v1/documents/{id}", get(|| async { "over TLS" }));
    tokio::spawn(async move { axum::serve(TlsListener { tcp, tls }, app).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn https_apis_are_reached_with_the_configured_ca_and_refused_without() {
    let (_broker, bootstrap) = mock();
    // Only its address is replaced: the portals call the HTTPS server below.
    let api = Api {
        url: String::new(),
        state: Default::default(),
    };
    let base = https_api().await;
    let ca = base64::engine::general_purpose::STANDARD.encode(include_bytes!("testdata/ca.crt"));
    let request = || Request {
        method: "GET".into(),
        endpoint: "/v1/documents/1".into(),
        headers: vec![],
    };
    let trusted = portal(
        &bootstrap,
        &api,
        &[
            ("PORTAL_API_BASE_URL", base.as_str()),
            ("PORTAL_API_CA_CERT", ca.as_str()),
        ],
    )
    .await;
    let client = client(&bootstrap, 65_536).await;
    let response = client
        .send(request(), Body::Empty, Duration::from_secs(30), &Quiet)
        .await
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.body.read(0, 100).unwrap(), b"over TLS");
    trusted.stop().await;

    // A portal of its own (a new group on the mock waits for the old member's timeouts).
    let (_other_broker, other) = mock();
    let _untrusted = portal(&other, &api, &[("PORTAL_API_BASE_URL", base.as_str())]).await;
    let client = self::client(&other, 65_536).await;
    match client
        .send(request(), Body::Empty, Duration::from_secs(30), &Quiet)
        .await
    {
        Err(ClientError::Portal { code, message }) => {
            assert_eq!(code, ErrorCode::Upstream, "{message}");
            assert!(message.contains("certificate"), "{message}");
            assert!(!message.contains("127.0.0.1"), "{message}");
        }
        other => panic!("expected a certificate failure, got {other:?}"),
    }
}
