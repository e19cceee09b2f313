//! Optional OTLP export: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, a kernel process exports the
//! span in which it processed a traced message, as a child of the message's trace, and the
//! outputs carry that exported span's id. The collector is a real HTTP server on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use clustera::testing::kafka;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_spans_are_exported_as_children_of_the_message_trace() {
    // The collector: stores every export request.
    let received: Arc<Mutex<Vec<Bytes>>> = Arc::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push(body);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (_broker, bootstrap) = mock_with_sequence(&[("ot-in", 1), ("ot-out", 1)], 0).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let b = bootstrap.clone();
    blocking(move || {
        let header = (
            "traceparent".to_owned(),
            format!("00-{trace_id}-{parent_id}-01"),
        );
        kafka::produce(
            &b,
            "ot-in",
            [(Some(b"k".to_vec()), b"{}".to_vec(), vec![header])],
        )
        .unwrap()
    })
    .await;

    let mut child = Command::new(example_bin("transform"))
        .env_clear()
        .env("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)
        .env("KAFKA_TOPIC", "ot-in")
        .env("OUTPUT_TOPIC", "ot-out")
        .env("CLUSTERA_HTTP_ADDR", "off")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}"))
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let b = bootstrap.clone();
    wait_for_blocking("the output", Duration::from_secs(60), move || {
        kafka::high_watermarks(&b, "ot-out")
            .unwrap()
            .values()
            .sum::<i64>()
            >= 1
    })
    .await;
    // A graceful stop flushes the exporter.
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let status = blocking(move || child.wait().unwrap()).await;
    assert!(status.success());

    let b = bootstrap.clone();
    let outputs = blocking(move || kafka::read_topic(&b, "ot-out").unwrap()).await;
    let propagated = outputs[0]
        .header("traceparent")
        .expect("output carries a traceparent");
    let parts: Vec<&str> = propagated.split('-').collect();
    assert_eq!(parts[1], trace_id);

    let spans: Vec<_> = received
        .lock()
        .unwrap()
        .iter()
        .map(|body| ExportTraceServiceRequest::decode(body.as_ref()).expect("OTLP protobuf"))
        .flat_map(|r| r.resource_spans)
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect();
    let span = spans
        .iter()
        .find(|s| s.name == "message")
        .unwrap_or_else(|| {
            panic!(
                "no message span among {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert_eq!(hex(&span.trace_id), trace_id, "same trace");
    assert_eq!(
        hex(&span.parent_span_id),
        parent_id,
        "child of the message's span"
    );
    assert_eq!(
        hex(&span.span_id),
        parts[2],
        "outputs name the exported span"
    );
}
