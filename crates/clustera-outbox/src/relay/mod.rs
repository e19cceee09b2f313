//! The CDC relay (what Debezium and Kafka Connect do in the seed): committed inserts on the
//! outbox table become Debezium-format change events on Kafka, keyed by aggregate so events
//! of one aggregate keep their order.
//!
//! It reads the logical replication slot with `pg_logical_slot_peek_binary_changes`
//! (pgoutput), which returns whole committed transactions without consuming them, and moves
//! the slot's confirmed position with `pg_replication_slot_advance` only after Kafka has
//! acknowledged every event of the transactions before it. A relay killed at any moment
//! therefore resumes at the first unacknowledged transaction: nothing is lost, and what was
//! sent twice is absorbed by the processor's markers.
//!
//! PostgreSQL restarting does not stop it: a round that meets an unavailable server
//! ([`crate::pg`]'s rule: connection lost, admin shutdown, `08xxx`, ...) is abandoned, the
//! relay reconnects with backoff, and the next round peeks again from the slot's confirmed
//! position. Events of the abandoned round that Kafka had already acknowledged are sent again
//! (after the ones before them, never instead), which the processor's markers absorb; nothing
//! is lost and the first copies keep their order. Meanwhile no round completes, so `/healthz`
//! fails once the outage outlasts the stall timeout, and recovers with the first round after
//! it. Any other PostgreSQL error still stops the relay.
//!
//! Its producer comes from the shared builder ([`clustera::infra::producer`]), so the
//! `KAFKA_*` settings, `KAFKA_PROPERTY_*` passthrough and the refusal of weak delivery apply
//! as for every kernel; its metrics and health are served by the shared listener
//! ([`telemetry::RelayTelemetry`]).

mod telemetry;
pub mod wakeup;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use clustera::infra::idempotent_producer_config;
use clustera_pgoutput::{self as pgoutput, Column, PgOutput};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientConfig;
use serde_json::{json, Map, Value};
use tokio_postgres::Client;

pub use telemetry::{RelayMetrics, RelayTelemetry};
use wakeup::Wakeups;

/// Where the relay reads and writes.
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
    /// Kafka topic of the change events.
    pub topic: String,
    /// Column whose value keys the Kafka record.
    pub key_column: String,
    /// Changes read per round trip (whole transactions are always read).
    pub batch: i32,
    /// The channel the outbox trigger notifies at commit.
    pub channel: String,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            schema: "activity".into(),
            table: "event_outbox".into(),
            publication: "clustera_outbox".into(),
            slot: "clustera_outbox".into(),
            topic: "postgres.activity.event_outbox".into(),
            key_column: "aggregate_id".into(),
            batch: 2000,
            channel: wakeup::CHANNEL.into(),
        }
    }
}

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// The server is not configured for logical decoding.
    #[error(
        "wal_level is {0:?}: set wal_level = logical in postgresql.conf and restart PostgreSQL"
    )]
    WalLevel(String),
    /// Kafka refused an event.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The slot returned bytes that are not pgoutput.
    #[error("decoding the replication stream: {0}")]
    Decode(#[from] pgoutput::PgOutputError),
}

pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Creates the outbox table (the seed's columns), the publication and the slot, each only if
/// missing. Fails clearly unless `wal_level` is `logical`.
pub async fn init(client: &Client, config: &RelayConfig) -> Result<(), RelayError> {
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
    if !has_publication {
        client
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE {table}",
                quote_ident(&config.publication)
            ))
            .await?;
    }
    let has_slot = client
        .query_opt(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = $1",
            &[&config.slot],
        )
        .await?
        .is_some();
    if !has_slot {
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&config.slot],
            )
            .await?;
    }
    client
        .batch_execute(&wakeup::trigger_sql(
            &config.schema,
            &config.table,
            &config.channel,
        ))
        .await?;
    Ok(())
}

struct Relation {
    schema: String,
    table: String,
    columns: Vec<Column>,
}

/// The relay's producer: the shared idempotent builder with no linger (a round waits for
/// every acknowledgement before it confirms, so batching would only add latency).
/// `KAFKA_PROPERTY_*` values win, as for every producer.
fn producer_config(kafka: &clustera::Config) -> ClientConfig {
    idempotent_producer_config(kafka, Duration::ZERO)
}

/// Microseconds between 1970-01-01 and 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// Streams outbox inserts to Kafka.
pub struct Relay {
    /// Where to reconnect after PostgreSQL went away.
    url: String,
    client: Client,
    producer: FutureProducer,
    config: RelayConfig,
    relations: HashMap<u32, Relation>,
    relayed: Arc<AtomicU64>,
    wakeups: Option<Wakeups>,
    telemetry: Option<Arc<RelayTelemetry>>,
}

