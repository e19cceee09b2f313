//! The relay's metrics and health, served by the shared listener
//! ([`clustera::infra::http`]) like a kernel's: `/metrics` (OpenMetrics, prefix
//! `clustera_relay_`), `/healthz` (failing when the relay has made no progress for a while:
//! PostgreSQL or Kafka stuck) and `/readyz` (ready once it streams, or once a peek round has
//! completed).
//!
//! Progress, for the streaming relay: a status interval passed with its session open and
//! either nothing waiting for Kafka or some acknowledgement since the last one.

use std::time::Duration;

use clustera::infra::{Health, Observed};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

/// The slot's WAL behind the server's position, from `restart_lsn` (what the server
/// retains) and from `confirmed_flush_lsn` (what the relay has not confirmed), in bytes.
pub(crate) const SLOT_WAL_SQL: &str =
    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint,
            pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
     FROM pg_replication_slots WHERE slot_name = $1";

/// What the relay reports.
#[derive(Debug)]
pub struct RelayMetrics {
    registry: Registry,
    relayed: Counter,
    rounds: Counter,
    round_duration: Histogram,
    slot_lag: Gauge,
    retained_wal: Gauge,
    commit_to_ack: Histogram,
    status_updates: Counter,
}

impl Default for RelayMetrics {
    fn default() -> Self {
        Self::new()
    }
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
            "Completed peek rounds (peek read mode only)",
            rounds.clone(),
        );
        let round_duration = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register_with_unit(
            "round_duration",
            "Peek, send and confirm, for peek rounds that found events",
            Unit::Seconds,
            round_duration.clone(),
        );
        let slot_lag = Gauge::default();
        registry.register_with_unit(
            "slot_lag",
            "Unconfirmed WAL: between the server's position and the slot's confirmed_flush_lsn",
            Unit::Bytes,
            slot_lag.clone(),
        );
        let retained_wal = Gauge::default();
        registry.register_with_unit(
            "retained_wal",
            "Retained WAL: between the server's position and the slot's restart_lsn",
            Unit::Bytes,
            retained_wal.clone(),
        );
        let commit_to_ack = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register_with_unit(
            "commit_to_ack",
            "From a transaction's commit in PostgreSQL to Kafka's acknowledgement of its last event (streaming)",
            Unit::Seconds,
            commit_to_ack.clone(),
        );
        let status_updates = Counter::default();
        registry.register(
            "status_updates",
            "Standby status updates sent to PostgreSQL (streaming)",
            status_updates.clone(),
        );
        Self {
            registry,
            relayed,
            rounds,
            round_duration,
            slot_lag,
            retained_wal,
            commit_to_ack,
            status_updates,
        }
    }

    /// Records a completed round that sent `sent` events in `elapsed`.
    pub fn round(&self, sent: usize, elapsed: Duration) {
        self.rounds.inc();
        if sent > 0 {
            self.relayed.inc_by(sent as u64);
            self.round_duration.observe(elapsed.as_secs_f64());
        }
    }

    /// Records the slot's retained and unconfirmed WAL in bytes (`None`: unknown, as for a
    /// slot that was never used).
    pub fn slot_wal(&self, retained: Option<i64>, unconfirmed: Option<i64>) {
        if let Some(b) = retained {
            self.retained_wal.set(b);
        }
        if let Some(b) = unconfirmed {
            self.slot_lag.set(b);
        }
    }

    /// Records events acknowledged by Kafka (streaming).
    pub fn acknowledged(&self, events: u64) {
        self.relayed.inc_by(events);
    }

    /// Records a confirmed transaction's time from commit to acknowledgement.
    pub fn commit_to_ack(&self, seconds: f64) {
        self.commit_to_ack.observe(seconds.max(0.0));
    }

    /// Records a standby status update sent.
    pub fn status_update(&self) {
        self.status_updates.inc();
    }

    /// The metrics as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What the relay shows on the shared listener: its metrics and its health.
#[derive(Debug)]
pub struct RelayTelemetry {
    /// Rounds, events and the slot's lag.
    pub metrics: RelayMetrics,
    /// Live while rounds complete; ready after the first.
    pub health: Health,
}

impl RelayTelemetry {
    /// Liveness fails once no round has completed for `stall`.
    pub fn new(stall: Duration) -> Self {
        Self {
            metrics: RelayMetrics::new(),
            health: Health::for_loop(
                stall,
                "the relay's round loop",
                "no relay round has completed yet",
            ),
        }
    }

    /// Records a completed round that sent `sent` events in `elapsed`: metrics and health.
    pub fn round(&self, sent: usize, elapsed: Duration) {
        self.metrics.round(sent, elapsed);
        self.progressed();
    }

    /// The relay made progress: live, and ready.
    pub fn progressed(&self) {
        self.health.poll_turned();
        self.health.set_ready(true);
    }
}

impl Observed for RelayTelemetry {
    fn encode_metrics(&self) -> String {
        self.metrics.encode()
    }

    fn health(&self) -> &Health {
        &self.health
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_and_alerts_query_the_relays_metrics() {
        let m = RelayMetrics::new();
        m.acknowledged(1);
        m.commit_to_ack(0.1);
        m.slot_wal(Some(1), Some(1));
        m.status_update();
        let checked =
            clustera::testing::assert_deployed_metrics_exported("clustera_relay_", &m.encode());
        assert!(checked >= 5, "{checked} references to the relay's metrics");
    }
}
