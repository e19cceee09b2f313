//! The CDC relay (what Debezium and Kafka Connect do in the seed): committed inserts on the
//! outbox table become Debezium-format change events on Kafka, keyed by aggregate so events
//! of one aggregate keep their order.
//!
//! # Streaming (the default)
//!
//! The relay holds one walsender session on the logical replication slot
//! (`START_REPLICATION SLOT … LOGICAL`, pgoutput protocol 1; [`walsender`]) and sends each
//! inserted row to Kafka as soon as it is decoded. Memory stays bounded whatever the size of
//! a transaction: at most `max_in_flight` events wait for Kafka's acknowledgement, and while
//! they do the relay stops reading, so the server waits (TCP backpressure).
//!
//! Its standby status updates report as flushed the end of the highest transaction whose
//! events were all acknowledged by Kafka, never more ([`progress`]); when nothing is pending,
//! the server's own position from its keepalives, so that a quiet outbox does not hold WAL
//! back while other tables write. Keepalives that ask for an answer get one at once, and a
//! status update goes out every `status_interval` regardless.
//!
//! A relay killed at any moment therefore resumes at the first unconfirmed transaction:
//! nothing is lost, and what was sent twice is absorbed by the processor's markers.
//!
//! The session holds the slot active, so a second relay on the same slot is refused with
//! [`RelayError::SlotActive`] (after [`ACTIVE_GRACE`], in which a relay just killed lets the
//! slot go). A slot that does not exist is [`RelayError::SlotMissing`], which says how to
//! recover.
//!
//! PostgreSQL restarting does not stop it: a session that meets an unavailable server
//! ([`crate::pg`]'s rule: connection lost, admin shutdown, `08xxx`, ...) waits for the
//! events it sent, then reconnects with backoff and starts again from the slot's confirmed
//! position (logging "reconnected to postgres"). Events Kafka had acknowledged but the server
//! had not yet been told of are sent again, after the first copies, never instead. Any other
//! error stops the relay.
//!
//! # Peek (`CLUSTERA_RELAY_READ=peek`)
//!
//! The previous read path, kept for comparison ([`peek`]): rounds of
//! `pg_logical_slot_peek_binary_changes` over SQL, whole transactions at a time, then
//! `pg_replication_slot_advance`. Its memory grows with the largest transaction.
//!
//! # Around the stream
//!
//! Rows already in the outbox when the slot is created, and rows asked for again, are sent
//! first, as snapshot reads ([`snapshot`]); expired rows are deleted when a retention is set
//! ([`cleanup`]); each row becomes a record in the configured format ([`event`]), and a row the
//! format refuses stops the relay or goes to the dead-letter topic.
//!
//! Its producer comes from the shared builder ([`clustera::infra::producer`]), so the
//! `KAFKA_*` settings, `KAFKA_PROPERTY_*` passthrough and the refusal of weak delivery apply
//! as for every kernel; its metrics and health are served by the shared listener
//! ([`telemetry::RelayTelemetry`]). The record's key and value are built in one place,
//! [`event`].

mod cleanup;
mod config;
mod event;
mod peek;
mod progress;
mod snapshot;
mod stream;
mod telemetry;
pub mod wakeup;
pub mod walsender;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use clustera::infra::idempotent_producer_config;
use clustera_pgoutput as pgoutput;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, Producer as _};
use rdkafka::ClientConfig;
use tokio_postgres::Client;

use crate::pg::{Target, TargetError};
use clustera_debezium::EncodeError;
pub use config::{ReadMode, RelayConfig};
use event::Tables;
pub use snapshot::{mark_since, try_lock, SnapshotMode, PENDING_TABLE};
pub use telemetry::{RelayMetrics, RelayTelemetry};
use wakeup::Wakeups;
pub use walsender::WalsenderError;

