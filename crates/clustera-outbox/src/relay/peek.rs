//! The previous read path, kept selectable (`CLUSTERA_RELAY_READ=peek`) for comparison:
//! rounds of `pg_logical_slot_peek_binary_changes` over SQL, which return whole committed
//! transactions without consuming them, then `pg_replication_slot_advance` once Kafka has
//! acknowledged every event of the transactions before that point. Its memory grows with the
//! largest transaction, and every round decodes the retained WAL again.

use std::collections::VecDeque;
use std::time::Duration;

use clustera_pgoutput::{self as pgoutput, PgOutput};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use super::event;
use super::{Relay, RelayError};

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
    /// The peek loop: when idle, it waits for a wake-up or polls every 50 ms (every second
    /// with wake-ups).
    pub(super) async fn run_peek(
        &mut self,
        mut stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Result<(), RelayError> {
        let mut woken_until = None;
        let mut lag_measured = tokio::time::Instant::now() - LAG_EVERY;
        loop {
            let round = tokio::select! {
                _ = stop.as_mut() => break,
                r = self.round(&mut lag_measured) => r,
            };
            let sent = match round {
                Ok(sent) => sent,
                Err(e) if e.is_unavailable() => {
                    tracing::warn!(error = %e,
                        "postgres unavailable; reconnecting, then resuming from the slot's confirmed position");
                    self.client = tokio::select! {
                        _ = stop.as_mut() => break,
                        r = crate::pg::reconnect_to(&self.target, "relay") => r?,
                    };
                    self.client.batch_execute(super::SESSION_SETTINGS).await?;
                    // The lock went with the old session: take it again, or give way.
                    if !self.try_lock().await? {
                        return Err(RelayError::SlotActive {
                            slot: self.config.slot.clone(),
                            detail: "another relay took the slot's lock during an outage".into(),
                        });
                    }
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
                    _ = stop.as_mut() => break,
                    _ = tokio::time::sleep(POLL) => false,
                },
                Some(w) => tokio::select! {
                    _ = stop.as_mut() => break,
                    _ = w.notified() => true,
                    _ = tokio::time::sleep(POLL_WITH_WAKEUPS) => false,
                },
            };
            if woken {
                woken_until = Some(tokio::time::Instant::now() + AFTER_WAKEUP);
            }
        }
        Ok(())
    }

    /// Measures how far the slot's positions are behind the server's WAL.
    async fn measure_lag(&self) -> Result<(), RelayError> {
        let Some(telemetry) = &self.telemetry else {
            return Ok(());
        };
        let row = self
            .client
            .query_opt(super::telemetry::SLOT_WAL_SQL, &[&self.config.slot])
            .await?;
        if let Some(row) = row {
            telemetry.metrics.slot_wal(row.get(0), row.get(1));
        }
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
                "SELECT (lsn - '0/0'::pg_lsn)::bigint, data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, 'proto_version', '1', 'publication_names', $3)",
                &[&self.config.slot, &self.config.batch, &self.config.publication],
            )
            .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let mut deliveries = VecDeque::new();
        let mut sent = 0;
        let mut confirm = None;
        let mut origin = self.peek_origin;
        for row in &rows {
            let lsn = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
            let data: Vec<u8> = row.get(1);
            match pgoutput::parse(&data)? {
                PgOutput::Begin { xid, commit_ts, .. } => {
                    origin.xid = xid;
                    origin.commit_ts = commit_ts;
                }
                PgOutput::Relation {
                    oid,
                    namespace,
                    name,
                    columns,
                } => self.tables.describe(oid, namespace, name, columns)?,
                PgOutput::Insert { oid, values } => {
                    let Some(record) = self.tables.encode(oid, &values, &origin, lsn)? else {
                        continue;
                    };
                    let mut record = event::future_record(&record);
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
                PgOutput::Commit {
                    commit_lsn,
                    end_lsn,
                    ..
                } => {
                    origin.last_commit_lsn = Some(commit_lsn);
                    confirm = Some(end_lsn);
                }
                PgOutput::Other(_) => {}
            }
        }
        let peeked = started.elapsed();
        for d in deliveries {
            self.acknowledged(d).await?;
        }
        self.peek_origin = origin;
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
}
