//! What a running kernel tells its operator: Prometheus metrics, liveness and readiness, and
//! structured logs. One HTTP listener (`CLUSTERA_HTTP_ADDR`, [`crate::infra::http`]) serves
//! `/metrics`, `/healthz` and `/readyz`.

mod histogram;
mod logging;
mod metrics;
mod otel;
pub mod status;

use std::net::SocketAddr;
use std::sync::OnceLock;

pub use crate::infra::health::{Health, HealthReport};
pub(crate) use histogram::DurationHistogram;
pub(crate) use logging::Redactor;
pub use logging::{init_kernel_logging, init_logging, init_logging_with_default, LoggingGuard};
pub use metrics::KernelMetrics;
pub(crate) use metrics::PartitionMetrics;
pub(crate) use otel::continue_trace;

/// Metrics and health of one kernel, shared by the runtime and its HTTP listener.
#[derive(Debug)]
pub struct Telemetry {
    /// The Prometheus registry and its metrics.
    pub metrics: KernelMetrics,
    /// Liveness and readiness.
    pub health: Health,
    http_addr: OnceLock<SocketAddr>,
    pub(crate) redactor: Redactor,
}

impl Telemetry {
    pub(crate) fn new(kernel: &str, health: Health, redactor: Redactor) -> Self {
        Self {
            metrics: KernelMetrics::new(kernel),
            health,
            http_addr: OnceLock::new(),
            redactor,
        }
    }

    /// The address the HTTP listener is bound to, once it is (useful with port 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr.get().copied()
    }

    pub(crate) fn set_http_addr(&self, addr: SocketAddr) {
        let _ = self.http_addr.set(addr);
    }
}

impl crate::infra::http::Observed for Telemetry {
    fn encode_metrics(&self) -> String {
        self.metrics.encode()
    }

    fn health(&self) -> &Health {
        &self.health
    }
}
