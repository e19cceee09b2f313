//! Produces outputs and dead-letter records. Each record carries a token naming the input
//! message it belongs to; the broker's acknowledgement feeds that partition's offset tracker.
//! A record whose delivery fails is sent again with backoff, never dropped: its input's offset
//! cannot be committed until it is acknowledged.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Message as _};
use tokio::sync::mpsc;

use super::partition::PartitionShared;
use super::stats::RuntimeStats;
use crate::context::Record;
use crate::message::Header;
use crate::telemetry::Telemetry;

/// Names the input message a produced record belongs to.
#[derive(Debug)]
pub(crate) struct DeliveryToken {
    pub partition: Arc<PartitionShared>,
    pub offset: i64,
    /// The partition the kernel pinned the record to, kept for a resend.
    pub pinned_partition: Option<i32>,
    /// Deliveries attempted so far, for the resend backoff.
    pub failures: u32,
}

/// A record whose delivery failed, waiting to be sent again.
struct Resend {
    record: Record,
    token: Box<DeliveryToken>,
}

/// Routes delivery reports to the offset trackers.
pub(crate) struct DeliveryContext {
    resend: mpsc::UnboundedSender<Resend>,
    stats: Arc<RuntimeStats>,
    telemetry: Arc<Telemetry>,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.telemetry.redactor.log(level, fac, log_message);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<DeliveryToken>;

    fn delivery(&self, result: &DeliveryResult<'_>, mut token: Box<DeliveryToken>) {
        match result {
            Ok(_) => {
                RuntimeStats::bump(&self.stats.outputs_acked);
                let offset = token.offset;
                token.partition.track(|o| o.ack(offset));
            }
            Err((error, message)) => {
                RuntimeStats::bump(&self.stats.produce_failures);
                self.telemetry.metrics.error("produce");
                token.failures += 1;
                tracing::warn!(
                    topic = message.topic(), input_topic = %token.partition.topic,
                    input_partition = token.partition.partition, input_offset = token.offset,
                    failures = token.failures, %error,
                    "delivery failed; sending the record again"
                );
                let record = record_from_failed(message, token.pinned_partition);
                // The receiver lives as long as the producer; if it is gone we are shutting down
                // and the input's offset stays uncommitted, which is safe.
                let _ = self.resend.send(Resend { record, token });
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
    resend: mpsc::UnboundedSender<Resend>,
}

impl OutputProducer {
    /// Creates the producer and the task that resends failed deliveries. Abort and await that
    /// task before dropping the producer, so the last reference is dropped off the async workers.
    pub(crate) fn start(
        config: &ClientConfig,
        stats: Arc<RuntimeStats>,
        telemetry: Arc<Telemetry>,
        max_backoff: Duration,
    ) -> Result<(Arc<Self>, tokio::task::JoinHandle<()>), KafkaError> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Resend>();
        let context = DeliveryContext {
            resend: tx.clone(),
            stats: stats.clone(),
            telemetry,
        };
        let inner = config.create_with_context(context)?;
        let producer = Arc::new(Self {
            inner,
            stats,
            resend: tx,
        });
        let weak = Arc::downgrade(&producer);
        let resender = tokio::spawn(async move {
            while let Some(Resend { record, token }) = rx.recv().await {
                let exp = token.failures.min(10);
                let delay = (Duration::from_millis(50) * 2u32.pow(exp)).min(max_backoff);
                tokio::time::sleep(delay).await;
                let Some(producer) = weak.upgrade() else {
                    break;
                };
                producer.send(&record, token).await;
            }
        });
        Ok((producer, resender))
    }

    /// Queues `record`; waits while librdkafka's queue is full. A record rejected outright
    /// (unknown topic, too large) goes to the resend path like a failed delivery.
    pub(crate) async fn send(&self, record: &Record, token: Box<DeliveryToken>) {
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
                    let mut token = rejected.delivery_opaque;
                    token.failures += 1;
                    RuntimeStats::bump(&self.stats.produce_failures);
                    tracing::error!(topic = %record.topic, input_topic = %token.partition.topic,
                        input_partition = token.partition.partition, input_offset = token.offset,
                        failures = token.failures, %error,
                        "record rejected by the producer; retrying it (the input will not be committed until it is delivered)");
                    let _ = self.resend.send(Resend {
                        record: record.clone(),
                        token,
                    });
                    return;
                }
            }
        }
    }

    /// Waits for every queued record to be acknowledged, up to `timeout`. Blocks: call it off
    /// the async workers.
    pub(crate) fn flush_blocking(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner.flush(timeout)
    }

    /// Records not yet acknowledged.
    pub(crate) fn in_flight(&self) -> i32 {
        self.inner.in_flight_count()
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
