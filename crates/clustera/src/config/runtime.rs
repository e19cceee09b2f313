//! The runtime's own settings: the `CLUSTERA_*` variables.

use std::time::Duration;

use super::{valid_topic_name, ConfigError};
use crate::infra::env::number;
use crate::infra::http::{http_addr_from_vars, DEFAULT_HTTP_ADDR};
pub use crate::runtime::lanes::ProcessingOrder;
pub use crate::runtime::transaction::Guarantee;

/// How the runtime processes messages; the `CLUSTERA_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSettings {
    /// Attempts before a failing message is dead-lettered; `None` retries forever.
    pub max_attempts: Option<u32>,
    /// First retry delay; doubles with jitter up to `retry_max_delay`.
    pub retry_initial_delay: Duration,
    /// Upper bound on one retry delay.
    pub retry_max_delay: Duration,
    /// Commit at least this often while progress is made.
    pub commit_interval: Duration,
    /// Commit as soon as this many messages are done since the last commit.
    pub commit_every: u64,
    /// On shutdown or revocation: how long in-flight messages and their outputs may take.
    pub drain_timeout: Duration,
    /// One dead-letter topic for all inputs; by default each input `T` uses `T.dlq`.
    pub dead_letter_topic: Option<String>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None` serves nothing.
    pub http_addr: Option<std::net::SocketAddr>,
    /// Liveness fails when a partition with work makes no progress for this long.
    pub stall_timeout: Duration,
    /// Most messages of one partition handed to [`Kernel::process_batch`](crate::Kernel::process_batch)
    /// at once; `None` uses the kernel's [`max_batch`](crate::Kernel::max_batch).
    pub batch_size: Option<usize>,
    /// The kernel's memory budget in bytes (`CLUSTERA_MEMORY_BYTES`), divided into prefetch,
    /// the producer's queue and retained inputs ([`super::budget`]); `None` (`off`) leaves
    /// librdkafka's limits at 8 MiB of prefetch per partition.
    pub memory_bytes: Option<u64>,
    /// Most deferred tasks ([`Context::defer`](crate::Context::defer)) of one partition
    /// running at once (`CLUSTERA_MAX_DEFERRED`); the partition waits for a free slot.
    pub max_deferred: usize,
    /// How a partition's messages are ordered (`CLUSTERA_ORDERING`): one at a time, by key,
    /// or not at all.
    pub ordering: ProcessingOrder,
    /// Under `key` or `none` ordering, the most messages of one partition taken and not yet
    /// done (`CLUSTERA_MAX_IN_FLIGHT`); the partition is not read further meanwhile.
    pub max_in_flight: usize,
    /// The most messages of one partition done or in process but not yet committable
    /// (`CLUSTERA_MAX_UNCOMMITTED`): behind a message that is not done (a slow deferred task,
    /// outputs held by an outage) the partition is read no further past this many.
    pub max_uncommitted: usize,
    /// At-least-once or exactly-once (`CLUSTERA_GUARANTEE`); see `runtime::transaction`.
    pub guarantee: Guarantee,
    /// Under exactly-once, this instance's `transactional.id` (`CLUSTERA_TRANSACTIONAL_ID`);
    /// `None` uses `<group>-<client id>`. A stable id per instance lets a restarted instance
    /// abort its predecessor's open transaction at once instead of after
    /// `transaction_timeout`.
    pub transactional_id: Option<String>,
    /// Under exactly-once, how long a transaction may stay open before the broker aborts it
    /// (`CLUSTERA_TRANSACTION_TIMEOUT_MS`, librdkafka's `transaction.timeout.ms`); also the
    /// bound on each transactional call.
    pub transaction_timeout: Duration,
    /// Where this instance reports its status (`CLUSTERA_STATUS_TOPIC`, `off` for nowhere);
    /// see [`crate::telemetry::status`].
    pub status_topic: Option<String>,
    /// How often it reports (`CLUSTERA_STATUS_INTERVAL_MS`).
    pub status_interval: Duration,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        Self {
            max_attempts: Some(5),
            retry_initial_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_secs(30),
            commit_interval: Duration::from_millis(100),
            commit_every: 10_000,
            drain_timeout: Duration::from_secs(30),
            dead_letter_topic: None,
            http_addr: Some(DEFAULT_HTTP_ADDR),
            stall_timeout: Duration::from_secs(300),
            batch_size: None,
            memory_bytes: Some(super::budget::DEFAULT_MEMORY_BYTES),
            max_deferred: 16,
            ordering: ProcessingOrder::Partition,
            max_in_flight: 256,
            max_uncommitted: 10_000,
            guarantee: Guarantee::AtLeastOnce,
            transactional_id: None,
            transaction_timeout: Duration::from_secs(10),
            status_topic: Some(crate::telemetry::status::DEFAULT_STATUS_TOPIC.to_owned()),
            status_interval: crate::telemetry::status::DEFAULT_STATUS_INTERVAL,
        }
    }
}

impl RuntimeSettings {
    /// The dead-letter topic for messages read from `input_topic`.
    pub fn dead_letter_topic_for(&self, input_topic: &str) -> String {
        dead_letter_topic(self.dead_letter_topic.as_deref(), input_topic)
    }
}

/// `configured` (`CLUSTERA_DLQ_TOPIC`) for every input, or `<input_topic>.dlq`.
pub(crate) fn dead_letter_topic(configured: Option<&str>, input_topic: &str) -> String {
    match configured {
        Some(t) => t.to_owned(),
        None => format!("{input_topic}.dlq"),
    }
}

pub(super) fn runtime_from_vars(
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<RuntimeSettings, ConfigError> {
    let d = RuntimeSettings::default();
    let max_attempts = match number::<u32>(var, "CLUSTERA_MAX_ATTEMPTS")? {
        None => d.max_attempts,
        Some(0) => None,
        Some(n) => Some(n),
    };
    let ms = |name: &str, default: Duration| -> Result<Duration, ConfigError> {
        Ok(number::<u64>(var, name)?.map_or(default, Duration::from_millis))
    };
    let settings = RuntimeSettings {
        max_attempts,
        retry_initial_delay: ms("CLUSTERA_RETRY_INITIAL_MS", d.retry_initial_delay)?,
        retry_max_delay: ms("CLUSTERA_RETRY_MAX_MS", d.retry_max_delay)?,
        commit_interval: ms("CLUSTERA_COMMIT_INTERVAL_MS", d.commit_interval)?,
        commit_every: number(var, "CLUSTERA_COMMIT_EVERY")?.unwrap_or(d.commit_every),
        drain_timeout: ms("CLUSTERA_DRAIN_TIMEOUT_MS", d.drain_timeout)?,
        dead_letter_topic: var("CLUSTERA_DLQ_TOPIC").filter(|v| !v.is_empty()),
        http_addr: http_addr_from_vars(var)?,
        stall_timeout: ms("CLUSTERA_STALL_TIMEOUT_MS", d.stall_timeout)?,
        batch_size: number(var, "CLUSTERA_BATCH_SIZE")?,
        max_deferred: number(var, "CLUSTERA_MAX_DEFERRED")?.unwrap_or(d.max_deferred),
        ordering: match var("CLUSTERA_ORDERING").filter(|v| !v.is_empty()) {
            None => d.ordering,
            Some(v) => v
                .parse()
                .map_err(|e| ConfigError::invalid("CLUSTERA_ORDERING", e))?,
        },
        max_in_flight: number(var, "CLUSTERA_MAX_IN_FLIGHT")?.unwrap_or(d.max_in_flight),
        max_uncommitted: number(var, "CLUSTERA_MAX_UNCOMMITTED")?.unwrap_or(d.max_uncommitted),
        guarantee: match var("CLUSTERA_GUARANTEE").filter(|v| !v.is_empty()) {
            None => d.guarantee,
            Some(v) => v
                .parse()
                .map_err(|e| ConfigError::invalid("CLUSTERA_GUARANTEE", e))?,
        },
        transactional_id: var("CLUSTERA_TRANSACTIONAL_ID").filter(|v| !v.trim().is_empty()),
        transaction_timeout: ms("CLUSTERA_TRANSACTION_TIMEOUT_MS", d.transaction_timeout)?,
        status_topic: match var("CLUSTERA_STATUS_TOPIC").map(|v| v.trim().to_owned()) {
            None => d.status_topic.clone(),
            Some(v) if v.is_empty() => d.status_topic.clone(),
            Some(v) if v.eq_ignore_ascii_case("off") => None,
            Some(v) => Some(v),
        },
        status_interval: ms("CLUSTERA_STATUS_INTERVAL_MS", d.status_interval)?,
        memory_bytes: match var("CLUSTERA_MEMORY_BYTES").filter(|v| !v.is_empty()) {
            None => d.memory_bytes,
            Some(v) if v.eq_ignore_ascii_case("off") => None,
            Some(v) => Some(parse_size(&v).ok_or_else(|| {
                ConfigError::invalid(
                    "CLUSTERA_MEMORY_BYTES",
                    format!("{v:?} is not a size like 16777216, 16MiB or 512KiB (or `off`)"),
                )
            })?),
        },
    };
    if settings.memory_bytes.is_some_and(|b| b < 1024 * 1024) {
        return Err(ConfigError::invalid(
            "CLUSTERA_MEMORY_BYTES",
            "must be at least 1MiB",
        ));
    }
    if settings.max_uncommitted == 0 {
        return Err(ConfigError::invalid(
            "CLUSTERA_MAX_UNCOMMITTED",
            "must be at least 1",
        ));
    }
    if settings.max_in_flight == 0 {
        return Err(ConfigError::invalid(
            "CLUSTERA_MAX_IN_FLIGHT",
            "must be at least 1",
        ));
    }
    if settings.max_deferred == 0 {
        return Err(ConfigError::invalid(
            "CLUSTERA_MAX_DEFERRED",
            "must be at least 1",
        ));
    }
    if settings.batch_size == Some(0) {
        return Err(ConfigError::invalid(
            "CLUSTERA_BATCH_SIZE",
            "must be at least 1",
        ));
    }
    if settings.commit_every == 0 {
        return Err(ConfigError::invalid(
            "CLUSTERA_COMMIT_EVERY",
            "must be at least 1",
        ));
    }
    if settings.guarantee == Guarantee::ExactlyOnce {
        if settings.ordering != ProcessingOrder::Partition {
            // A transaction's offsets must cover exactly the messages whose records it holds;
            // with messages finishing out of order, records of a message after the committed
            // offset would be committed with it and produced again after a crash.
            return Err(ConfigError::invalid(
                "CLUSTERA_ORDERING",
                format!(
                    "{:?} ordering cannot be combined with CLUSTERA_GUARANTEE=exactly-once: a \
                     transaction commits a contiguous prefix of each partition, which needs \
                     CLUSTERA_ORDERING=partition",
                    settings.ordering
                ),
            ));
        }
        if settings.transaction_timeout < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "CLUSTERA_TRANSACTION_TIMEOUT_MS",
                "must be at least 1000",
            ));
        }
        if settings.commit_interval >= settings.transaction_timeout {
            return Err(ConfigError::invalid(
                "CLUSTERA_COMMIT_INTERVAL_MS",
                "must be shorter than CLUSTERA_TRANSACTION_TIMEOUT_MS: a transaction is \
                 committed every interval and the broker aborts one open longer than the timeout",
            ));
        }
    }
    if settings.retry_max_delay < settings.retry_initial_delay {
        return Err(ConfigError::invalid(
            "CLUSTERA_RETRY_MAX_MS",
            "must not be smaller than CLUSTERA_RETRY_INITIAL_MS",
        ));
    }
    if settings.status_interval < Duration::from_millis(100) {
        return Err(ConfigError::invalid(
            "CLUSTERA_STATUS_INTERVAL_MS",
            "must be at least 100",
        ));
    }
    if let Some(t) = &settings.status_topic {
        if !valid_topic_name(t) {
            return Err(ConfigError::invalid(
                "CLUSTERA_STATUS_TOPIC",
                format!("{t:?} is not a valid topic name (or `off`)"),
            ));
        }
    }
    if let Some(t) = &settings.dead_letter_topic {
        if !valid_topic_name(t) {
            return Err(ConfigError::invalid(
                "CLUSTERA_DLQ_TOPIC",
                format!("{t:?} is not a valid topic name"),
            ));
        }
    }
    Ok(settings)
}

/// `16777216`, `16MiB`, `512KiB`, `1GiB` (binary units; `MB`, `KB`, `GB` are decimal).
fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(factor)
}
