//! Outbox retention (`CLUSTERA_OUTBOX_RETENTION_MS`): the relay deletes rows older than the
//! retention, by the time column, a batch at a time.
//!
//! Deleting a row never loses its event: the publication decodes inserts only, and the insert
//! is in the WAL the slot holds, whether or not the row is still in the table. So Debezium's
//! other pattern, deleting right after inserting (in the same transaction), works as it is;
//! retention only bounds how far back `clustera outbox resend` can reach. Rows waiting in the
//! pending table (a snapshot, a resend, of any slot) are kept. The time column should be
//! indexed on a large outbox, or each round scans the table.

use std::time::Duration;

use tokio_postgres::Client;

use super::{quote_ident, AbortOnDrop, RelayConfig, RelayError, PENDING_TABLE};
use crate::pg::Target;

/// Rows deleted per statement, so that no one statement holds locks or WAL for long.
const BATCH: i64 = 10_000;

/// The longest time between two cleanups.
const EVERY: Duration = Duration::from_secs(30);

/// Starts the cleanup task, if a retention is configured. It uses a connection of its own,
/// opened again after an outage; failures (a role without DELETE, say) are logged and
/// tried again at the next round.
pub(crate) fn spawn(target: &Target, config: &RelayConfig) -> Option<AbortOnDrop> {
    let retention = config.retention?;
    let every = (retention / 2).clamp(Duration::from_millis(100), EVERY);
    let (target, config) = (target.clone(), config.clone());
    let task = tokio::spawn(async move {
        let mut client: Option<Client> = None;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let c = match &client {
                Some(c) if !c.is_closed() => c,
                _ => match target.connect().await {
                    Ok(c) => client.insert(c),
                    Err(e) => {
                        tracing::debug!(error = %e, "outbox cleanup: cannot connect");
                        continue;
                    }
                },
            };
            match delete_expired(c, &config, retention).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rows = n, "outbox cleanup"),
                Err(e) => tracing::warn!(error = %e, "outbox cleanup failed; trying again later"),
            }
        }
    });
    Some(AbortOnDrop(task))
}

/// Deletes the expired rows, a batch at a time, except rows a snapshot or resend of any
/// slot still has to send (checked in the same statement, so a resend marking rows meanwhile
/// is never raced).
async fn delete_expired(
    client: &Client,
    config: &RelayConfig,
    retention: Duration,
) -> Result<u64, RelayError> {
    let schema = quote_ident(&config.schema);
    let pending = format!("{schema}.{}", quote_ident(PENDING_TABLE));
    let has_pending: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&pending])
        .await?
        .get(0);
    let table = super::snapshot::outbox_table(config);
    let keep_pending = if has_pending {
        let (key, _) = super::snapshot::primary_key(
            client,
            config,
            "rows waiting in the pending table cannot be told apart",
        )
        .await?;
        format!(
            "AND NOT EXISTS (SELECT 1 FROM {pending} p WHERE p.key = t.{}::text)",
            quote_ident(&key)
        )
    } else {
        String::new()
    };
    let delete = format!(
        "DELETE FROM {table} WHERE ctid = ANY(ARRAY(
             SELECT ctid FROM {table} t
             WHERE t.{} < now() - $1::bigint * interval '1 millisecond' {keep_pending}
             LIMIT {BATCH}))",
        quote_ident(&config.time_column)
    );
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    let mut deleted = 0;
    loop {
        let n = client.execute(&delete, &[&retention_ms]).await?;
        deleted += n;
        if n < BATCH as u64 {
            return Ok(deleted);
        }
    }
}