/// Aborts a task when dropped: the relay's helper tasks end with it.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a relay starting up waits for a slot held by another session before it
/// refuses: a relay that was just killed lets its slot go as soon as the server sees its
/// connection closed, well within this.
pub const ACTIVE_GRACE: Duration = Duration::from_secs(10);

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The walsender session failed.
    #[error("postgres replication: {0}")]
    Walsender(#[from] WalsenderError),
    /// `DATABASE_URL` cannot be used.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The server is not configured for logical decoding.
    #[error(
        "wal_level is {0:?}: set wal_level = logical in postgresql.conf and restart PostgreSQL"
    )]
    WalLevel(String),
    /// The replication slot does not exist.
    #[error(
        "replication slot {slot:?} does not exist. Recover with `clustera outbox init`, which \
         creates it again and (CLUSTERA_OUTBOX_SNAPSHOT=initial) relays every row still in the \
         outbox; or init with CLUSTERA_OUTBOX_SNAPSHOT=never and `clustera outbox resend \
         --since` the time it was lost"
    )]
    SlotMissing {
        /// The slot's name.
        slot: String,
    },
    /// Another session (another relay) holds the slot.
    #[error(
        "replication slot {slot:?} is in use by another session ({detail}): only one relay may \
         read a slot. Stop the other relay, or give this one its own slot and publication \
         (CLUSTERA_OUTBOX_SLOT, CLUSTERA_OUTBOX_PUBLICATION)"
    )]
    SlotActive {
        /// The slot's name.
        slot: String,
        /// The server's message (it names the other session's process id).
        detail: String,
    },
    /// Kafka refused an event.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The outbox table cannot be written in the configured format (a column the format
    /// needs is missing, or a column's type is not mapped).
    #[error("outbox table {table}: {source} (see CLUSTERA_OUTBOX_FORMAT and its settings)")]
    Table {
        /// `schema.table`.
        table: String,
        /// Why.
        source: EncodeError,
    },
    /// An outbox row cannot be written in the configured format (for the Outbox Event
    /// Router, a null route-by or event-id column, say), and no dead-letter topic is set.
    #[error(
        "outbox row at LSN {lsn} (transaction {xid}): {source}. The relay stops rather than \
         skip it; set CLUSTERA_OUTBOX_DEAD_LETTER_TOPIC to send such rows there instead, or \
         change the format's settings"
    )]
    Row {
        /// The row's LSN.
        lsn: String,
        /// Its transaction.
        xid: u32,
        /// Why.
        source: EncodeError,
    },
    /// The snapshot cannot be taken or read.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// The stream inserted into a relation it had not described first (a server bug).
    #[error("the replication stream has an insert into relation {0}, which it never described")]
    UnknownRelation(u32),
    /// The slot returned bytes that are not pgoutput.
    #[error("decoding the replication stream: {0}")]
    Decode(#[from] pgoutput::PgOutputError),
}

impl RelayError {
    /// Whether PostgreSQL is unavailable (the relay reconnects) rather than refusing.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Postgres(e) => crate::pg::is_unavailable(e),
            Self::Walsender(e) => e.is_unavailable(),
            _ => false,
        }
    }
}

pub(crate) fn quote_ident(s: &str) -> String {
    pgoutput::replication::quote_ident(s)
}

/// Creates the outbox table (the seed's columns), the publication (inserts only: deletes
/// and updates of the outbox are never decoded for nothing) and the slot, each only if
/// missing; an existing publication is set to inserts only. Fails clearly unless
/// `wal_level` is `logical`. A slot created with [`SnapshotMode::Initial`] has the rows
/// already in the outbox relayed first (see [`snapshot`]); returns how many.
pub async fn init(url: &str, config: &RelayConfig) -> Result<u64, RelayError> {
    let target = Target::parse(url)?;
    let client = target.connect().await?;
    let wal_level: String = client.query_one("SHOW wal_level", &[]).await?.get(0);
    if wal_level != "logical" {
        return Err(RelayError::WalLevel(wal_level));
    }
    let table = format!(
        "{}.{}",
        quote_ident(&config.schema),
        quote_ident(&config.table)
    );
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {table} (
                 event_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                 aggregate_id uuid NOT NULL,
                 aggregate_type text NOT NULL,
                 event_type text NOT NULL,
                 payload jsonb NOT NULL,
                 status text NOT NULL DEFAULT 'pending',
                 created_at timestamptz NOT NULL DEFAULT now()
             );",
            schema = quote_ident(&config.schema),
        ))
        .await?;
    let has_publication = client
        .query_opt(
            "SELECT 1 FROM pg_publication WHERE pubname = $1",
            &[&config.publication],
        )
        .await?
        .is_some();
    let publication = quote_ident(&config.publication);
    client
        .batch_execute(&if has_publication {
            format!("ALTER PUBLICATION {publication} SET (publish = 'insert')")
        } else {
            format!("CREATE PUBLICATION {publication} FOR TABLE {table} WITH (publish = 'insert')")
        })
        .await?;
    let has_slot = client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.slot],
        )
        .await?
        .is_some();
    let mut snapshotted = 0;
    if !has_slot {
        match config.snapshot {
            SnapshotMode::Initial => {
                snapshotted = snapshot::create_slot_with_snapshot(&client, &target, config).await?;
            }
            SnapshotMode::Never => {
                client
                    .execute(
                        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                        &[&config.slot],
                    )
                    .await?;
            }
        }
    }
    client
        .batch_execute(&wakeup::trigger_sql(
            &config.schema,
            &config.table,
            &config.channel,
        ))
        .await?;
    Ok(snapshotted)
}

