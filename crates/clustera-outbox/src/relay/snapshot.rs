//! Snapshots: the rows already in the outbox when the slot is created
//! (`CLUSTERA_OUTBOX_SNAPSHOT=initial`, the default), and rows sent again on request
//! (`clustera outbox resend --since`), relayed as Debezium relays a snapshot's rows
//! (`op: r`, `source.snapshot` set).
//!
//! **Exactly the rows the slot will not stream.** The slot is created by a walsender session
//! that exports its snapshot (`CREATE_REPLICATION_SLOT … EXPORT_SNAPSHOT`). In that snapshot,
//! which sees every transaction committed before the slot's first decoded change and none
//! after, the primary keys of the outbox's rows are recorded in a pending table
//! (`<schema>.clustera_outbox_pending`: slot, sequence, key), in the order of the time column
//! (then the key), so that one aggregate's rows go out in the order they were written. Rows
//! committed later come from the slot. If recording fails, the new slot is dropped again, so
//! that a second `init` starts over instead of finding a slot without its snapshot.
//!
//! **Bounded and resumable.** Before it streams, the relay sends the pending rows in that
//! order, [`BATCH`] at a time (read as a stream, so one batch of large rows is not held whole),
//! and deletes a batch from the pending table only once Kafka has acknowledged all of it. A
//! relay killed meanwhile sends the unfinished batch again (at least once, like everything it
//! relays). Rows deleted from the outbox meanwhile are skipped. Only the relay that holds the
//! slot's advisory lock (see [`try_lock`]) sends pending rows, so two relays, or a relay and a
//! `resend`, never send them twice over.
//!
//! The outbox needs a primary key of one column (the seed's `event_id`; Debezium's `id`).

use std::collections::VecDeque;

use clustera_debezium::SnapshotRecord;
use clustera_pgoutput::Column;
use futures::TryStreamExt;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use tokio_postgres::Client;

use super::event::{self, Origin};
use super::walsender::Walsender;
use super::{quote_ident, Relay, RelayConfig, RelayError, SESSION_SETTINGS};
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

pub(crate) fn outbox_table(config: &RelayConfig) -> String {
    format!(
        "{}.{}",
        quote_ident(&config.schema),
        quote_ident(&config.table)
    )
}

/// Takes the slot's advisory lock on `client`'s session, if no other session holds it: the
/// relay holds it while it runs (so a second relay, or a `resend` while a relay runs, knows),
/// and loses it with its connection.
pub async fn try_lock(client: &Client, slot: &str) -> Result<bool, RelayError> {
    Ok(client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext('clustera_outbox_relay'), hashtext($1))",
            &[&slot],
        )
        .await?
        .get(0))
}

/// The process id of the session holding the slot's lock, if any.
pub(crate) async fn lock_holder(client: &Client, slot: &str) -> Result<Option<i32>, RelayError> {
    Ok(client
        .query_opt(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2
                 AND classid = hashtext('clustera_outbox_relay')::oid AND objid = hashtext($1)::oid",
            &[&slot],
        )
        .await?
        .map(|row| row.get(0)))
}

/// The outbox's primary key: its column and type (`format_type`). `hint` says what to do
/// without one, in the caller's terms.
pub(crate) async fn primary_key(
    client: &Client,
    config: &RelayConfig,
    hint: &str,
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
            "the outbox {}.{} needs a primary key of one column (it has {}): {hint}",
            config.schema,
            config.table,
            rows.len()
        ))),
    }
}

async fn create_pending_table(client: &Client, config: &RelayConfig) -> Result<(), RelayError> {
    let pending = pending_table(config);
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {pending} (
                 slot text NOT NULL,
                 seq bigint GENERATED ALWAYS AS IDENTITY,
                 key text NOT NULL,
                 PRIMARY KEY (slot, key));
             CREATE INDEX IF NOT EXISTS {} ON {pending} (slot, seq)",
            quote_ident(&format!("{PENDING_TABLE}_seq"))
        ))
        .await?;
    Ok(())
}

