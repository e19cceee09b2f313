//! The relay's metrics and health, served by the shared listener
//! ([`clustera::infra::http`]) like a kernel's: `/metrics` (OpenMetrics, prefix
//! `clustera_relay_`), `/healthz` (failing when no round has completed for a while: PostgreSQL
//! or Kafka stuck) and `/readyz` (ready once a round has completed).

use std::time::Duration;

use clustera::infra::{Health, Observed};
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

    /// Records the slot's lag in bytes.
    pub fn slot_lag(&self, bytes: i64) {
        self.slot_lag.set(bytes);
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
