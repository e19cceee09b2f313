//! Kernel status reporting: every running instance publishes a small JSON record to a
//! compacted status topic (`clustera.status` by default, `CLUSTERA_STATUS_TOPIC`) every
//! `CLUSTERA_STATUS_INTERVAL_MS` (10 s), so that a console sees every instance of every kernel
//! across hosts by reading one topic instead of scraping every pod's `/metrics`.
//!
//! The record's key is the instance ([`StatusRecord::key`]: `group/client id/host/pid`), so
//! compaction keeps one record per instance; a clean stop publishes a tombstone (null value)
//! for it. An instance that crashed leaves its last record behind: readers tell it is down
//! from its age ([`StatusRecord::is_stale`]). `CLUSTERA_STATUS_TOPIC=off` turns reporting off.
//!
//! Reporting never holds the kernel back: records go through their own small producer,
//! failures are logged and the next tick tries again.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::runtime::{RuntimeStats, StatsSnapshot};
use crate::telemetry::Telemetry;

/// The status topic when `CLUSTERA_STATUS_TOPIC` is not set.
pub const DEFAULT_STATUS_TOPIC: &str = "clustera.status";

/// How often an instance reports when `CLUSTERA_STATUS_INTERVAL_MS` is not set.
pub const DEFAULT_STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// The format version written in [`StatusRecord::version`].
pub const STATUS_VERSION: u32 = 1;

/// One instance's status, the JSON value of a status record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// Format version ([`STATUS_VERSION`]).
    pub version: u32,
    /// The kernel's name.
    pub kernel: String,
    /// Its consumer group.
    pub group: String,
    /// This instance's librdkafka `client.id`.
    pub client_id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The topics it consumes.
    pub topics: Vec<String>,
    /// When it started, in milliseconds since the epoch.
    pub started_ms: u64,
    /// When this record was made, in milliseconds since the epoch.
    pub at_ms: u64,
    /// The reporting interval in milliseconds: a record older than a few intervals means the
    /// instance is gone.
    pub interval_ms: u64,
    /// Partitions assigned now.
    pub assigned_partitions: i64,
    /// Messages taken and not yet done.
    pub in_flight: i64,
    /// Messages whose outcome is final since start (acked, skipped, dead-lettered).
    pub processed: u64,
    /// Messages dead-lettered since start.
    pub dead_lettered: u64,
    /// Attempts that ended in a retry since start.
    pub retries: u64,
    /// Failed deliveries and commits since start.
    pub errors: u64,
    /// Messages done per second over the last interval.
    pub processed_per_s: f64,
    /// Dead letters per second over the last interval.
    pub dead_lettered_per_s: f64,
    /// Retries per second over the last interval.
    pub retries_per_s: f64,
    /// Failed deliveries and commits per second over the last interval.
    pub errors_per_s: f64,
    /// Liveness, as `/healthz` reports it.
    pub live: bool,
    /// Readiness, as `/readyz` reports it.
    pub ready: bool,
    /// What is wrong, one line each (empty when healthy).
    pub problems: Vec<String>,
}

impl StatusRecord {
    /// The record's key: one per running instance.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.group, self.client_id, self.host, self.pid
        )
    }

    /// Whether an instance that reported this has gone silent at `now_ms`: no record for
    /// three intervals (and at least 30 s, so that a busy broker does not flap it).
    pub fn is_stale(&self, now_ms: u64) -> bool {
        let grace = (self.interval_ms.saturating_mul(3)).max(30_000);
        now_ms.saturating_sub(self.at_ms) > grace
    }

    /// Seconds since the instance started, at `now_ms`.
    pub fn uptime_s(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.started_ms) / 1000
    }
}

/// What does not change from one report to the next.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub kernel: String,
    pub group: String,
    pub client_id: String,
    pub topics: Vec<String>,
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// This machine's name: `HOSTNAME`, the kernel's hostname, or `unknown`.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Rate of `now - before` over `seconds`.
fn rate(now: u64, before: u64, seconds: f64) -> f64 {
    if seconds <= 0.0 {
        return 0.0;
    }
    now.saturating_sub(before) as f64 / seconds
}

/// Builds the record from the counters now and at the previous report. Pure.
pub(crate) fn build_record(
    id: &Identity,
    host: &str,
    started_ms: u64,
    interval: Duration,
    (now, at_ms): (&StatsSnapshot, u64),
    (before, before_ms): (&StatsSnapshot, u64),
    telemetry: &Telemetry,
) -> StatusRecord {
    let seconds = at_ms.saturating_sub(before_ms) as f64 / 1000.0;
    let errors = |s: &StatsSnapshot| s.produce_failures + s.commit_failures;
    let live = telemetry.health.liveness();
    let ready = telemetry.health.readiness();
    let mut problems = live.problems;
    problems.extend(ready.problems);
    StatusRecord {
        version: STATUS_VERSION,
        kernel: id.kernel.clone(),
        group: id.group.clone(),
        client_id: id.client_id.clone(),
        host: host.to_owned(),
        pid: std::process::id(),
        topics: id.topics.clone(),
        started_ms,
        at_ms,
        interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
        assigned_partitions: telemetry.metrics.assigned.get(),
        in_flight: telemetry.metrics.in_flight.get(),
        processed: now.processed(),
        dead_lettered: now.dead_lettered,
        retries: now.retries,
        errors: errors(now),
        processed_per_s: rate(now.processed(), before.processed(), seconds),
        dead_lettered_per_s: rate(now.dead_lettered, before.dead_lettered, seconds),
        retries_per_s: rate(now.retries, before.retries, seconds),
        errors_per_s: rate(errors(now), errors(before), seconds),
        live: live.ok,
        ready: ready.ok,
        problems,
    }
}

