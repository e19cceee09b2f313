//! Snapshots: the rows already in the outbox when the slot is created
//! (`CLUSTERA_OUTBOX_SNAPSHOT=initial`, the default), and rows sent again on request
//! (`clustera outbox resend --since`), relayed as Debezium relays a snapshot's rows
//! (`op: r`, `source.snapshot` set).
//!
//! **Exactly the rows the slot will not stream.** The slot is created by a walsender session
//! that exports its snapshot (`CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT`). In that snapshot,
//! which sees every transaction committed before the slot's first decoded change and none
//! after, the primary keys of the outbox's rows are recorded in a pending table
//! (`<schema>.clustera_outbox_pending`: slot, key). Rows committed later come from the slot.
//!
//! **Bounded and resumable.** Before it streams, the relay sends the pending rows in key
//! order, [`BATCH`] at a time, and deletes a batch from the pending table only once Kafka has
//! acknowledged all of it. A relay killed meanwhile sends the unfinished batch again (at
//! least once, like everything it relays); memory holds one batch whatever the table's size.
//! Rows deleted from the outbox meanwhile are skipped.
//!
//! The outbox needs a primary key of one column (the seed's `event_id`; Debezium's `id`).

use std::collections::VecDeque;

use clustera_debezium::SnapshotRecord;
use clustera_pgoutput::Column;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio_postgres::Client;

use super::event::{self, Origin};
use super::walsender::Walsender;
use super::{quote_ident, Relay, RelayConfig, RelayError};
use crate::pg::Target;

/// Rows read, sent and confirmed at a time.
pub const BATCH: i64 = 1000;

/// The pending table's name (in the outbox's schema).
pub const PENDING_TABLE: &str = "clustera_outbox_pending";

/// Whether the rows already in the outbox are relayed when the slot is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotMode {
    /// Relay them, as reads, before the first streamed change (Debezium's `initial`).
    #[default]
    Initial,
    /// Only what is committed after the slot's creation (Debezium's `never`/`no_data`).
    Never,
}

fn pending_table(config: &RelayConfig) -> String {
    format!(
        "{}.{}",
        quote_ident(&config.schema),
        quote_ident(PENDING_TABLE)
    )
}

fn outbox_table(config: &RelayConfig) -> String {
    format!(
        "{}.{}",
        quote_ident(&config.schema),
        quote_ident(&config.table)
    )
}

/// The outbox's primary key: its column and type (`format_type`).
async fn primary_key(
    client: &Client,
    config: &RelayConfig,
) -> Result<(String, String), RelayError> {
    let rows = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
             FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
             WHERE i.indrelid = $1::text::regclass AND i.indisprimary",
            &[&outbox_table(config)],
        )
        .await?;
    match rows.as_slice() {
        [row] => Ok((row.get(0), row.get(1))),
        _ => Err(RelayError::Snapshot(format!(
            "the outbox {}.{} needs a primary key of one column to be snapshotted (it has {}); \
             set CLUSTERA_OUTBOX_SNAPSHOT=never to relay only new rows",
            config.schema,
            config.table,
            rows.len()
        ))),
    }
}

async fn create_pending_table(client: &Client, config: &RelayConfig) -> Result<(), RelayError> {
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} (slot text NOT NULL, key text NOT NULL, PRIMARY KEY (slot, key))",
            pending_table(config)
        ))
        .await?;
    Ok(())
}

/// Creates the slot and records, in the slot's own snapshot, the keys of the rows it will
/// not stream. Returns how many.
pub(crate) async fn create_slot_with_snapshot(
    client: &Client,
    target: &Target,
    config: &RelayConfig,
) -> Result<u64, RelayError> {
    create_pending_table(client, config).await?;
    let (key, _) = primary_key(client, config).await?;
    let mut session = Walsender::connect(target).await?;
    let created = session
        .query(&clustera_pgoutput::replication::create_slot_command(
            &config.slot,
        ))
        .await?;
    let Some(Some(snapshot)) = created.first().and_then(|row| row.get(2)).cloned() else {
        return Err(RelayError::Snapshot(
            "CREATE_REPLICATION_SLOT exported no snapshot".into(),
        ));
    };
    // The exported snapshot lives as long as the creating session stays idle.
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT {}",
            clustera_pgoutput::replication::quote_literal(&snapshot)
        ))
        .await?;
    let marked = client
        .execute(
            &format!(
                "INSERT INTO {} (slot, key) SELECT $1, {}::text FROM {} ON CONFLICT DO NOTHING",
                pending_table(config),
                quote_ident(&key),
                outbox_table(config)
            ),
            &[&config.slot],
        )
        .await;
    let finished = match marked {
        Ok(n) => client.batch_execute("COMMIT").await.map(|()| n),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    };
    session.close().await;
    Ok(finished?)
}