/// How long the relay sleeps between empty rounds without wake-ups, and with them (then only
/// a safety net for a lost notification).
const POLL: Duration = Duration::from_millis(50);
const POLL_WITH_WAKEUPS: Duration = Duration::from_secs(1);
/// After a wake-up, how long empty rounds are retried quickly: with asynchronous commit, the
/// committed WAL may reach logical decoding up to a WAL-writer cycle after the notification.
const AFTER_WAKEUP: Duration = Duration::from_millis(300);
/// How often the slot's lag is measured (a query of its own).
const LAG_EVERY: Duration = Duration::from_secs(5);

impl Relay {
    /// A relay reading PostgreSQL at `url` (connected now: an unreachable server at start is
    /// an error) and producing with the `KAFKA_*` settings of `kafka`.
    pub async fn connect(
        url: &str,
        kafka: &clustera::Config,
        config: RelayConfig,
    ) -> Result<Self, RelayError> {
        Ok(Self {
            url: url.to_owned(),
            client: crate::pg::connect(url).await?,
            producer: producer_config(kafka).create()?,
            config,
            relations: HashMap::new(),
            relayed: Arc::default(),
            wakeups: None,
            telemetry: None,
        })
    }

    /// Reports rounds, events, the slot's lag and health to `telemetry`.
    pub fn with_telemetry(mut self, telemetry: Arc<RelayTelemetry>) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    /// Measures how far the slot's confirmed position is behind the server's WAL.
    async fn measure_lag(&self) -> Result<(), RelayError> {
        let Some(telemetry) = &self.telemetry else {
            return Ok(());
        };
        let row = self
            .client
            .query_opt(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.config.slot],
            )
            .await?;
        if let Some(lag) = row.and_then(|r| r.get::<_, Option<i64>>(0)) {
            telemetry.metrics.slot_lag(lag);
        }
        Ok(())
    }

    /// Reads as soon as the outbox trigger notifies, instead of every 50 ms.
    pub fn with_wakeups(mut self, wakeups: Wakeups) -> Self {
        self.wakeups = Some(wakeups);
        self
    }

    /// Events acknowledged by Kafka so far.
    pub fn relayed(&self) -> Arc<AtomicU64> {
        self.relayed.clone()
    }

    /// Relays until `stop` resolves. When idle, it waits for a wake-up or polls every 50 ms
    /// (every second with wake-ups). Reconnects, with backoff, for as long as PostgreSQL is
    /// unavailable; returns on any other error.
    pub async fn run_until(
        mut self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), RelayError> {
        tokio::pin!(stop);
        // Connect to the topic's leaders now rather than on the first event, which would
        // otherwise wait for them. A failure here is not fatal: sending retries.
        let (producer, topic) = (self.producer.clone(), self.config.topic.clone());
        let warmed = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .map(drop)
        });
        if let Ok(Err(e)) = warmed.await {
            tracing::warn!(error = %e, "no metadata for the relay's topic yet");
        }
        let mut woken_until = None;
        let mut lag_measured = tokio::time::Instant::now() - LAG_EVERY;
        loop {
            let round = tokio::select! {
                _ = &mut stop => break,
                r = self.round(&mut lag_measured) => r,
            };
            let sent = match round {
                Ok(sent) => sent,
                Err(RelayError::Postgres(e)) if crate::pg::is_unavailable(&e) => {
                    tracing::warn!(error = %e,
                        "postgres unavailable; reconnecting, then resuming from the slot's confirmed position");
                    self.client = tokio::select! {
                        _ = &mut stop => break,
                        r = crate::pg::reconnect(&self.url, "relay") => r?,
                    };
                    continue;
                }
                Err(e) => return Err(e),
            };
            if sent > 0 {
                continue;
            }
            let now = tokio::time::Instant::now();
            if woken_until.is_some_and(|until| now < until) {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            woken_until = None;
            let woken = match &self.wakeups {
                None => tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(POLL) => false,
                },
                Some(w) => tokio::select! {
                    _ = &mut stop => break,
                    _ = w.notified() => true,
                    _ = tokio::time::sleep(POLL_WITH_WAKEUPS) => false,
                },
            };
            if woken {
                woken_until = Some(tokio::time::Instant::now() + AFTER_WAKEUP);
            }
        }
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10)))
            .await
            .ok();
        Ok(())
    }

    /// A round ([`step`](Self::step)), reported to the telemetry, and the slot's lag when it
    /// is due.
    async fn round(
        &mut self,
        lag_measured: &mut tokio::time::Instant,
    ) -> Result<usize, RelayError> {
        let started = tokio::time::Instant::now();
        let sent = self.step().await?;
        if let Some(t) = &self.telemetry {
            t.round(sent, started.elapsed());
        }
        if lag_measured.elapsed() >= LAG_EVERY {
            self.measure_lag().await?;
            *lag_measured = tokio::time::Instant::now();
        }
        Ok(sent)
    }

    /// One round: peek whole transactions, send their events, wait for every
    /// acknowledgement, then confirm up to the last commit. Returns the events sent.
    pub async fn step(&mut self) -> Result<usize, RelayError> {
        let started = std::time::Instant::now();
        let rows = self
            .client
            .query(
                "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, 'proto_version', '1', 'publication_names', $3)",
                &[&self.config.slot, &self.config.batch, &self.config.publication],
            )
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut deliveries = VecDeque::new();
        let mut sent = 0;
        let mut confirm = None;
        let (mut xid, mut commit_ts) = (0u32, 0i64);
        for row in &rows {
            let data: Vec<u8> = row.get(0);
            match pgoutput::parse(&data)? {
                PgOutput::Begin {
                    xid: x,
                    commit_ts: ts,
                    ..
                } => {
                    xid = x;
                    commit_ts = ts;
                }
                PgOutput::Relation {
                    oid,
                    namespace,
                    name,
                    columns,
                } => {
                    self.relations.insert(
                        oid,
                        Relation {
                            schema: namespace,
                            table: name,
                            columns,
                        },
                    );
                }
                PgOutput::Insert { oid, values } => {
                    let Some(rel) = self.relations.get(&oid) else {
                        continue;
                    };
                    if rel.schema != self.config.schema || rel.table != self.config.table {
                        continue;
                    }
                    let (key, envelope) = self.envelope(rel, &values, xid, commit_ts);
                    let payload = envelope.to_string();
                    let record = FutureRecord::to(&self.config.topic)
                        .key(&key)
                        .payload(&payload);
                    let mut record = record;
                    loop {
                        match self.producer.send_result(record) {
                            Ok(d) => break deliveries.push_back(d),
                            // The producer's queue is full (its share of CLUSTERA_MEMORY_BYTES):
                            // wait for the oldest event sent, then try again.
                            Err((
                                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                                r,
                            )) if !deliveries.is_empty() => {
                                record = r;
                                if let Some(d) = deliveries.pop_front() {
                                    self.acknowledged(d).await?;
                                }
                            }
                            Err((e, _)) => return Err(RelayError::Kafka(e)),
                        }
                    }
                    sent += 1;
                }
                PgOutput::Commit { end_lsn, .. } => confirm = Some(end_lsn),
                PgOutput::Other(_) => {}
            }
        }
        let peeked = started.elapsed();
        for d in deliveries {
            self.acknowledged(d).await?;
        }
        if let Some(lsn) = confirm {
            self.client
                .execute(
                    "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                    &[&self.config.slot, &pgoutput::format_lsn(lsn)],
                )
                .await?;
        }
        tracing::debug!(
            rows = rows.len(),
            sent,
            peek_ms = peeked.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "relay round"
        );
        Ok(sent)
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

    /// The Debezium change event (JSON converter without schemas) for one inserted row.
    fn envelope(
        &self,
        rel: &Relation,
        values: &[Option<String>],
        xid: u32,
        commit_ts: i64,
    ) -> (String, Value) {
        let mut after = Map::new();
        let mut key = String::new();
        for (column, value) in rel.columns.iter().zip(values) {
            if column.name == self.config.key_column {
                key = value.clone().unwrap_or_default();
            }
            after.insert(
                column.name.clone(),
                debezium_value(column.type_oid, value.as_deref()),
            );
        }
        let ts_ms = (commit_ts + PG_EPOCH_US) / 1000;
        let envelope = json!({
            "before": null,
            "after": after,
            "source": {
                "connector": "postgresql",
                "name": "clustera",
                "ts_ms": ts_ms,
                "snapshot": "false",
                "schema": rel.schema,
                "table": rel.table,
                "txId": xid,
            },
            "op": "c",
            "ts_ms": chrono::Utc::now().timestamp_millis(),
        });
        (key, envelope)
    }
}

/// A column value in Debezium's PostgreSQL encoding: uuid, json(b) and text as strings,
/// timestamptz as an ISO-8601 ZonedTimestamp, numbers and booleans as JSON.
fn debezium_value(type_oid: u32, text: Option<&str>) -> Value {
    let Some(text) = text else {
        return Value::Null;
    };
    match type_oid {
        16 => Value::Bool(text == "t"),
        20 | 21 | 23 => text
            .parse::<i64>()
            .map_or_else(|_| json!(text), Value::from),
        700 | 701 => text
            .parse::<f64>()
            .map_or_else(|_| json!(text), Value::from),
        1184 => chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z").map_or_else(
            |_| json!(text),
            |t| {
                json!(t
                    .with_timezone(&chrono::Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            },
        ),
        _ => json!(text),
    }
}

#[cfg(test)]
mod tests {
    use clustera::testing::config_from_pairs;

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
    fn weak_delivery_is_refused_for_the_relay_as_for_a_kernel() {
        let e = config_from_pairs(&[BROKERS, ("KAFKA_PROPERTY_ACKS", "1")]).unwrap_err();
        assert_eq!(e.variable, "KAFKA_PROPERTY_ACKS");
    }
}