/// The reporting task of one running kernel; publishes a tombstone when stopped with
/// [`StatusReporter::stop`].
pub(crate) struct StatusReporter {
    task: tokio::task::JoinHandle<()>,
    producer: FutureProducer,
    topic: String,
    key: String,
}

impl StatusReporter {
    /// Starts reporting to `topic` every `interval`. `client` is the kernel's common client
    /// configuration (brokers, security).
    pub(crate) fn start(
        client: &ClientConfig,
        topic: String,
        interval: Duration,
        id: Identity,
        stats: Arc<RuntimeStats>,
        telemetry: Arc<Telemetry>,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let mut config = client.clone();
        // Status is best effort: a record that cannot go out within two intervals is
        // replaced by the next one anyway.
        config.set(
            "message.timeout.ms",
            (interval.as_millis().max(1000) * 2).to_string(),
        );
        config.set("linger.ms", "0");
        let producer: FutureProducer = config.create()?;
        let host = host_name();
        let started_ms = now_ms();
        let key = StatusRecord::key(&build_record(
            &id,
            &host,
            started_ms,
            interval,
            (&StatsSnapshot::default(), started_ms),
            (&StatsSnapshot::default(), started_ms),
            &telemetry,
        ));
        let task = {
            let (producer, topic, key) = (producer.clone(), topic.clone(), key.clone());
            tokio::spawn(async move {
                let mut before = (StatsSnapshot::default(), started_ms);
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut warned = false;
                loop {
                    ticks.tick().await;
                    let now = (stats.snapshot(), now_ms());
                    let record = build_record(
                        &id,
                        &host,
                        started_ms,
                        interval,
                        (&now.0, now.1),
                        (&before.0, before.1),
                        &telemetry,
                    );
                    before = now;
                    let Ok(value) = serde_json::to_vec(&record) else {
                        continue;
                    };
                    let sent = producer
                        .send(
                            FutureRecord::to(&topic).key(&key).payload(&value),
                            Duration::ZERO,
                        )
                        .await;
                    match sent {
                        Ok(_) => warned = false,
                        // Once per outage: the kernel's own logs already say the brokers
                        // are unreachable.
                        Err((e, _)) if !warned => {
                            warned = true;
                            tracing::warn!(topic = %topic, error = %e,
                                "cannot publish the kernel's status record; retrying every interval");
                        }
                        Err(_) => {}
                    }
                }
            })
        };
        Ok(Self {
            task,
            producer,
            topic,
            key,
        })
    }

    /// Stops reporting and publishes the instance's tombstone, so that consoles stop
    /// showing it at once (and compaction forgets it).
    pub(crate) async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        let tombstone = FutureRecord::<str, [u8]>::to(&self.topic).key(&self.key);
        let sent = tokio::time::timeout(
            Duration::from_secs(2),
            self.producer.send(tombstone, Duration::ZERO),
        )
        .await;
        if !matches!(sent, Ok(Ok(_))) {
            tracing::debug!(topic = %self.topic, "status tombstone not delivered");
        }
        let producer = self.producer;
        let _ = tokio::task::spawn_blocking(move || {
            let _ = producer.flush(Duration::from_secs(1));
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{Health, Redactor};

    #[test]
    fn records_carry_rates_over_the_interval_and_round_trip_as_json() {
        let telemetry = Telemetry::new(
            "k",
            Health::new(Duration::from_secs(60)),
            Redactor::new(Vec::<String>::new()),
        );
        telemetry.health.poll_turned();
        let id = Identity {
            kernel: "k".into(),
            group: "g".into(),
            client_id: "c".into(),
            topics: vec!["in".into()],
        };
        let before = StatsSnapshot {
            acked: 100,
            retries: 4,
            ..StatsSnapshot::default()
        };
        let now = StatsSnapshot {
            acked: 150,
            dead_lettered: 2,
            retries: 14,
            commit_failures: 1,
            ..StatsSnapshot::default()
        };
        let r = build_record(
            &id,
            "h",
            1_000,
            Duration::from_secs(10),
            (&now, 21_000),
            (&before, 11_000),
            &telemetry,
        );
        assert_eq!(
            r.key(),
            "g/c/h/".to_owned() + &std::process::id().to_string()
        );
        assert_eq!(r.processed, 152);
        assert!((r.processed_per_s - 5.2).abs() < 1e-9);
        assert!((r.retries_per_s - 1.0).abs() < 1e-9);
        assert!((r.errors_per_s - 0.1).abs() < 1e-9);
        assert_eq!(r.uptime_s(21_000), 20);
        assert!(r.live);
        assert!(!r.ready, "not in the group yet");
        assert_eq!(r.problems.len(), 1);
        assert!(!r.is_stale(21_000 + 30_000));
        assert!(r.is_stale(21_000 + 30_001));
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<StatusRecord>(&json).unwrap(), r);
    }
}
