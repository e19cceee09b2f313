//! The relay's metrics and health, served over HTTP like a kernel's: `/metrics` (OpenMetrics,
//! prefix `clustera_relay_`) and `/healthz` (failing when no round has completed for a while:
//! PostgreSQL or Kafka stuck).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// What the relay reports.
#[derive(Debug)]
pub struct RelayMetrics {
    registry: Registry,
    relayed: Counter,
    rounds: Counter,
    round_duration: Histogram,
    slot_lag: Gauge,
    /// When the last round completed, milliseconds since the Unix epoch.
    last_round_ms: AtomicU64,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl RelayMetrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("clustera_relay");
        let relayed = Counter::default();
        registry.register(
            "events",
            "Outbox events acknowledged by Kafka",
            relayed.clone(),
        );
        let rounds = Counter::default();
        registry.register(
            "rounds",
            "Completed reads of the replication slot",
            rounds.clone(),
        );
        let round_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register_with_unit(
            "round_duration",
            "Peek, send and confirm, for rounds that found events",
            Unit::Seconds,
            round_duration.clone(),
        );
        let slot_lag = Gauge::default();
        registry.register_with_unit(
            "slot_lag",
            "WAL between the server's position and the slot's confirmed position",
            Unit::Bytes,
            slot_lag.clone(),
        );
        Self {
            registry,
            relayed,
            rounds,
            round_duration,
            slot_lag,
            last_round_ms: AtomicU64::new(now_ms()),
        }
    }

    /// Records a completed round that sent `sent` events in `elapsed`.
    pub fn round(&self, sent: usize, elapsed: Duration) {
        self.rounds.inc();
        if sent > 0 {
            self.relayed.inc_by(sent as u64);
            self.round_duration.observe(elapsed.as_secs_f64());
        }
        self.last_round_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Records the slot's lag in bytes.
    pub fn slot_lag(&self, bytes: i64) {
        self.slot_lag.set(bytes);
    }

    /// How long since the last completed round.
    pub fn since_last_round(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last_round_ms.load(Ordering::Relaxed)))
    }

    /// The metrics as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `/metrics` and `/healthz` on `addr`; `/healthz` fails once no round completed for
/// `stall`. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<RelayMetrics>,
    stall: Duration,
) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let m = metrics.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move {
                    (
                        [(
                            "content-type",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let m = metrics.clone();
                async move {
                    let since = m.since_last_round();
                    if since > stall {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("no relay round completed for {} s", since.as_secs()),
                        )
                    } else {
                        (StatusCode::OK, "ok".to_owned())
                    }
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "relay HTTP listener failed");
        }
    });
    Ok(bound)
}