/// Records in the pending table the keys of the outbox rows `filter` selects (with `$2` its
/// parameter), oldest first by the time column if the table has it, then by key.
async fn mark(
    client: &Client,
    config: &RelayConfig,
    key: &str,
    filter: &str,
    since: Option<&str>,
) -> Result<u64, tokio_postgres::Error> {
    let has_time: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute
                 WHERE attrelid = $1::text::regclass AND attname = $2 AND NOT attisdropped)",
            &[&outbox_table(config), &config.time_column],
        )
        .await?
        .get(0);
    let key = quote_ident(key);
    let order = if has_time {
        format!("{}, {key}", quote_ident(&config.time_column))
    } else {
        key.clone()
    };
    let sql = format!(
        "INSERT INTO {} (slot, key) SELECT $1, {key}::text FROM {} {filter} ORDER BY {order} ON CONFLICT DO NOTHING",
        pending_table(config),
        outbox_table(config),
    );
    match since {
        Some(since) => client.execute(&sql, &[&config.slot, &since]).await,
        None => client.execute(&sql, &[&config.slot]).await,
    }
}

/// Creates the slot and records, in the slot's own snapshot, the keys of the rows it will
/// not stream. Returns how many. If that fails, the slot is dropped again.
pub(crate) async fn create_slot_with_snapshot(
    client: &Client,
    target: &Target,
    config: &RelayConfig,
) -> Result<u64, RelayError> {
    client.batch_execute(SESSION_SETTINGS).await?;
    create_pending_table(client, config).await?;
    let (key, _) = primary_key(
        client,
        config,
        "set CLUSTERA_OUTBOX_SNAPSHOT=never to relay only rows committed from now on",
    )
    .await?;
    let mut session = Walsender::connect(target).await?;
    let created = session
        .query(&clustera_pgoutput::replication::create_slot_command(
            &config.slot,
        ))
        .await?;
    let recorded = match created
        .first()
        .and_then(|row| row.get(2))
        .cloned()
        .flatten()
    {
        None => Err(RelayError::Snapshot(
            "CREATE_REPLICATION_SLOT exported no snapshot".into(),
        )),
        Some(snapshot) => record_in_snapshot(client, config, &key, &snapshot)
            .await
            .map_err(RelayError::from),
    };
    // The exported snapshot lived as long as the creating session stayed idle.
    session.close().await;
    if recorded.is_err() {
        drop_slot(client, &config.slot).await;
    }
    recorded
}

