//! The relay's settings, from the environment (the README's relay table).

use std::time::Duration;

use clustera::infra::env::{number, Vars};
use clustera::infra::ConfigError;
use clustera_debezium::{EncodeError, OutputFormat};

use super::snapshot::SnapshotMode;
use super::wakeup;

/// How the relay reads the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// A walsender session (`START_REPLICATION`): the default.
    Stream,
    /// Rounds of `pg_logical_slot_peek_binary_changes` over SQL (the previous relay, kept for
    /// comparison).
    Peek,
}

/// Where the relay reads and writes, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Schema of the outbox table.
    pub schema: String,
    /// The outbox table.
    pub table: String,
    /// The publication the slot decodes.
    pub publication: String,
    /// The logical replication slot (pgoutput).
    pub slot: String,
    /// What the records look like: Debezium's change event (topic
    /// `<prefix>.<schema>.<table>`, keyed by `aggregate_id`) or the Outbox Event Router's form,
    /// with their settings (`CLUSTERA_OUTBOX_FORMAT` and the variables of
    /// [`OutputFormat::from_vars`]).
    pub format: OutputFormat,
    /// Where rows the format refuses go (`CLUSTERA_OUTBOX_DEAD_LETTER_TOPIC`); unset, such a
    /// row stops the relay.
    pub dead_letter_topic: Option<String>,
    /// Rows older than this (by [`time_column`](Self::time_column)) are deleted from the
    /// outbox by the relay (`CLUSTERA_OUTBOX_RETENTION_MS`; unset: kept).
    pub retention: Option<Duration>,
    /// The outbox's time column, for retention and `clustera outbox resend`
    /// (`CLUSTERA_OUTBOX_TIME_COLUMN`, `created_at`).
    pub time_column: String,
    /// Whether `init`, creating the slot, has the rows already in the outbox relayed
    /// (`CLUSTERA_OUTBOX_SNAPSHOT`: `initial`, the default, or `never`).
    pub snapshot: SnapshotMode,
    /// Peek only: changes read per round trip (whole transactions are always read).
    pub batch: i32,
    /// Peek only: the channel the outbox trigger notifies at commit.
    pub channel: String,
    /// How the slot is read.
    pub read: ReadMode,
    /// Streaming: the longest time between two standby status updates.
    pub status_interval: Duration,
    /// Streaming: the most events sent and not yet acknowledged; past it the relay stops
    /// reading until Kafka catches up.
    pub max_in_flight: usize,
    /// Streaming: when set, `pg_logical_emit_message` writes a heartbeat into the WAL this
    /// often (like Debezium's `heartbeat.action.query`).
    pub heartbeat: Option<Duration>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            schema: "activity".into(),
            table: "event_outbox".into(),
            publication: "clustera_outbox".into(),
            slot: "clustera_outbox".into(),
            format: OutputFormat::default(),
            dead_letter_topic: None,
            snapshot: SnapshotMode::Initial,
            retention: None,
            time_column: "created_at".into(),
            batch: 2000,
            channel: wakeup::CHANNEL.into(),
            read: ReadMode::Stream,
            status_interval: Duration::from_secs(1),
            max_in_flight: 10_000,
            heartbeat: None,
        }
    }
}

impl RelayConfig {
    /// The settings from the environment (the README's relay table), defaults for what is
    /// unset.
    pub fn from_vars(var: Vars<'_>) -> Result<Self, ConfigError> {
        let mut c = Self::default();
        let text = |name: &str| {
            var(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        for (name, field) in [
            ("CLUSTERA_OUTBOX_SCHEMA", &mut c.schema),
            ("CLUSTERA_OUTBOX_TABLE", &mut c.table),
            ("CLUSTERA_OUTBOX_PUBLICATION", &mut c.publication),
            ("CLUSTERA_OUTBOX_SLOT", &mut c.slot),
            ("CLUSTERA_OUTBOX_TIME_COLUMN", &mut c.time_column),
        ] {
            if let Some(v) = text(name) {
                *field = v;
            }
        }
        c.dead_letter_topic = text("CLUSTERA_OUTBOX_DEAD_LETTER_TOPIC");
        c.retention = match number::<u64>(var, "CLUSTERA_OUTBOX_RETENTION_MS")? {
            Some(0) => {
                return Err(ConfigError::invalid(
                    "CLUSTERA_OUTBOX_RETENTION_MS",
                    "must be at least 1 (unset keeps every row)",
                ))
            }
            ms => ms.map(Duration::from_millis),
        };
        c.snapshot = match text("CLUSTERA_OUTBOX_SNAPSHOT").as_deref() {
            None | Some("initial") => SnapshotMode::Initial,
            Some("never") => SnapshotMode::Never,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "CLUSTERA_OUTBOX_SNAPSHOT",
                    format!("{other:?} is neither initial nor never"),
                ))
            }
        };
        c.format = OutputFormat::from_vars(var).map_err(|e| match e {
            EncodeError::Config { setting, problem } => ConfigError::invalid(setting, problem),
            other => ConfigError::invalid("CLUSTERA_OUTBOX_FORMAT", other.to_string()),
        })?;
        c.read = match text("CLUSTERA_RELAY_READ").as_deref() {
            None | Some("stream") => ReadMode::Stream,
            Some("peek") => ReadMode::Peek,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "CLUSTERA_RELAY_READ",
                    format!("{other:?} is neither stream nor peek"),
                ))
            }
        };
        if let Some(ms) = number::<u64>(var, "CLUSTERA_RELAY_STATUS_INTERVAL_MS")? {
            if ms == 0 {
                return Err(ConfigError::invalid(
                    "CLUSTERA_RELAY_STATUS_INTERVAL_MS",
                    "must be at least 1",
                ));
            }
            c.status_interval = Duration::from_millis(ms);
        }
        if let Some(n) = number::<usize>(var, "CLUSTERA_RELAY_MAX_IN_FLIGHT")? {
            if n == 0 {
                return Err(ConfigError::invalid(
                    "CLUSTERA_RELAY_MAX_IN_FLIGHT",
                    "must be at least 1",
                ));
            }
            c.max_in_flight = n;
        }
        c.heartbeat = number::<u64>(var, "CLUSTERA_RELAY_HEARTBEAT_MS")?
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis);
        Ok(c)
    }
}

impl RelayConfig {
    /// The one topic every event goes to, for the raw change event; `None` for the Outbox
    /// Event Router, whose topics depend on each row.
    pub fn topic(&self) -> Option<String> {
        match &self.format {
            OutputFormat::Debezium(c) => Some(c.topic_for(&self.schema, &self.table)),
            OutputFormat::Router(_) => None,
        }
    }
}
