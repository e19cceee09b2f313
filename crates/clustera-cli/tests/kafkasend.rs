//! `clustera portal` and `clustera send` as processes: a file through the portal and back
//! (and standard input to standard output), a refused endpoint, refused settings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::process::{Child, Command, Output, Stdio};

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;

const BIN: &str = env!("CARGO_BIN_EXE_clustera");

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An echo API on loopback, served from its own thread.
fn api() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let app = Router::new()
                .route("/api/v1/echo", post(|body: Bytes| async move { body }))
                .layer(axum::extract::DefaultBodyLimit::disable());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(format!("http://{}/api", listener.local_addr().unwrap()))
                .unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    rx.recv().unwrap()
}

fn send(bootstrap: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .arg("send")
        .args(args)
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
        .env("KAFKASEND_CHUNK_SIZE", "100000")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

#[test]
fn files_and_standard_input_go_through_the_portal_and_back() {
    let broker = clustera::testing::MockBroker::start(1).unwrap();
    for topic in ["kafkasend-requests", "kafkasend-responses"] {
        broker.create_topic(topic, 3).unwrap();
    }
    broker.create_topic("kafkasend-requests.dlq", 1).unwrap();
    let bootstrap = broker.bootstrap().to_owned();
    let api = api();
    let _portal = Killed(
        Command::new(BIN)
            .arg("portal")
            .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
            .env("PORTAL_API_BASE_URL", &api)
            .env("PORTAL_ALLOWED_ENDPOINTS", "/v1/echo")
            .env("KAFKASEND_CHUNK_SIZE", "100000")
            .env("KAFKA_PROPERTY_FETCH_WAIT_MAX_MS", "10")
            .env("CLUSTERA_HTTP_ADDR", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    let output = dir.path().join("out.bin");
    let body: Vec<u8> = (0..1_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&input, &body).unwrap();
    // The first job also waits for the portal to join its group: it reads from the start.
    let out = send(
        &bootstrap,
        &[
            "--endpoint",
            "/v1/echo",
            "--file",
            input.to_str().unwrap(),
            "--output",
            output.to_str().unwrap(),
            "--header",
            "Content-Type=application/octet-stream",
            "--timeout",
            "60",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&output).unwrap() == body,
        "the file came back changed"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 200 (1000000 bytes)"));

    let out = send(
        &bootstrap,
        &[
            "--endpoint",
            "/v1/echo",
            "--file",
            "-",
            "--timeout",
            "30",
            "--client-id",
            "cli-test",
        ],
        Some(b"hello portal"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"hello portal");
    // The head names the client as --client-id said, and its reply topic.
    let heads: Vec<clustera_send_protocol::RequestHead> =
        clustera::testing::kafka::read_topic(&bootstrap, "kafkasend-requests")
            .unwrap()
            .iter()
            .filter_map(|r| {
                match clustera_send_protocol::Envelope::decode(r.value.as_deref()?).ok()? {
                    clustera_send_protocol::Envelope::Request(h) => Some(h),
                    _ => None,
                }
            })
            .collect();
    let named: Vec<_> = heads
        .iter()
        .filter(|h| h.client_id.as_deref() == Some("cli-test"))
        .collect();
    assert_eq!(named.len(), 1, "{heads:?}");
    assert_eq!(named[0].reply_to.as_deref(), Some("kafkasend-responses"));

    let out = send(
        &bootstrap,
        &["--endpoint", "/v1/admin", "--timeout", "30"],
        None,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not on the allow-list"), "{stderr}");

    let out = send(
        &bootstrap,
        &["--endpoint", "/v1/echo", "--header", "no-equals"],
        None,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not NAME=VALUE"));
}

#[test]
fn the_portal_refuses_inconsistent_settings_by_name() {
    let run = |vars: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.arg("portal")
            .env("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
            .env("CLUSTERA_HTTP_ADDR", "off");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run(&[]);
    assert!(e.contains("PORTAL_API_BASE_URL"), "{e}");
    let e = run(&[("PORTAL_API_BASE_URL", "http://127.0.0.1:1")]);
    assert!(e.contains("PORTAL_ALLOWED_ENDPOINTS"), "{e}");
    let e = run(&[
        ("PORTAL_API_BASE_URL", "http://127.0.0.1:1"),
        ("PORTAL_ALLOWED_ENDPOINTS", "/x"),
        ("KAFKA_MAX_POLL_INTERVAL_MS", "60000"),
    ]);
    assert!(
        e.contains("KAFKA_MAX_POLL_INTERVAL_MS") && e.contains("PORTAL_JOB_TIMEOUT_SECONDS"),
        "{e}"
    );
    let e = run(&[
        ("PORTAL_API_BASE_URL", "http://127.0.0.1:1"),
        ("PORTAL_ALLOWED_ENDPOINTS", "/x"),
        ("KAFKASEND_CHUNK_SIZE", "2000000"),
    ]);
    assert!(e.contains("KAFKASEND_CHUNK_SIZE"), "{e}");
}
