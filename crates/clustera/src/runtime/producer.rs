//! Produces outputs and dead-letter records. Each record carries a token naming the input
//! message it belongs to; the broker's acknowledgement feeds that partition's offset tracker.
//!
//! Failed deliveries never freeze a partition and are never dropped
//! ([`super::produce_error`] tells them apart):
//! - a **transient** failure (a timeout after an outage, a purge) starts a *resend episode*:
//!   new sends are held at a gate, records still queued behind the failure are pulled back
//!   (purged), and once nothing is outstanding everything collected is sent again in bulk, in
//!   each input partition's original order (offset, then position among its outputs). By
//!   default the producer has no local timeout, so an outage fails nothing and idempotence
//!   keeps each partition's order. Failures come only from an operator's
//!   `message.timeout.ms`, and then the order is best-effort: after a timeout librdkafka
//!   bumps the idempotent epoch and goes on, so a record re-queued from a request in flight
//!   can be sent between the failure and the first purge;
//! - a **permanent** refusal of an output dead-letters its input in the output's place (the
//!   error names the refused record's topic and the broker's error);
//! - a permanent refusal of a dead letter is retried once cut down to its provenance and a
//!   reference to the original if it was refused for its size, and otherwise stops the kernel
//!   ([`super::fatal`]), as does a fatal producer error.
//!
//! Under exactly-once ([`super::transaction`]) nothing is sent again or dead-lettered here: a
//! failed record fails its transaction, which the poll thread aborts and redoes from the last
//! commit; a refused output is remembered so that its input is dead-lettered the second time.

use std::sync::{Arc, Weak};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use rdkafka::{ClientConfig, ClientContext, Message as _};
use tokio::sync::{mpsc, RwLock};

use super::dead_letter::{self, DeadLetters, Origin};
use super::fatal::Fatal;
use super::partition::PartitionShared;
use super::produce_error::{
    classify, is_outage, is_size_refusal, ProduceErrorClass, MAX_UNEXPLAINED_FAILURES,
};
use super::stats::RuntimeStats;
use super::transaction::Transactions;
use crate::context::Record;
use crate::message::{Header, Message};
use crate::telemetry::Telemetry;

/// What a produced record is to its input message.
#[derive(Debug)]
pub(crate) enum RecordKind {
    /// An output of the kernel; the input is kept to dead-letter it if the output is refused.
    Output {
        input: Arc<RetainedInput>,
        /// Attempts the input took, for its dead letter.
        attempts: u32,
    },
    /// The input's dead letter.
    DeadLetter,
}

/// An input kept while its outputs are in flight, holding its share of the memory budget.
#[derive(Debug)]
pub(crate) struct RetainedInput {
    pub message: Message,
    /// Released when the last output's token is dropped.
    pub _budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Names the input message a produced record belongs to.
#[derive(Debug)]
pub(crate) struct DeliveryToken {
    pub partition: Arc<PartitionShared>,
    pub offset: i64,
    /// Position among the records of this input, for ordered resends.
    pub seq: u64,
    /// The partition the kernel pinned the record to, kept for a resend.
    pub pinned_partition: Option<i32>,
    pub kind: RecordKind,
    /// Transient failures that were not outages (see `produce_error::is_outage`).
    pub unexplained_failures: u32,
}

/// A record whose delivery failed, on its way to triage.
struct Failed {
    record: Record,
    token: Box<DeliveryToken>,
    code: RDKafkaErrorCode,
    error: String,
}

/// Routes delivery reports to the offset trackers and failures to triage.
pub(crate) struct DeliveryContext {
    failed: mpsc::UnboundedSender<Failed>,
    /// The open transaction, under exactly-once: a failure dooms it at once, before the
    /// flush that precedes a commit returns.
    transactions: Option<Arc<Transactions>>,
    stats: Arc<RuntimeStats>,
    telemetry: Arc<Telemetry>,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.telemetry.redactor.log(level, fac, log_message);
    }

