//! The kernel's HTTP listener: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use super::{HealthReport, Telemetry};

/// Serves until the task is dropped.
pub(crate) async fn serve(listener: TcpListener, telemetry: Arc<Telemetry>) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(telemetry);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "HTTP listener failed");
    }
}

async fn metrics(State(t): State<Arc<Telemetry>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        t.metrics.encode(),
    )
        .into_response()
}

fn report(r: HealthReport) -> Response {
    let status = if r.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(r)).into_response()
}

async fn healthz(State(t): State<Arc<Telemetry>>) -> Response {
    report(t.health.liveness())
}

async fn readyz(State(t): State<Arc<Telemetry>>) -> Response {
    report(t.health.readiness())
}