/// In the exported snapshot: every row's key into the pending table.
async fn record_in_snapshot(
    client: &Client,
    config: &RelayConfig,
    key: &str,
    snapshot: &str,
) -> Result<u64, tokio_postgres::Error> {
    client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT {}",
            clustera_pgoutput::replication::quote_literal(snapshot)
        ))
        .await?;
    match mark(client, config, key, "", None).await {
        Ok(n) => client.batch_execute("COMMIT").await.map(|()| n),
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// Drops a slot whose snapshot could not be recorded (best effort: the creating session may
/// take a moment to let it go).
async fn drop_slot(client: &Client, slot: &str) {
    for _ in 0..50 {
        let dropped = client
            .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
            .await;
        match dropped {
            Ok(_) => return,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => {
                tracing::error!(%slot, error = %e,
                    "the slot's snapshot failed and the slot cannot be dropped: drop it by hand before init");
                return;
            }
        }
    }
}

/// Records the rows whose time column is at or after `since` (a time PostgreSQL reads as
/// `timestamptz`) to be sent again by [`Relay::send_pending`] (the relay's next start, or
/// `clustera outbox resend` now). Returns how many.
pub async fn mark_since(
    client: &Client,
    config: &RelayConfig,
    since: &str,
) -> Result<u64, RelayError> {
    client.batch_execute(SESSION_SETTINGS).await?;
    create_pending_table(client, config).await?;
    let (key, _) = primary_key(client, config, "rows cannot be marked to be sent again").await?;
    let filter = format!(
        "WHERE {} >= $2::text::timestamptz",
        quote_ident(&config.time_column)
    );
    Ok(mark(client, config, &key, &filter, Some(since)).await?)
}

/// The outbox's columns from the catalog, as pgoutput's Relation message gives them: each
/// attribute's own type, generated columns left out, the replica identity's columns marked
/// as the key.
async fn catalog_columns(client: &Client, config: &RelayConfig) -> Result<Vec<Column>, RelayError> {
    let rows = client
        .query(
            "SELECT a.attname::text, a.atttypid, a.atttypmod,
                    coalesce(a.attnum = ANY(i.indkey), c.relreplident = 'f')
             FROM pg_attribute a
             JOIN pg_class c ON c.oid = a.attrelid
             LEFT JOIN pg_index i ON i.indrelid = a.attrelid
                 AND ((c.relreplident = 'i' AND i.indisreplident)
                      OR (c.relreplident = 'd' AND i.indisprimary))
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
                 AND a.attgenerated = ''
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
    /// forgotten once Kafka acknowledged it. Returns how many were sent. The caller holds the
    /// slot's lock ([`try_lock`]).
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
        let waiting: i64 = self
            .client
            .query_one(
                &format!("SELECT count(*) FROM {pending} WHERE slot = $1"),
                &[&self.config.slot],
            )
            .await?
            .get(0);
        if waiting == 0 {
            return Ok(0);
        }
        let (key, key_type) = primary_key(
            &self.client,
            &self.config,
            "its pending rows cannot be read back (empty the pending table to drop them)",
        )
        .await?;
        let columns = catalog_columns(&self.client, &self.config).await?;
        let select = columns
            .iter()
            .map(|c| format!("o.{}::text", quote_ident(&c.name)))
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
            rows = waiting,
            "relaying the outbox's pending rows (snapshot) before streaming"
        );
        // In the pending order; a key whose row is gone joins nothing and is skipped.
        let rows_sql = format!(
            "SELECT {select}, k.key FROM unnest($1::text[]) WITH ORDINALITY AS k(key, n)
             JOIN {} o ON o.{} = k.key::{key_type} ORDER BY k.n",
            outbox_table(&self.config),
            quote_ident(&key),
        );
        let keys_sql = format!(
            "SELECT seq, key FROM {pending} WHERE slot = $1 AND seq > $2 ORDER BY seq LIMIT {BATCH}"
        );
        let forget_sql = format!("DELETE FROM {pending} WHERE slot = $1 AND key = ANY($2)");
        let (mut sent, mut after) = (0u64, 0i64);
        loop {
            let page = self
                .client
                .query(&keys_sql, &[&self.config.slot, &after])
                .await?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.get(0);
            let keys: Vec<String> = page.iter().map(|r| r.get(1)).collect();
            let final_page = page.len() < BATCH as usize;
            let rows = self
                .client
                .query_raw(
                    &rows_sql,
                    [&keys as &(dyn tokio_postgres::types::ToSql + Sync)],
                )
                .await?;
            futures::pin_mut!(rows);
            let mut deliveries = VecDeque::new();
            let mut next = rows.try_next().await?;
            while let Some(row) = next {
                // Read ahead one row, to know the last.
                next = rows.try_next().await?;
                let width = row.len() - 1;
                let values: Vec<Option<String>> = (0..width).map(|i| row.get(i)).collect();
                let marker = match (sent, next.is_none() && final_page) {
                    (_, true) => SnapshotRecord::Last,
                    (0, false) => SnapshotRecord::First,
                    _ => SnapshotRecord::True,
                };
                let origin = Origin::snapshot(marker);
                let encoded = self
                    .tables
                    .encode(event::SNAPSHOT_RELATION, &values, &origin, lsn)
                    .map_err(|e| match e {
                        RelayError::Row { source, .. } => RelayError::Snapshot(format!(
                            "row with {key} = {}: {source}. Set CLUSTERA_OUTBOX_DEAD_LETTER_TOPIC \
                             to send such rows there, or delete its key from {pending}",
                            row.get::<_, String>(width)
                        )),
                        other => other,
                    })?;
                let Some(record) = encoded else {
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
            if let Some(t) = &self.telemetry {
                t.progressed();
            }
        }
        tracing::info!(rows = sent, "pending rows relayed");
        Ok(sent)
    }
}