    // A fatal error arrives here with its underlying code (an out-of-order sequence, a
    // fencing), not as `Fatal`; the triage task asks the client whether it is fatal.
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "producer error");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<DeliveryToken>;

    fn delivery(&self, result: &DeliveryResult<'_>, token: Box<DeliveryToken>) {
        match result {
            Ok(_) => {
                RuntimeStats::bump(&self.stats.outputs_acked);
                let offset = token.offset;
                token.partition.track(|o| o.ack(offset));
            }
            Err((error, message)) => {
                let code = error
                    .rdkafka_error_code()
                    .unwrap_or(RDKafkaErrorCode::Unknown);
                let record = record_from_failed(message, token.pinned_partition);
                if let Some(txn) = &self.transactions {
                    fail_transaction(txn, &token, &record.topic, code, error);
                }
                // The receiver lives as long as the producer; if it is gone we are shutting down
                // and the input's offset stays uncommitted, which is safe.
                let _ = self.failed.send(Failed {
                    record,
                    token,
                    code,
                    error: error.to_string(),
                });
            }
        }
    }
}

fn record_from_failed(message: &BorrowedMessage<'_>, pinned: Option<i32>) -> Record {
    let headers = message
        .headers()
        .map(Header::all_from_kafka)
        .unwrap_or_default();
    Record {
        topic: message.topic().to_owned(),
        key: message.key().map(|k| k.to_vec().into()),
        value: message.payload().map(|v| v.to_vec().into()),
        headers,
        partition: pinned,
    }
}

/// The kernel's producer: idempotent, shared by every partition worker.
pub(crate) struct OutputProducer {
    inner: ThreadedProducer<DeliveryContext>,
    stats: Arc<RuntimeStats>,
    telemetry: Arc<Telemetry>,
    failed: mpsc::UnboundedSender<Failed>,
    /// Workers send under a read guard; a resend episode holds the write guard, so nothing new
    /// is queued ahead of the records it sends again.
    gate: RwLock<()>,
    dead_letters: DeadLetters,
    fatal: Arc<Fatal>,
    /// The open transaction, under exactly-once.
    transactions: Option<Arc<Transactions>>,
}

impl OutputProducer {
    /// Creates the producer and the task that triages failed deliveries. Abort and await that
    /// task before dropping the producer, so the last reference is dropped off the async workers.
    pub(crate) fn start(
        config: &ClientConfig,
        stats: Arc<RuntimeStats>,
        telemetry: Arc<Telemetry>,
        dead_letters: DeadLetters,
        fatal: Arc<Fatal>,
        max_backoff: Duration,
        transactions: Option<Arc<Transactions>>,
    ) -> Result<(Arc<Self>, tokio::task::JoinHandle<()>), KafkaError> {
        let (tx, rx) = mpsc::unbounded_channel::<Failed>();
        let context = DeliveryContext {
            failed: tx.clone(),
            transactions: transactions.clone(),
            stats: stats.clone(),
            telemetry: telemetry.clone(),
        };
        let inner = config.create_with_context(context)?;
        let producer = Arc::new(Self {
            inner,
            stats,
            telemetry,
            failed: tx,
            gate: RwLock::new(()),
            dead_letters,
            fatal,
            transactions,
        });
        let triage = tokio::spawn(triage_failures(Arc::downgrade(&producer), rx, max_backoff));
        Ok((producer, triage))
    }

    /// The dead-letter builder the producer uses for refused outputs.
    pub(crate) fn dead_letters(&self) -> &DeadLetters {
        &self.dead_letters
    }

    /// Queues `record` behind any resend episode under way; waits while librdkafka's queue is
    /// full. A record rejected outright (unknown partition, too large) is triaged like a failed
    /// delivery.
    pub(crate) async fn send(&self, record: &Record, token: Box<DeliveryToken>) {
        let _open = self.gate.read().await;
        self.enqueue(record, token).await;
    }

