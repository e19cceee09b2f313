//! State of one assigned partition shared by its worker, the producer's delivery callback and
//! the poll thread.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
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
    /// When the current message's processing began ([`crate::telemetry::Health`] clock, ms);
    /// 0 when idle.
    pub busy_since_ms: AtomicU64,
    /// Waiting to retry a message: nothing else in the partition moves meanwhile.
    pub retrying: AtomicBool,
    /// Consumer lag from librdkafka's statistics; -1 until known.
    pub lag: AtomicI64,
}

impl PartitionShared {
    pub(crate) fn new(topic: Arc<str>, partition: i32) -> Arc<Self> {
        Arc::new(Self {
            topic,
            partition,
            offsets: Mutex::new(PartitionOffsets::new()),
            stop: CancellationToken::new(),
            busy_since_ms: AtomicU64::new(0),
            retrying: AtomicBool::new(false),
            lag: AtomicI64::new(-1),
        })
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
