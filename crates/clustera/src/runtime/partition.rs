//! State of one assigned partition shared by its worker, the producer's delivery callback and
//! the poll thread.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::time::Duration;

use crate::telemetry::DurationHistogram;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use super::offsets::PartitionOffsets;

/// One assigned partition. A new one is made at every assignment, so acknowledgements for a
/// revoked assignment land in a stale object and change nothing that will be committed.
#[derive(Debug)]
pub(crate) struct PartitionShared {
    pub topic: Arc<str>,
    pub partition: i32,
    offsets: Mutex<PartitionOffsets>,
    /// Cancelled on revocation and shutdown: the worker stops after its current message.
    pub stop: CancellationToken,
    /// A message is being processed now.
    pub busy: AtomicBool,
    /// Written only by this partition's worker, published by the poll thread: the
    /// per-message path never touches an atomic that another thread also writes.
    pub counters: PartitionCounters,
    /// Waiting to retry a message: nothing else in the partition moves meanwhile.
    pub retrying: AtomicBool,
    /// Consumer lag from librdkafka's statistics; -1 until known.
    pub lag: AtomicI64,
    /// The worker may hold a message it took from the queue and has not finished (set before
    /// every poll of the queue, cleared when a poll finds it empty). While it is clear, the
    /// consumer's position (which moves past transaction markers the kernel never sees) is
    /// safe to commit.
    pub holding: AtomicBool,
    /// The first offset the worker took; -1 until then. Exactly-once rewinds here when the
    /// partition has no commit of its own yet.
    pub first_taken: AtomicI64,
}

impl PartitionShared {
    pub(crate) fn new(topic: Arc<str>, partition: i32) -> Arc<Self> {
        Arc::new(Self {
            topic,
            partition,
            offsets: Mutex::new(PartitionOffsets::new()),
            stop: CancellationToken::new(),
            busy: AtomicBool::new(false),
            counters: PartitionCounters::default(),
            retrying: AtomicBool::new(false),
            lag: AtomicI64::new(-1),
            holding: AtomicBool::new(true),
            first_taken: AtomicI64::new(-1),
        })
    }

    /// Notes that the worker took `offset` (only the first one is kept).
    pub(crate) fn taken(&self, offset: i64) {
        use std::sync::atomic::Ordering;
        if self.first_taken.load(Ordering::Relaxed) < 0 {
            let _ =
                self.first_taken
                    .compare_exchange(-1, offset, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// The first offset the worker took, if any.
    pub(crate) fn first_taken(&self) -> Option<i64> {
        let first = self.first_taken.load(std::sync::atomic::Ordering::Relaxed);
        (first >= 0).then_some(first)
    }

    /// The tracker. A poisoned lock only means a panic elsewhere while holding it; the tracker's
    /// state is updated in single steps, so it is still consistent.
    pub(crate) fn offsets(&self) -> MutexGuard<'_, PartitionOffsets> {
        self.offsets.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies a tracker update, logging (never panicking on) a bookkeeping mistake.
    pub(crate) fn track(
        &self,
        update: impl FnOnce(&mut PartitionOffsets) -> Result<(), super::offsets::OffsetError>,
    ) {
        if let Err(e) = update(&mut self.offsets()) {
            tracing::error!(topic = %self.topic, partition = self.partition, error = %e,
                "offset bookkeeping error; this partition will not commit past it");
        }
    }
}

/// What one partition's worker has done, since the partition was assigned.
#[derive(Debug, Default)]
pub(crate) struct PartitionCounters {
    pub acked: AtomicU64,
    pub skipped: AtomicU64,
    /// Messages whose outcome was a dead letter.
    pub dead_lettered: AtomicU64,
    /// Dead-letter records sent: whole messages', and parts of messages
    /// (`ctx.dead_letter`, deferred tasks that failed for good) that were acknowledged too.
    pub letters: AtomicU64,
    pub retries: AtomicU64,
    /// Drained into the topic's histogram on publication.
    pub processing: DurationHistogram,
    /// Drained into the topic's histogram on publication.
    pub end_to_end: DurationHistogram,
}

impl PartitionCounters {
    /// Records how long a message took to process, and from its timestamp to `now_ms`.
    pub(crate) fn observe(&self, timestamp_ms: Option<i64>, processing: Duration, now_ms: i64) {
        self.processing.observe(processing);
        if let Some(ms) = timestamp_ms.and_then(|ts| u64::try_from(now_ms - ts).ok()) {
            self.end_to_end.observe(Duration::from_millis(ms));
        }
    }
}