    /// Queues `record` without looking at the gate (triage and resends use it).
    async fn enqueue(&self, record: &Record, token: Box<DeliveryToken>) {
        let mut token = token;
        loop {
            RuntimeStats::bump(&self.stats.outputs_sent);
            let base = BaseRecord {
                topic: &record.topic,
                partition: record.partition,
                payload: record.value.as_deref(),
                key: record.key.as_deref(),
                timestamp: None,
                headers: kafka_headers(&record.headers),
                delivery_opaque: token,
            };
            match self.inner.send(base) {
                Ok(()) => return,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), rejected)) => {
                    token = rejected.delivery_opaque;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((error, rejected)) => {
                    let code = error
                        .rdkafka_error_code()
                        .unwrap_or(RDKafkaErrorCode::Unknown);
                    // Refused before it was queued: librdkafka's transaction never saw it, so
                    // only this can keep the transaction from committing without it.
                    if let Some(txn) = &self.transactions {
                        let token = &rejected.delivery_opaque;
                        fail_transaction(txn, token, &record.topic, code, &error);
                    }
                    let _ = self.failed.send(Failed {
                        record: record.clone(),
                        token: rejected.delivery_opaque,
                        code,
                        error: error.to_string(),
                    });
                    return;
                }
            }
        }
    }

    /// Sorts out one failure: transient ones are kept in `resend`, permanent ones leave the
    /// walk (as a dead letter, or by stopping the kernel).
    async fn triage(&self, failed: Failed, resend: &mut Vec<(Record, Box<DeliveryToken>)>) {
        let Failed {
            mut record,
            mut token,
            code,
            error,
        } = failed;
        RuntimeStats::bump(&self.stats.produce_failures);
        self.telemetry.metrics.error("produce");
        if token.partition.stop.is_cancelled() {
            // Its partition was revoked or is shutting down: nothing more of it is committed
            // here, and whoever reads it next processes it again. Sending it (or its dead
            // letter) now would only add a duplicate.
            tracing::debug!(topic = %record.topic, error = %error,
                "delivery failed for a stopped partition; left to its next owner");
            // Never committed now; and the drain need not wait for it.
            token.partition.track(|o| o.abandon(token.offset));
            return;
        }
        let (input_topic, input_partition, offset) = (
            &token.partition.topic,
            token.partition.partition,
            token.offset,
        );
        let mut class = classify(code);
        if self.transactions.is_some() {
            // The transaction was doomed (and a refusal remembered) when the failure was
            // reported; it is aborted and redone, so nothing is sent again here.
            token.partition.track(|o| o.abandon(offset));
            match (class, &token.kind) {
                (ProduceErrorClass::Permanent, RecordKind::Output { .. }) => {
                    RuntimeStats::bump(&self.stats.outputs_refused);
                    tracing::error!(topic = %record.topic, %input_topic, input_partition,
                        input_offset = offset, %error,
                        "output refused for good by the broker; the transaction is aborted and its input will be dead-lettered");
                }
                (ProduceErrorClass::Permanent, RecordKind::DeadLetter) => {
                    self.fatal.raise(format!(
                        "the dead-letter topic {} refused the dead letter of {input_topic}[{input_partition}] \
                         offset {offset} for good: {error}; fix the topic (or CLUSTERA_DLQ_TOPIC) and restart",
                        record.topic
                    ))
                }
                (ProduceErrorClass::Fatal, _) => self.fatal.raise(format!(
                    "the producer failed for good sending to {}: {error}",
                    record.topic
                )),
                (ProduceErrorClass::Transient, _) => {
                    tracing::warn!(topic = %record.topic, %input_topic, input_partition,
                        input_offset = offset, %error,
                        "delivery failed; the transaction is aborted and redone");
                }
            }
            return;
        }
        if class == ProduceErrorClass::Transient && !is_outage(code) {
            // An error that keeps coming back without being an outage would hold the
            // partition for good; past a bound it counts as a refusal.
            token.unexplained_failures += 1;
            if token.unexplained_failures >= MAX_UNEXPLAINED_FAILURES {
                class = ProduceErrorClass::Permanent;
            }
        }
        match class {
            ProduceErrorClass::Transient => {
                tracing::warn!(topic = %record.topic, %input_topic, input_partition,
                    input_offset = offset, %error, "delivery failed; it will be sent again");
                resend.push((record, token));
            }
            ProduceErrorClass::Fatal => self.fatal.raise(format!(
                "the producer failed for good sending to {}: {error}",
                record.topic
            )),
            ProduceErrorClass::Permanent => match &token.kind {
                RecordKind::Output { input, attempts } => {
                    RuntimeStats::bump(&self.stats.outputs_refused);
                    let mut first = false;
                    token.partition.track(|o| {
                        first = o.refused(offset)?;
                        Ok(())
                    });
                    tracing::error!(topic = %record.topic, %input_topic, input_partition,
                        input_offset = offset, %error,
                        "output refused for good by the broker; dead-lettering its input");
                    if first {
                        let reason = format!(
                            "output to topic {} refused by the broker: {error}",
                            record.topic
                        );
                        let letter =
                            self.dead_letters
                                .record(&input.message, &reason, *attempts);
                        let token = Box::new(DeliveryToken {
                            partition: token.partition.clone(),
                            offset,
                            seq: token.seq,
                            pinned_partition: None,
                            kind: RecordKind::DeadLetter,
                            unexplained_failures: 0,
                        });
                        self.enqueue(&letter, token).await;
                    }
                }
                RecordKind::DeadLetter
                    if is_size_refusal(code)
                        && dead_letter::shrink_to_provenance(
                            &mut record,
                            &Origin {
                                topic: input_topic,
                                partition: input_partition,
                                offset,
                            },
                        ) =>
                {
                    tracing::warn!(topic = %record.topic, %input_topic, input_partition,
                        input_offset = offset, %error,
                        "dead letter refused for its size; sending its provenance and a reference instead");
                    self.enqueue(&record, token).await;
                }
                RecordKind::DeadLetter => self.fatal.raise(format!(
                    "the dead-letter topic {} refused the dead letter of {input_topic}[{input_partition}] \
                     offset {offset} for good: {error}; fix the topic (or CLUSTERA_DLQ_TOPIC) and restart",
                    record.topic
                )),
            },
        }
    }

    /// Waits for every queued record to be acknowledged, up to `timeout`. Blocks: call it off
    /// the async workers.
    pub(crate) fn flush_blocking(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner.flush(timeout)
    }

    /// The transactional producer's calls, for the poll thread (they block).
    pub(crate) fn transactional(&self) -> &ThreadedProducer<DeliveryContext> {
        &self.inner
    }

    /// Records not yet acknowledged.
    pub(crate) fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
    }

    /// How many partitions `topics` have, from the cluster's metadata, with the topics not
    /// found. Blocks: call it off the async workers.
    pub(crate) fn partitions_of(
        &self,
        topics: &[String],
        timeout: Duration,
    ) -> Result<(usize, Vec<String>), KafkaError> {
        // All topics, not each by name: asking for a missing topic by name can create it.
        let metadata = self.inner.client().fetch_metadata(None, timeout)?;
        let mut count = 0;
        let mut missing = Vec::new();
        for t in topics {
            match metadata.topics().iter().find(|m| m.name() == t) {
                Some(m) if m.error().is_none() => count += m.partitions().len(),
                _ => missing.push(t.clone()),
            }
        }
        Ok((count, missing))
    }
}