/// The relay's producer: the shared idempotent builder with no linger (a round waits for
/// every acknowledgement before it confirms, so batching would only add latency).
/// `KAFKA_PROPERTY_*` values win, as for every producer.
fn producer_config(kafka: &clustera::Config) -> ClientConfig {
    idempotent_producer_config(kafka, Duration::ZERO)
}

/// Streams outbox inserts to Kafka.
pub struct Relay {
    /// Where PostgreSQL is (also where to reconnect after it went away).
    target: Target,
    /// A SQL session: the peek rounds, and the streaming relay's checks.
    client: Client,
    producer: FutureProducer,
    config: RelayConfig,
    tables: Tables,
    /// Peek only: the last commit seen, carried from one round to the next.
    peek_origin: event::Origin,
    relayed: Arc<AtomicU64>,
    wakeups: Option<Wakeups>,
    telemetry: Option<Arc<RelayTelemetry>>,
}

/// The SQL session's settings (the peek path decodes in it): values as the walsender session
/// writes them, whatever the database says.
const SESSION_SETTINGS: &str = "SET DateStyle = ISO; SET TimeZone = 'UTC'; \
     SET IntervalStyle = postgres; SET bytea_output = hex";

impl Relay {
    /// A relay reading PostgreSQL at `url` (connected now: an unreachable server at start is
    /// an error) and producing with the `KAFKA_*` settings of `kafka`.
    pub async fn connect(
        url: &str,
        kafka: &clustera::Config,
        config: RelayConfig,
    ) -> Result<Self, RelayError> {
        let target = Target::parse(url)?;
        let client = target.connect().await?;
        client.batch_execute(SESSION_SETTINGS).await?;
        let database: String = client
            .query_one("SELECT current_database()", &[])
            .await?
            .get(0);
        let mut tables = Tables::new(
            config.format.clone(),
            &config.schema,
            &config.table,
            config.dead_letter_topic.clone(),
        );
        tables.set_database(&database);
        Ok(Self {
            target,
            client,
            producer: producer_config(kafka).create()?,
            config,
            tables,
            peek_origin: event::Origin::default(),
            relayed: Arc::default(),
            wakeups: None,
            telemetry: None,
        })
    }

