//! The tasks one partition's messages deferred ([`crate::Context::defer`]): bounded, owned by
//! the partition's worker, drained when it stops.
//!
//! Each task stands for one unit of its message in the offset tracker, so the message is not
//! done (and nothing after it commits) until the task has finished and its records are
//! acknowledged.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A partition's running deferred tasks and the slots they take.
pub(crate) struct Deferrals {
    /// Dropping the set (the worker aborted at the drain timeout) cancels every task.
    running: JoinSet<()>,
    slots: DeferralSlots,
}

/// The bound on a partition's deferred tasks, shareable with whoever settles its messages.
#[derive(Clone)]
pub(crate) struct DeferralSlots {
    slots: Arc<Semaphore>,
    max: u32,
}

/// The slots taken by one message's deferred tasks, freed when the last of them ends.
pub(crate) type Slots = Arc<OwnedSemaphorePermit>;

impl Deferrals {
    pub(crate) fn new(max: usize) -> Self {
        let max = u32::try_from(max.max(1)).unwrap_or(u32::MAX);
        Self {
            running: JoinSet::new(),
            slots: DeferralSlots {
                slots: Arc::new(Semaphore::new(max as usize)),
                max,
            },
        }
    }

    /// The slots tasks are reserved from.
    pub(crate) fn slots(&self) -> &DeferralSlots {
        &self.slots
    }

    /// Runs `task` next to the worker, in the current span.
    pub(crate) fn spawn(&mut self, task: impl Future<Output = ()> + Send + 'static) {
        // Finished tasks stay in the set until joined; reaping here keeps it within the bound.
        while self.running.try_join_next().is_some() {}
        self.running.spawn(task.in_current_span());
    }

    /// Waits for every task to end (they see the partition's stop and end soon: a task
    /// waiting to retry gives up; one in the kernel finishes its call).
    pub(crate) async fn drain(&mut self) {
        while self.running.join_next().await.is_some() {}
    }
}

impl DeferralSlots {
    /// Waits until `n` more tasks may run (a message with more than the bound takes all of
    /// it). `None` if the partition was stopped while this had to wait.
    pub(crate) async fn reserve(&self, n: usize, stop: &CancellationToken) -> Option<Slots> {
        let n = u32::try_from(n).unwrap_or(u32::MAX).clamp(1, self.max);
        if let Ok(permit) = self.slots.clone().try_acquire_many_owned(n) {
            return Some(Arc::new(permit));
        }
        tokio::select! {
            biased;
            _ = stop.cancelled() => None,
            permit = self.slots.clone().acquire_many_owned(n) => permit.ok().map(Arc::new),
        }
    }
}
