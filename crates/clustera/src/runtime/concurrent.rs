//! Concurrent processing of one partition (`CLUSTERA_ORDERING=key` or `none`): messages are
//! taken in order and begun in the offset tracker at once, then processed in tasks of their
//! own, at most `CLUSTERA_MAX_IN_FLIGHT` at a time, each key's one after another
//! ([`Lanes`]). Commits stay contiguous, since the tracker commits only up to the first
//! message that is not done: a message waiting for its key, retrying, or waiting for its
//! outputs' acknowledgements holds back the commit, but not the other keys.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::clock::system_epoch_ms;
use super::decide::decide_message;
use super::deferred::{DeferralSlots, Deferrals};
use super::deps::WorkerDeps;
use super::effects::{settle, Launch, Tracking};
use super::lanes::{LaneKey, Lanes, ProcessingOrder};
use super::partition::PartitionShared;
use super::partition_queue::{Owner, Polled, SharedQueue};
use crate::kernel::Kernel;
use crate::message::Message;

/// What a message's task hands back: its lane, free for the next message of its key, and
/// the deferred tasks to start.
type Finished = (LaneKey, Option<Launch>);

/// Reads the partition from `queue` until it is stopped, processing concurrently under
/// `ordering`; then waits for the messages in process. Messages still waiting for their key
/// are given up (never committed; read again by the partition's next owner).
pub(crate) async fn read<K: Kernel>(
    deps: &WorkerDeps<K>,
    shared: &Arc<PartitionShared>,
    deferrals: &mut Deferrals,
    (queue, owner, ready): (&SharedQueue, Owner, &Notify),
    ordering: ProcessingOrder,
) {
    let mut run = Concurrent {
        deps,
        shared,
        deferrals,
        lanes: Lanes::new(ordering),
        running: JoinSet::new(),
    };
    run.read(queue, owner, ready).await;
    for waiting in run.lanes.take_waiting() {
        shared.track(|o| o.abandon(waiting.offset()));
    }
    while let Some(done) = run.running.join_next().await {
        run.finished(done, false);
    }
    shared.busy.store(false, Ordering::Relaxed);
}

struct Concurrent<'a, K> {
    deps: &'a WorkerDeps<K>,
    shared: &'a Arc<PartitionShared>,
    deferrals: &'a mut Deferrals,
    lanes: Lanes<Message>,
    /// Dropping it (the worker aborted at the drain timeout) cancels every message's task.
    running: JoinSet<Finished>,
}

impl<K: Kernel> Concurrent<'_, K> {
    async fn read(&mut self, queue: &SharedQueue, owner: Owner, ready: &Notify) {
        let stop = self.shared.stop.clone();
        let settings = &self.deps.settings;
        let topic = self.shared.topic.clone();
        loop {
            while let Some(done) = self.running.try_join_next() {
                self.finished(done, true);
            }
            if stop.is_cancelled() {
                return;
            }
            // Full: in process (or waiting for a key), or done but held behind an earlier
            // message that is not. Wait for a message to finish.
            let full = self.lanes.in_flight() >= settings.max_in_flight
                || self.shared.offsets().in_flight() >= settings.max_uncommitted;
            if full {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => return,
                    Some(done) = self.running.join_next() => self.finished(done, true),
                    // Held only by acknowledgements, which finish no task: look again soon.
                    _ = tokio::time::sleep(std::time::Duration::from_millis(5)) => {}
                }
                continue;
            }
            tokio::task::coop::consume_budget().await;
            self.shared.holding.store(true, Ordering::SeqCst);
            match queue.poll(owner, &topic) {
                Polled::Message(message) => self.take(message),
                Polled::Error(e) => tracing::warn!(error = %e, "partition queue error"),
                Polled::Superseded => return,
                Polled::Empty => {
                    // Everything taken so far is begun in the tracker.
                    self.shared.holding.store(false, Ordering::SeqCst);
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return,
                        Some(done) = self.running.join_next() => self.finished(done, true),
                        _ = ready.notified() => {}
                    }
                }
            }
        }
    }

    /// Begins a message taken from the partition and starts it, or queues it behind its key.
    fn take(&mut self, message: Message) {
        let offset = message.offset();
        self.shared.track(|o| o.begin(offset));
        let lane = self.lanes.lane(message.key());
        if let Some(message) = self.lanes.admit(&lane, message) {
            self.start(lane, message);
        }
    }

    fn start(&mut self, lane: LaneKey, message: Message) {
        self.shared.busy.store(true, Ordering::Relaxed);
        let deps = self.deps.clone();
        let shared = self.shared.clone();
        let slots = self.deferrals.slots().clone();
        self.running.spawn(
            async move {
                let launch = process(&deps, &shared, &slots, &message).await;
                (lane, launch)
            }
            .in_current_span(),
        );
    }

    /// A message's task ended: its deferred tasks start, and so does the next message of
    /// its key (unless the partition is stopping).
    fn finished(&mut self, done: Result<Finished, tokio::task::JoinError>, go_on: bool) {
        let (lane, launch) = match done {
            Ok(done) => done,
            Err(e) => {
                // The kernel's panics are caught; this is the runtime's own failure, and the
                // message would never be settled.
                self.deps.fatal.raise(format!(
                    "a message task of {}[{}] failed: {e}",
                    self.shared.topic, self.shared.partition
                ));
                return;
            }
        };
        if let Some(launch) = launch {
            launch.start(self.deps, self.shared, self.deferrals);
        }
        if let Some(next) = self.lanes.done(&lane) {
            if go_on {
                self.start(lane, next);
            } else {
                self.shared.track(|o| o.abandon(next.offset()));
            }
        }
        if self.lanes.running() == 0 {
            self.shared.busy.store(false, Ordering::Relaxed);
        }
    }
}

/// One message, begun in the tracker when it was taken: decided, then settled (or given up
/// if the partition stopped first).
async fn process<K: Kernel>(
    deps: &WorkerDeps<K>,
    shared: &Arc<PartitionShared>,
    slots: &DeferralSlots,
    message: &Message,
) -> Option<Launch> {
    let offset = message.offset();
    let started = Instant::now();
    let (decision, trace) = decide_message(deps, shared, message, false).await;
    let Some(decision) = decision else {
        // Stopped while waiting to retry.
        shared.track(|o| o.abandon(offset));
        return None;
    };
    shared
        .counters
        .observe(message.timestamp_ms(), started.elapsed(), system_epoch_ms());
    settle(
        deps,
        shared,
        slots,
        message,
        decision,
        trace,
        Tracking::Begun,
    )
    .await
    .ok()
    .flatten()
}
