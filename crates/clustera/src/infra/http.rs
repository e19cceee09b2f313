//! The one HTTP listener of every process (kernels, the portal, the outbox relay):
//! `/metrics` (OpenMetrics), `/healthz` (liveness) and `/readyz` (readiness), on the address
//! `CLUSTERA_HTTP_ADDR` gives.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use super::env::{ConfigError, Vars};
use super::health::{Health, HealthReport};

/// The variable naming the listener's address, or `off`.
pub const HTTP_ADDR_VARIABLE: &str = "CLUSTERA_HTTP_ADDR";

/// Where the listener binds when `CLUSTERA_HTTP_ADDR` is not set.
pub const DEFAULT_HTTP_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8080);

/// `CLUSTERA_HTTP_ADDR`: an address like `0.0.0.0:8080`, `off` for no listener, unset for
/// [`DEFAULT_HTTP_ADDR`].
pub fn http_addr_from_vars(var: Vars<'_>) -> Result<Option<SocketAddr>, ConfigError> {
    match var(HTTP_ADDR_VARIABLE)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
    {
        None => Ok(Some(DEFAULT_HTTP_ADDR)),
        Some(v) if v.eq_ignore_ascii_case("off") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ConfigError::invalid(
                HTTP_ADDR_VARIABLE,
                format!("{v:?} is not an address like 0.0.0.0:8080 (or `off`)"),
            )
        }),
    }
}

/// What a process shows on its listener.
pub trait Observed: Send + Sync + 'static {
    /// The metrics, as OpenMetrics text.
    fn encode_metrics(&self) -> String;
    /// Liveness and readiness.
    fn health(&self) -> &Health;
}

/// The listener could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{HTTP_ADDR_VARIABLE} {addr}: cannot listen: {source}")]
pub struct ListenError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why it failed.
    #[source]
    pub source: std::io::Error,
}

/// A running listener; it stops when dropped.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// The address it is bound to (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `addr` and serves `observed` until the returned server is dropped. Must be called
/// within a tokio runtime.
pub async fn serve(
    addr: SocketAddr,
    observed: Arc<dyn Observed>,
) -> Result<HttpServer, ListenError> {
    let error = |source| ListenError { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(observed);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP listener failed");
        }
    });
    tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz");
    Ok(HttpServer { addr: bound, task })
}

type Shown = State<Arc<dyn Observed>>;

async fn metrics(State(o): Shown) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        o.encode_metrics(),
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

async fn healthz(State(o): Shown) -> Response {
    report(o.health().liveness())
}

async fn readyz(State(o): Shown) -> Response {
    report(o.health().readiness())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_parsed_or_refused_by_name() {
        let one = |v: &'static str| move |n: &str| (n == HTTP_ADDR_VARIABLE).then(|| v.to_owned());
        assert_eq!(http_addr_from_vars(&|_| None), Ok(Some(DEFAULT_HTTP_ADDR)));
        assert_eq!(http_addr_from_vars(&one("OFF")), Ok(None));
        assert_eq!(
            http_addr_from_vars(&one("127.0.0.1:9")),
            Ok(Some(SocketAddr::from(([127, 0, 0, 1], 9))))
        );
        let e = http_addr_from_vars(&one("everywhere")).unwrap_err();
        assert_eq!(e.variable, HTTP_ADDR_VARIABLE);
    }
}
