//! The portal's own metrics, served with the runtime's on `/metrics` (prefix `clustera_`,
//! label `kernel`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

type Labels = Vec<(&'static str, &'static str)>;

/// Jobs, bytes and calls.
#[derive(Debug, Clone)]
pub struct PortalMetrics {
    /// Jobs answered, by result (`ok` or the error code).
    pub jobs: Family<Labels, Counter>,
    /// Jobs being received or called.
    pub active: Gauge,
    /// Request body bytes reserved by active jobs.
    pub inflight_bytes: Gauge,
    /// Body bytes moved, by direction (`request`, `response`).
    pub body_bytes: Family<Labels, Counter>,
    /// REST call durations.
    pub calls: Histogram,
}

impl Default for PortalMetrics {
    fn default() -> Self {
        Self {
            jobs: Family::default(),
            active: Gauge::default(),
            inflight_bytes: Gauge::default(),
            body_bytes: Family::default(),
            calls: Histogram::new(exponential_buckets(0.005, 2.0, 18)),
        }
    }
}

impl PortalMetrics {
    /// Registers every metric.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("kafkasend");
        r.register("jobs", "Jobs answered, by result", self.jobs.clone());
        r.register(
            "jobs_active",
            "Jobs being received or called",
            self.active.clone(),
        );
        r.register_with_unit(
            "inflight",
            "Request body bytes held by active jobs",
            Unit::Bytes,
            self.inflight_bytes.clone(),
        );
        r.register_with_unit(
            "body",
            "Body bytes moved, by direction",
            Unit::Bytes,
            self.body_bytes.clone(),
        );
        r.register_with_unit(
            "call_duration",
            "REST call durations",
            Unit::Seconds,
            self.calls.clone(),
        );
    }

    /// Counts an answered job.
    pub fn answered(&self, result: &'static str) {
        self.jobs.get_or_create(&vec![("result", result)]).inc();
    }

    /// Counts body bytes.
    pub fn moved(&self, direction: &'static str, bytes: u64) {
        self.body_bytes
            .get_or_create(&vec![("direction", direction)])
            .inc_by(bytes);
    }

    /// Sets the gauges from the job table.
    pub fn occupancy(&self, active: usize, inflight_bytes: u64) {
        self.active.set(i64::try_from(active).unwrap_or(i64::MAX));
        self.inflight_bytes
            .set(i64::try_from(inflight_bytes).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_and_alerts_query_the_portals_metrics() {
        // As the runtime serves them: under the `clustera_` prefix.
        let mut registry = Registry::with_prefix("clustera");
        let m = PortalMetrics::default();
        m.answered("ok");
        m.register(&mut registry);
        let mut text = String::new();
        clustera::prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let checked =
            clustera::testing::assert_deployed_metrics_exported("clustera_kafkasend_", &text);
        assert!(checked >= 3, "{checked} references to the portal's metrics");
    }
}
