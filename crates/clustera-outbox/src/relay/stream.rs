//! The streaming read path: one walsender session, events sent as they are decoded, the
//! confirmed position from [`Progress`] (see the module documentation of [`super`]).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use clustera_debezium::KafkaRecord;
use clustera_pgoutput::replication::{
    parse_copy_data, standby_status_update, start_replication_command, ReplicationMessage,
    PG_EPOCH_OFFSET_US,
};
use clustera_pgoutput::{self as pgoutput, PgOutput};
use rdkafka::error::KafkaError;
use rdkafka::producer::DeliveryFuture;
use rdkafka::types::RDKafkaErrorCode;

use super::event::{self, Origin};
use super::progress::Progress;
use super::walsender::Walsender;
use super::{AbortOnDrop, Relay, RelayError, ACTIVE_GRACE};

/// pgoutput's protocol version: 1 (whole transactions after their commit). Version 2's
/// streaming of in-progress transactions is not used; the server spills large transactions
/// to disk and the relay's memory is bounded by its in-flight window either way.
const PROTO_VERSION: u32 = 1;

/// How often the slot's WAL is measured and, when configured, a heartbeat written.
const WATCH_EVERY: Duration = Duration::from_secs(5);

/// The longest wait, when stopping, for Kafka to acknowledge what was sent.
const STOP_DRAIN: Duration = Duration::from_secs(10);

/// What a delivery future gives.
type Delivered = <DeliveryFuture as Future>::Output;

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Waits for the oldest delivery; never resolves when nothing is in flight.
async fn oldest(inflight: &mut VecDeque<DeliveryFuture>) -> Delivered {
    match inflight.front_mut() {
        Some(d) => d.await,
        None => std::future::pending().await,
    }
}