/// How often the producer is asked whether it failed for good.
const FATAL_CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// Triages failures as they come; a transient one starts a resend episode. Also watches for a
/// fatal producer error.
async fn triage_failures(
    producer: Weak<OutputProducer>,
    mut failures: mpsc::UnboundedReceiver<Failed>,
    max_backoff: Duration,
) {
    let mut episodes = 0u32;
    let mut check = tokio::time::interval(FATAL_CHECK_INTERVAL);
    loop {
        let first = tokio::select! {
            f = failures.recv() => match f {
                Some(f) => f,
                None => break,
            },
            _ = check.tick() => {
                let Some(p) = producer.upgrade() else {
                    break;
                };
                if let Some((code, text)) = p.inner.client().fatal_error() {
                    p.fatal.raise(fatal_text(p.transactions.as_deref(), code, &text));
                    break;
                }
                continue;
            }
        };
        let Some(p) = producer.upgrade() else {
            break;
        };
        let mut resend = Vec::new();
        p.triage(first, &mut resend).await;
        if resend.is_empty() {
            continue;
        }
        let gate = p.gate.write().await;
        // Pull back what is queued behind the failure and wait until every outstanding record
        // is acknowledged or collected here. librdkafka re-queues in-flight records it retries,
        // so the queue is purged on every turn.
        loop {
            p.inner.purge(PurgeConfig::default().queue());
            while let Ok(f) = failures.try_recv() {
                p.triage(f, &mut resend).await;
            }
            if p.inner.in_flight_count() == 0 && failures.is_empty() {
                break;
            }
            if p.fatal.is_raised() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Back off a little more with each episode in a row, so a broker that keeps failing
        // every record is not hammered; the wait is short next to the timeouts that caused it.
        episodes = episodes.saturating_add(1);
        let delay =
            (Duration::from_millis(50) * 2u32.saturating_pow(episodes.min(10))).min(max_backoff);
        tokio::time::sleep(delay).await;
        resend.sort_by(|(_, a), (_, b)| {
            (&a.partition.topic, a.partition.partition, a.offset, a.seq).cmp(&(
                &b.partition.topic,
                b.partition.partition,
                b.offset,
                b.seq,
            ))
        });
        tracing::warn!(
            records = resend.len(),
            "sending failed records again, in their original order"
        );
        for (record, token) in resend {
            p.enqueue(&record, token).await;
        }
        drop(gate);
        if failures.is_empty() {
            episodes = 0;
        }
    }
}

/// Under exactly-once, what a failed record means at once: the open transaction cannot
/// commit, and an output refused for good is remembered so that its input is dead-lettered
/// when it is processed again.
fn fail_transaction(
    txn: &Transactions,
    token: &DeliveryToken,
    topic: &str,
    code: RDKafkaErrorCode,
    error: &KafkaError,
) {
    txn.doom();
    if classify(code) == ProduceErrorClass::Permanent
        && matches!(token.kind, RecordKind::Output { .. })
    {
        txn.refuse(
            &token.partition.topic,
            token.partition.partition,
            token.offset,
            format!("output to topic {topic} refused by the broker: {error}"),
        );
    }
}

/// Why the producer failed for good, naming the likely cause of a fencing.
pub(crate) fn fatal_text(
    transactions: Option<&Transactions>,
    code: RDKafkaErrorCode,
    text: &str,
) -> String {
    match transactions {
        Some(t)
            if matches!(
                code,
                RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch
            ) =>
        {
            format!(
                "the transactional producer was fenced: another instance started with \
                 transactional.id {:?} (CLUSTERA_TRANSACTIONAL_ID); this one stops and its open \
                 transaction is aborted ({text})",
                t.id
            )
        }
        _ => format!("the producer failed for good: {text} ({code:?})"),
    }
}

fn kafka_headers(headers: &[Header]) -> Option<OwnedHeaders> {
    if headers.is_empty() {
        return None;
    }
    let mut out = OwnedHeaders::new_with_capacity(headers.len());
    for h in headers {
        out = out.insert(KafkaHeader {
            key: &h.name,
            value: h.value.as_deref(),
        });
    }
    Some(out)
}
