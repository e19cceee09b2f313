//! Producing a job's messages: a head, then its body in chunks, keyed by the job id, with a
//! bounded number of chunks awaiting acknowledgement (so a large body never piles up in the
//! producer's queue).

use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::FileExt;

use clustera::infra::idempotent_producer_config;
use clustera::Config;
use clustera_send_protocol::{BodyInfo, Chunker, JobId};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

use crate::spool::Spool;

/// Chunks produced but not yet acknowledged, at most.
const WINDOW: usize = 8;
/// How long the producer waits to fill a batch.
const LINGER: std::time::Duration = std::time::Duration::from_millis(2);

/// A body that can be read by position.
pub trait ReadAt: Sync {
    /// `len` bytes at `offset` (fewer only at the end).
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>>;
}

impl ReadAt for Spool {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.read(offset, len)
    }
}

impl ReadAt for std::fs::File {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        Ok(self[start..(start + len).min(self.len())].to_vec())
    }
}

/// Why sending failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Kafka refused or lost a message.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The body could not be read.
    #[error("reading the body: {0}")]
    Io(#[from] io::Error),
}

/// Produces jobs' messages to one topic.
#[derive(Clone)]
pub struct JobProducer {
    producer: FutureProducer,
    topic: String,
}

impl JobProducer {
    /// A producer for `topic` from `kafka`'s settings, built by the shared builder
    /// ([`clustera::infra::producer`]): idempotent, so a head is never overtaken by its chunks,
    /// even after retries.
    pub fn new(kafka: &Config, topic: &str) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: idempotent_producer_config(kafka, LINGER).create()?,
            topic: topic.to_owned(),
        })
    }

    /// Produces one message of `job` and waits for its acknowledgement.
    pub async fn send(&self, job: JobId, payload: &[u8]) -> Result<(), SendError> {
        let delivery = self.enqueue(job, payload)?;
        await_delivery(delivery).await
    }

    /// Produces `head`, then `body` (described by `info`) in chunks; reports bytes sent.
    pub async fn send_with_body(
        &self,
        job: JobId,
        head: &[u8],
        info: &BodyInfo,
        body: &(impl ReadAt + ?Sized),
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), SendError> {
        let mut pending = VecDeque::with_capacity(WINDOW + 1);
        pending.push_back((self.enqueue(job, head)?, 0));
        let chunker = Chunker::new(job);
        let mut sent = 0u64;
        for sequence in 0..info.total_chunks {
            let offset = u64::from(sequence) * u64::from(info.chunk_size);
            let len = usize::try_from(info.chunk_len(sequence)).unwrap_or(0);
            let data = body.read_at(offset, len)?;
            if data.len() != len {
                return Err(SendError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the body ended at {} bytes, {} expected",
                        offset + data.len() as u64,
                        info.size
                    ),
                )));
            }
            let message = chunker.encode(sequence, info.total_chunks, &data);
            pending.push_back((self.enqueue(job, &message)?, len as u64));
            while pending.len() > WINDOW {
                if let Some((d, n)) = pending.pop_front() {
                    await_delivery(d).await?;
                    sent += n;
                    progress(sent);
                }
            }
        }
        while let Some((d, n)) = pending.pop_front() {
            await_delivery(d).await?;
            sent += n;
            progress(sent);
        }
        Ok(())
    }

    fn enqueue(&self, job: JobId, payload: &[u8]) -> Result<DeliveryFuture, KafkaError> {
        let key = job.key();
        let mut record = FutureRecord::to(&self.topic).key(&key).payload(payload);
        // The producer's queue is bounded; when full, wait for room instead of failing.
        loop {
            match self.producer.send_result(record) {
                Ok(d) => return Ok(d),
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    record = r;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

async fn await_delivery(d: DeliveryFuture) -> Result<(), SendError> {
    match d.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(SendError::Kafka(e)),
        Err(_) => Err(SendError::Kafka(KafkaError::Canceled)),
    }
}