impl Relay {
    /// The streaming loop: sessions, reconnections, until `stop`.
    pub(super) async fn run_stream(
        &mut self,
        mut stop: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), RelayError> {
        let _watch = self.spawn_watch();
        let mut inflight = VecDeque::new();
        let started = std::time::Instant::now();
        let mut streamed = false;
        let mut outage = false;
        let mut delays = crate::pg::backoff();
        loop {
            let opened = tokio::select! {
                _ = stop.as_mut() => return Ok(()),
                r = self.open_session() => r,
            };
            let mut session = match opened {
                Ok(s) => s,
                Err(e) => {
                    // A slot held by a session that is going away (a relay just killed, our
                    // own session before an outage) is waited for; one held for longer by
                    // another relay, at start-up, is a refusal.
                    let wait = match &e {
                        RelayError::SlotActive { .. } => {
                            streamed || started.elapsed() < ACTIVE_GRACE
                        }
                        e => e.is_unavailable(),
                    };
                    if !wait {
                        return Err(e);
                    }
                    outage = outage || e.is_unavailable();
                    let delay = delays.next().unwrap_or(crate::pg::MAX_BACKOFF);
                    tracing::warn!(error = %e, delay_ms = delay.as_millis() as u64,
                        "cannot stream from the slot yet; trying again");
                    tokio::select! {
                        _ = stop.as_mut() => return Ok(()),
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            if std::mem::take(&mut outage) {
                tracing::info!(
                    what = "relay",
                    "reconnected to postgres; streaming from the slot's confirmed position"
                );
            }
            streamed = true;
            delays = crate::pg::backoff();
            if let Some(t) = &self.telemetry {
                t.progressed();
            }
            // pgoutput describes each relation again in every session.
            self.tables.clear();
            let mut progress = Progress::new(0);
            let ended = self
                .stream(&mut session, &mut progress, &mut inflight, stop.as_mut())
                .await;
            match ended {
                Ok(()) => {
                    // What Kafka acknowledges now can still be confirmed.
                    let drained =
                        tokio::time::timeout(STOP_DRAIN, self.drain(&mut progress, &mut inflight))
                            .await;
                    if let Ok(Err(e)) = drained {
                        return Err(e);
                    }
                    let _ = self.report(&mut session, &progress, false).await;
                    session.close().await;
                    return Ok(());
                }
                Err(e) if e.is_unavailable() => {
                    tracing::warn!(error = %e,
                        "postgres unavailable; reconnecting, then resuming from the slot's confirmed position");
                    outage = true;
                    // The events sent are kept, not forgotten: the next session starts at
                    // the confirmed position and sends them again after these. A stop while
                    // Kafka is slow too is honoured (nothing more can be confirmed anyway).
                    tokio::select! {
                        _ = stop.as_mut() => return Ok(()),
                        drained = self.drain(&mut progress, &mut inflight) => drained?,
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Connects a walsender session and starts streaming from the slot's confirmed
    /// position; a missing or busy slot is said so.
    async fn open_session(&self) -> Result<Walsender, RelayError> {
        let mut session = Walsender::connect(&self.target).await?;
        let command = start_replication_command(
            &self.config.slot,
            0,
            PROTO_VERSION,
            &[&self.config.publication],
        );
        match session.start(&command).await {
            Ok(()) => Ok(session),
            Err(e) => Err(match e.code() {
                Some("42704") if e.to_string().contains("replication slot") => {
                    RelayError::SlotMissing {
                        slot: self.config.slot.clone(),
                    }
                }
                Some("55006") => RelayError::SlotActive {
                    slot: self.config.slot.clone(),
                    detail: e.to_string(),
                },
                _ => e.into(),
            }),
        }
    }

    /// One session, until `stop` (`Ok`) or an error.
    async fn stream(
        &mut self,
        session: &mut Walsender,
        progress: &mut Progress,
        inflight: &mut VecDeque<DeliveryFuture>,
        mut stop: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<(), RelayError> {
        let mut tick = tokio::time::interval(self.config.status_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut acknowledged_at_tick = progress.acknowledged_count();
        let mut reported = 0;
        let mut origin = Origin::default();
        loop {
            let room = inflight.len() < self.config.max_in_flight;
            tokio::select! {
                biased;
                _ = stop.as_mut() => return Ok(()),
                delivered = oldest(inflight) => {
                    inflight.pop_front();
                    self.delivered(delivered, progress)?;
                }
                _ = tick.tick() => {
                    let moving = inflight.is_empty()
                        || progress.acknowledged_count() != acknowledged_at_tick;
                    acknowledged_at_tick = progress.acknowledged_count();
                    if let (true, Some(t)) = (moving, &self.telemetry) {
                        t.progressed();
                    }
                    self.report(session, progress, false).await?;
                    reported = progress.flushed();
                }
                message = session.next(), if room => {
                    let message = message?;
                    match parse_copy_data(&message)? {
                        ReplicationMessage::XLogData { data, wal_start, .. } => {
                            self.decoded(data, wal_start, progress, inflight, &mut origin).await?;
                        }
                        ReplicationMessage::Keepalive { wal_end, reply_requested, .. } => {
                            progress.idle(wal_end);
                            if reply_requested || progress.flushed() > reported {
                                self.report(session, progress, false).await?;
                                reported = progress.flushed();
                            }
                        }
                    }
                }
            }
        }
    }

    /// One pgoutput message, at `lsn`.
    async fn decoded(
        &mut self,
        data: &[u8],
        lsn: u64,
        progress: &mut Progress,
        inflight: &mut VecDeque<DeliveryFuture>,
        origin: &mut Origin,
    ) -> Result<(), RelayError> {
        match pgoutput::parse(data)? {
            PgOutput::Begin { xid, commit_ts, .. } => {
                progress.begin();
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
                if let Some(record) = self.tables.encode(oid, &values, origin, lsn)? {
                    self.send(&record, progress, inflight).await?;
                }
            }
            PgOutput::Commit {
                commit_lsn,
                end_lsn,
                commit_ts,
                ..
            } => {
                origin.last_commit_lsn = Some(commit_lsn);
                progress.commit(end_lsn, commit_ts);
                self.settled(progress);
            }
            PgOutput::Other(_) => {}
        }
        Ok(())
    }

    /// Hands one event to the producer. When its queue is full, waits for the oldest
    /// delivery (Kafka's pace) and tries again.
    async fn send(
        &self,
        record: &KafkaRecord,
        progress: &mut Progress,
        inflight: &mut VecDeque<DeliveryFuture>,
    ) -> Result<(), RelayError> {
        let mut record = event::future_record(record);
        loop {
            match self.producer.send_result(record) {
                Ok(d) => {
                    inflight.push_back(d);
                    progress.sent();
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    let Some(d) = inflight.pop_front() else {
                        // Nothing of ours is queued: the queue is someone else's to empty.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let delivered = d.await;
                    self.delivered(delivered, progress)?;
                }
                Err((e, _)) => return Err(RelayError::Kafka(e)),
            }
        }
    }

    /// The oldest delivery's outcome.
    fn delivered(&self, delivered: Delivered, progress: &mut Progress) -> Result<(), RelayError> {
        match delivered {
            Ok(Ok(_)) => {
                clustera::infra::bump(&self.relayed);
                if let Some(t) = &self.telemetry {
                    t.metrics.acknowledged(1);
                }
                progress.acknowledged();
                self.settled(progress);
                Ok(())
            }
            Ok(Err((e, _))) => Err(RelayError::Kafka(e)),
            Err(_) => Err(RelayError::Kafka(KafkaError::Canceled)),
        }
    }

    /// Reports the commit-to-acknowledgement time of transactions just confirmed.
    fn settled(&self, progress: &mut Progress) {
        let settled = progress.take_settled();
        if let Some(t) = &self.telemetry {
            let now = now_us() - PG_EPOCH_OFFSET_US;
            for commit_ts in settled {
                t.metrics
                    .commit_to_ack((now - commit_ts) as f64 / 1_000_000.0);
            }
        }
    }

    /// Waits for every event in flight.
    async fn drain(
        &self,
        progress: &mut Progress,
        inflight: &mut VecDeque<DeliveryFuture>,
    ) -> Result<(), RelayError> {
        while let Some(d) = inflight.pop_front() {
            let delivered = d.await;
            self.delivered(delivered, progress)?;
        }
        Ok(())
    }

    /// Sends a standby status update: flushed (and written, applied) = what may be
    /// confirmed.
    async fn report(
        &self,
        session: &mut Walsender,
        progress: &Progress,
        reply: bool,
    ) -> Result<(), RelayError> {
        let flushed = progress.flushed();
        session
            .send(&standby_status_update(
                flushed,
                flushed,
                flushed,
                now_us(),
                reply,
            ))
            .await?;
        if let Some(t) = &self.telemetry {
            t.metrics.status_update();
        }
        Ok(())
    }

    /// A task measuring the slot's WAL for the metrics and, when configured, writing
    /// heartbeats; on a connection of its own, reconnected as needed. Stops when dropped.
    fn spawn_watch(&self) -> Option<AbortOnDrop> {
        let telemetry = self.telemetry.clone();
        let heartbeat = self.config.heartbeat;
        if telemetry.is_none() && heartbeat.is_none() {
            return None;
        }
        let (target, slot) = (self.target.clone(), self.config.slot.clone());
        let task = tokio::spawn(async move {
            let mut client = None;
            let every = heartbeat.map_or(WATCH_EVERY, |h| h.min(WATCH_EVERY));
            let mut tick = tokio::time::interval(every);
            let mut measured = tokio::time::Instant::now() - WATCH_EVERY;
            loop {
                tick.tick().await;
                // Connected on demand: while PostgreSQL is away, each tick tries once (the
                // streaming session reports the outage; this task only measures).
                let c = match &client {
                    Some(c) => c,
                    None => match target.connect().await {
                        Ok(c) => client.insert(c),
                        Err(e) => {
                            tracing::debug!(error = %e, "relay watch: cannot connect");
                            continue;
                        }
                    },
                };
                let mut failed = None;
                if heartbeat.is_some() {
                    if let Err(e) = c
                        .execute(
                            "SELECT pg_logical_emit_message(false, 'clustera.heartbeat', '')",
                            &[],
                        )
                        .await
                    {
                        failed = Some(e);
                    }
                }
                if let (Some(t), true) = (&telemetry, measured.elapsed() >= WATCH_EVERY) {
                    measured = tokio::time::Instant::now();
                    match c.query_opt(super::telemetry::SLOT_WAL_SQL, &[&slot]).await {
                        Ok(Some(row)) => t.metrics.slot_wal(row.get(0), row.get(1)),
                        Ok(None) => {}
                        Err(e) => failed = Some(e),
                    }
                }
                if let Some(e) = failed {
                    tracing::debug!(error = %e, "relay watch query failed");
                    if c.is_closed() {
                        client = None;
                    }
                }
            }
        });
        Some(AbortOnDrop(task))
    }
}