    /// Reports events, positions, the slot's WAL and health to `telemetry`.
    pub fn with_telemetry(mut self, telemetry: Arc<RelayTelemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// Peek only: reads as soon as the outbox trigger notifies, instead of every 50 ms.
    pub fn with_wakeups(mut self, wakeups: Wakeups) -> Self {
        self.wakeups = Some(wakeups);
        self
    }

    /// Takes the slot's lock for this relay's SQL session, unless another relay (or
    /// `resend`) holds it.
    pub async fn try_lock(&self) -> Result<bool, RelayError> {
        snapshot::try_lock(&self.client, &self.config.slot).await
    }

    /// Events acknowledged by Kafka so far.
    pub fn relayed(&self) -> Arc<AtomicU64> {
        self.relayed.clone()
    }

    /// Relays until `stop` resolves, by the configured [`ReadMode`]. Reconnects, with
    /// backoff, for as long as PostgreSQL is unavailable; returns on any other error.
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), RelayError> {
        tokio::pin!(stop);
        // Connect to the brokers now rather than on the first event, which would otherwise
        // wait for them (the topics depend on the rows, for the Outbox Event Router). A
        // failure here is not fatal: sending retries.
        let producer = self.producer.clone();
        let warmed = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Duration::from_secs(10))
                .map(drop)
        });
        if let Ok(Err(e)) = warmed.await {
            tracing::warn!(error = %e, "no metadata from Kafka yet");
        }
        // The slot's lock first (a second relay is refused as the slot would refuse it),
        // then the snapshot's rows (or a resend's), before anything streamed.
        loop {
            let sent = tokio::select! {
                _ = stop.as_mut() => return Ok(()),
                r = self.lock_then_send_pending() => r,
            };
            match sent {
                Ok(_) => break,
                Err(e) if e.is_unavailable() => {
                    tracing::warn!(error = %e, "postgres unavailable during the snapshot; reconnecting");
                    self.client = tokio::select! {
                        _ = stop.as_mut() => return Ok(()),
                        r = crate::pg::reconnect_to(&self.target, "relay") => r?,
                    };
                    if let Err(e) = self.client.batch_execute(SESSION_SETTINGS).await {
                        tracing::warn!(error = %e, "postgres unavailable again; retrying");
                    }
                }
                Err(e) => return Err(e),
            }
        }
        let _cleanup = cleanup::spawn(&self.target, &self.config);
        let result = match self.config.read {
            ReadMode::Stream => self.run_stream(stop).await,
            ReadMode::Peek => self.run_peek(stop).await,
        };
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10)))
            .await
            .ok();
        result
    }

    /// Takes the slot's lock (waiting up to [`ACTIVE_GRACE`] for a relay just killed to let
    /// it go), then sends the pending rows.
    async fn lock_then_send_pending(&mut self) -> Result<u64, RelayError> {
        let deadline = tokio::time::Instant::now() + ACTIVE_GRACE;
        while !snapshot::try_lock(&self.client, &self.config.slot).await? {
            if tokio::time::Instant::now() >= deadline {
                let holder = snapshot::lock_holder(&self.client, &self.config.slot).await?;
                return Err(RelayError::SlotActive {
                    slot: self.config.slot.clone(),
                    detail: match holder {
                        Some(pid) => format!("its lock is active for PID {pid}"),
                        None => "another session holds its lock".into(),
                    },
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.send_pending().await
    }

    /// Waits for Kafka's acknowledgement of one event.
    async fn acknowledged(&self, delivery: DeliveryFuture) -> Result<(), RelayError> {
        match delivery.await {
            Ok(Ok(_)) => {
                clustera::infra::bump(&self.relayed);
                Ok(())
            }
            Ok(Err((e, _))) => Err(RelayError::Kafka(e)),
            Err(_) => Err(RelayError::Kafka(KafkaError::Canceled)),
        }
    }
}

#[cfg(test)]
mod tests {
    use clustera::testing::config_from_pairs;

    use clustera_debezium::OutputFormat;

    use super::*;

    const BROKERS: (&str, &str) = ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092");

    #[test]
    fn passthrough_properties_reach_the_relays_producer() {
        let kafka = config_from_pairs(&[
            BROKERS,
            ("KAFKA_PROPERTY_COMPRESSION_TYPE", "lz4"),
            ("KAFKA_PROPERTY_MESSAGE_TIMEOUT_MS", "120000"),
        ])
        .unwrap();
        // The shared builder's own test covers idempotence and acks.
        let c = producer_config(&kafka);
        let got = ["compression.type", "message.timeout.ms", "linger.ms"].map(|p| c.get(p));
        assert_eq!(got, [Some("lz4"), Some("120000"), Some("0")]);
    }

    #[test]
    fn settings_come_from_the_environment() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(
            RelayConfig::from_vars(&vars(&[])).unwrap(),
            RelayConfig::default()
        );
        let c = RelayConfig::from_vars(&vars(&[
            ("CLUSTERA_OUTBOX_SCHEMA", "app"),
            ("CLUSTERA_OUTBOX_TABLE", "outbox"),
            ("CLUSTERA_OUTBOX_TOPIC_PREFIX", "prod"),
            ("CLUSTERA_OUTBOX_SLOT", "s"),
            ("CLUSTERA_RELAY_READ", "peek"),
            ("CLUSTERA_RELAY_HEARTBEAT_MS", "500"),
            ("CLUSTERA_RELAY_MAX_IN_FLIGHT", "7"),
        ]))
        .unwrap();
        assert!(
            matches!(&c.format, OutputFormat::Debezium(d) if d.topic_prefix == "prod" && d.topic.is_none())
        );
        assert_eq!(c.slot, "s");
        assert_eq!(c.read, ReadMode::Peek);
        assert_eq!(c.heartbeat, Some(Duration::from_millis(500)));
        assert_eq!(c.max_in_flight, 7);
        let c = RelayConfig::from_vars(&vars(&[("CLUSTERA_OUTBOX_TOPIC", "t")])).unwrap();
        assert!(matches!(&c.format, OutputFormat::Debezium(d) if d.topic.as_deref() == Some("t")));
        let c = RelayConfig::from_vars(&vars(&[("CLUSTERA_OUTBOX_FORMAT", "router")])).unwrap();
        assert!(matches!(c.format, OutputFormat::Router(_)));
        for (name, value) in [
            ("CLUSTERA_RELAY_READ", "poll"),
            ("CLUSTERA_RELAY_MAX_IN_FLIGHT", "0"),
            ("CLUSTERA_RELAY_STATUS_INTERVAL_MS", "x"),
            ("CLUSTERA_OUTBOX_FORMAT", "avro"),
        ] {
            let pairs: &'static [(&'static str, &'static str)] =
                Box::leak(vec![(name, value)].into_boxed_slice());
            let e = RelayConfig::from_vars(&vars(pairs)).unwrap_err();
            assert_eq!(e.variable, name);
        }
    }

    #[test]
    fn weak_delivery_is_refused_for_the_relay_as_for_a_kernel() {
        let e = config_from_pairs(&[BROKERS, ("KAFKA_PROPERTY_ACKS", "1")]).unwrap_err();
        assert_eq!(e.variable, "KAFKA_PROPERTY_ACKS");
    }
}