/// Records the rows whose `time_column` is at or after `since` (RFC 3339) to be sent again
/// by the relay (or by [`Relay::send_pending`] now). Returns how many.
pub async fn mark_since(
    client: &Client,
    config: &RelayConfig,
    time_column: &str,
    since: &str,
) -> Result<u64, RelayError> {
    create_pending_table(client, config).await?;
    let (key, _) = primary_key(client, config).await?;
    Ok(client
        .execute(
            &format!(
                "INSERT INTO {} (slot, key) SELECT $1, {}::text FROM {} WHERE {} >= $2::text::timestamptz ON CONFLICT DO NOTHING",
                pending_table(config),
                quote_ident(&key),
                outbox_table(config),
                quote_ident(time_column),
            ),
            &[&config.slot, &since],
        )
        .await?)
}

/// The outbox's columns from the catalog, as pgoutput's Relation message would give them
/// (a domain as its base type, the primary key as the replica identity).
async fn catalog_columns(client: &Client, config: &RelayConfig) -> Result<Vec<Column>, RelayError> {
    let rows = client
        .query(
            "SELECT a.attname::text,
                    CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END,
                    a.atttypmod,
                    coalesce(a.attnum = ANY(i.indkey), false)
             FROM pg_attribute a
             JOIN pg_type t ON t.oid = a.atttypid
             LEFT JOIN pg_index i ON i.indrelid = a.attrelid AND i.indisprimary
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&outbox_table(config)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Column {
            name: r.get(0),
            type_oid: r.get(1),
            type_modifier: r.get(2),
            key: r.get(3),
        })
        .collect())
}

impl Relay {
    /// Sends the pending rows (a snapshot, a resend), a batch at a time, each batch
    /// forgotten once Kafka acknowledged it. Returns how many were sent.
    pub async fn send_pending(&mut self) -> Result<u64, RelayError> {
        let pending = pending_table(&self.config);
        let exists = match self
            .client
            .query_one("SELECT to_regclass($1)::text", &[&pending])
            .await
        {
            Ok(row) => row.get::<_, Option<String>>(0).is_some(),
            // A relay role with only REPLICATION (enough to stream) cannot see the schema.
            Err(e)
                if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) =>
            {
                tracing::warn!(table = %pending, error = %e,
                    "cannot read the pending table: rows of a snapshot or resend, if any, are \
                     not sent by this relay. Grant its role USAGE on the schema, SELECT and \
                     DELETE on the pending table and SELECT on the outbox, or run \
                     `clustera outbox resend` as a role that has them");
                false
            }
            Err(e) => return Err(e.into()),
        };
        if !exists {
            return Ok(0);
        }
        let total: i64 = self
            .client
            .query_one(
                &format!("SELECT count(*) FROM {pending} WHERE slot = $1"),
                &[&self.config.slot],
            )
            .await?
            .get(0);
        if total == 0 {
            return Ok(0);
        }
        let (key, key_type) = primary_key(&self.client, &self.config).await?;
        let columns = catalog_columns(&self.client, &self.config).await?;
        let select = columns
            .iter()
            .map(|c| format!("{}::text", quote_ident(&c.name)))
            .collect::<Vec<_>>()
            .join(", ");
        self.tables.describe(
            event::SNAPSHOT_RELATION,
            self.config.schema.clone(),
            self.config.table.clone(),
            columns,
        )?;
        let lsn: i64 = self
            .client
            .query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint", &[])
            .await?
            .get(0);
        let lsn = u64::try_from(lsn).unwrap_or(0);
        tracing::info!(
            rows = total,
            "relaying the outbox's pending rows (snapshot) before streaming"
        );
        let rows_sql = format!(
            "SELECT {select} FROM {} WHERE {} = ANY($1::text[]::{key_type}[]) ORDER BY {}::text",
            outbox_table(&self.config),
            quote_ident(&key),
            quote_ident(&key),
        );
        let keys_sql =
            format!("SELECT key FROM {pending} WHERE slot = $1 ORDER BY key LIMIT {BATCH}");
        let forget_sql = format!("DELETE FROM {pending} WHERE slot = $1 AND key = ANY($2)");
        let mut sent = 0u64;
        let mut position = 0i64;
        loop {
            let keys: Vec<String> = self
                .client
                .query(&keys_sql, &[&self.config.slot])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            if keys.is_empty() {
                break;
            }
            let rows = self.client.query(&rows_sql, &[&keys]).await?;
            let mut deliveries = VecDeque::new();
            for row in &rows {
                let values: Vec<Option<String>> = (0..row.len()).map(|i| row.get(i)).collect();
                let marker = match position {
                    0 => SnapshotRecord::First,
                    p if p == total - 1 => SnapshotRecord::Last,
                    _ => SnapshotRecord::True,
                };
                position += 1;
                let origin = Origin::snapshot(marker);
                let Some(record) =
                    self.tables
                        .encode(event::SNAPSHOT_RELATION, &values, &origin, lsn)?
                else {
                    continue;
                };
                let mut record = event::future_record(&record);
                loop {
                    match self.producer.send_result(record) {
                        Ok(d) => break deliveries.push_back(d),
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                            if !deliveries.is_empty() =>
                        {
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
            for d in deliveries {
                self.acknowledged(d).await?;
            }
            self.client
                .execute(&forget_sql, &[&self.config.slot, &keys])
                .await?;
        }
        tracing::info!(rows = sent, "pending rows relayed");
        Ok(sent)
    }
}
