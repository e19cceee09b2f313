//! One partition's worker: takes its messages strictly in order, runs the kernel with retries,
//! sends outputs or the dead letter, and marks each message finished in the offset tracker.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::clock::WallClock;
use super::concurrent;
use super::decide::{self, decide_message, Final};
use super::deferred::Deferrals;
pub(crate) use super::deps::WorkerDeps;
use super::effects::{settle, Stopped, Tracking};
use super::lanes::ProcessingOrder;
use super::partition::PartitionShared;
use super::partition_queue::{Owner, Polled, SharedQueue};
use super::trace::TraceParent;
use crate::context::Context;
use crate::kernel::{ErrorKind, Kernel, Outcome};
use crate::message::Message;

/// Where one partition's messages come from.
pub(crate) struct PartitionSource {
    /// The partition's own librdkafka queue, read while `owner` owns it.
    pub queue: Arc<SharedQueue>,
    pub owner: Owner,
    /// Notified by librdkafka's thread whenever the queue receives messages. A permit is
    /// stored if nobody waits, so no wake-up is lost between a poll and the wait.
    pub ready: Arc<Notify>,
    /// Messages of the partition that reached the main queue before the split; older than
    /// anything in `queue`.
    pub residual: mpsc::UnboundedReceiver<Message>,
    /// Cancelled once no residual message can arrive any more.
    pub released: CancellationToken,
}

/// Runs until the partition is stopped: first the residual messages, then the partition
/// queue; then waits for the partition's deferred tasks.
pub(crate) async fn run_partition<K: Kernel>(
    deps: WorkerDeps<K>,
    shared: Arc<PartitionShared>,
    source: PartitionSource,
) {
    let span = tracing::info_span!("partition", kernel = %deps.kernel_name,
        topic = %shared.topic, partition = shared.partition);
    async move {
        let mut worker = Worker {
            deferrals: Deferrals::new(deps.settings.max_deferred),
            deps,
            shared,
            clock: WallClock::new(),
        };
        worker.read(source).await;
        worker.deferrals.drain().await;
    }
    .instrument(span)
    .await
}

/// One partition's worker.
struct Worker<K> {
    deps: WorkerDeps<K>,
    shared: Arc<PartitionShared>,
    clock: WallClock,
    deferrals: Deferrals,
}

impl<K: Kernel> Worker<K> {
    /// Takes the partition's messages in order until it is stopped.
    async fn read(&mut self, source: PartitionSource) {
        let PartitionSource {
            queue,
            owner,
            ready,
            mut residual,
            released,
        } = source;
        let stop = self.shared.stop.clone();
        // Residual messages come first, until the poll thread has seen the main queue empty.
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                m = residual.recv() => match m {
                    Some(m) => self.process_message(&m).await,
                    None => return,
                },
                _ = released.cancelled() => break,
            }
        }
        while let Ok(m) = residual.try_recv() {
            if stop.is_cancelled() {
                return;
            }
            self.process_message(&m).await;
        }
        let ordering = self.deps.settings.ordering;
        if ordering != ProcessingOrder::Partition {
            let source = (&*queue, owner, &*ready);
            concurrent::read(
                &self.deps,
                &self.shared,
                &mut self.deferrals,
                source,
                ordering,
            )
            .await;
            return;
        }
        let topic = self.shared.topic.clone();
        loop {
            if stop.is_cancelled() {
                return;
            }
            // A worker with a backlog would otherwise never return Pending (a ready kernel
            // future, an accepted send), starving timers, retries, /healthz and signals on its
            // thread.
            tokio::task::coop::consume_budget().await;
            self.shared.holding.store(true, Ordering::SeqCst);
            let message = match queue.poll(owner, &topic) {
                Polled::Message(m) => m,
                Polled::Error(e) => {
                    tracing::warn!(error = %e, "partition queue error");
                    continue;
                }
                Polled::Superseded => return,
                Polled::Empty => {
                    // Everything taken so far is finished (the worker is sequential).
                    self.shared.holding.store(false, Ordering::SeqCst);
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => return,
                        _ = ready.notified() => continue,
                    }
                }
            };
            if self.deps.batch == 1 {
                self.process_message(&message).await;
                continue;
            }
            // Only what is already fetched joins the batch: batching never adds latency.
            let mut batch = vec![message];
            while batch.len() < self.deps.batch {
                match queue.poll(owner, &topic) {
                    Polled::Message(m) => batch.push(m),
                    Polled::Error(e) => tracing::warn!(error = %e, "partition queue error"),
                    Polled::Empty | Polled::Superseded => break,
                }
            }
            self.process_batch(&batch).await;
        }
    }

    async fn process_message(&mut self, message: &Message) {
        self.shared.taken(message.offset());
        if let Some(reason) = self.refusal(message) {
            tracing::warn!(offset = message.offset(), %reason,
                "an output of this input was refused in an aborted transaction; dead-lettering it");
            self.finish(
                message,
                Final::DeadLetter {
                    reason,
                    attempts: 1,
                },
                None,
            )
            .await;
            return;
        }
        let started = Instant::now();
        self.shared.busy.store(true, Ordering::Relaxed);
        let (decision, trace) = decide_message(&self.deps, &self.shared, message, true).await;
        self.shared.busy.store(false, Ordering::Relaxed);
        let Some(decision) = decision else {
            // Stopped while waiting to retry: never tracked, so never committed; redelivered.
            return;
        };
        let finished = Instant::now();
        self.observe(message, finished - started, finished);
        self.finish(message, decision, trace).await;
    }

    /// Several messages through `Kernel::process_batch`; those without a final outcome there
    /// go through the one-message path, in order.
    async fn process_batch(&mut self, messages: &[Message]) {
        if messages.iter().any(|m| self.refusal(m).is_some()) {
            for message in messages {
                if self.shared.stop.is_cancelled() {
                    return;
                }
                self.process_message(message).await;
            }
            return;
        }
        if let Some(first) = messages.first() {
            self.shared.taken(first.offset());
        }
        let started = Instant::now();
        let deps = &self.deps;
        self.shared.busy.store(true, Ordering::Relaxed);
        let mut contexts: Vec<Context> = messages
            .iter()
            .map(|_| Context::new(deps.kernel_name.clone(), 1))
            .collect();
        // A panic of the whole batch leaves every message to the one-message path.
        let results = decide::attempt(|| deps.kernel.process_batch(messages, &mut contexts))
            .await
            .unwrap_or_else(|panic| {
                deps.telemetry.metrics.error("panic");
                tracing::error!(batch = messages.len(), panic = %decide::panic_text(&panic),
                "kernel panicked in a batch; processing its messages one by one");
                Vec::new()
            });
        self.shared.busy.store(false, Ordering::Relaxed);
        let finished = Instant::now();
        // Each message is charged its share of the batch.
        let share = (finished - started) / u32::try_from(messages.len()).unwrap_or(u32::MAX).max(1);
        let mut done = 0;
        for ((message, mut ctx), result) in messages.iter().zip(contexts).zip(results) {
            if self.shared.stop.is_cancelled() {
                // Nothing from here on is tracked: it is all read again by the next owner.
                return;
            }
            let retry = match &result {
                Ok(Outcome::Retry(_)) => true,
                Ok(_) => false,
                Err(e) => e.kind() != ErrorKind::Permanent,
            };
            if retry {
                break;
            }
            let decision = match decide::judge(&self.deps, message.offset(), Ok(result)).0 {
                Outcome::Ack => Final::Done {
                    effects: ctx.take_effects(),
                    attempts: 1,
                },
                Outcome::Skip(reason) => Final::Skipped(reason),
                Outcome::DeadLetter(reason) => Final::DeadLetter {
                    reason,
                    attempts: 1,
                },
                Outcome::Retry(_) => break,
            };
            // Batched messages are not processed in a span of their own; their outputs still
            // continue the input's trace.
            let trace = TraceParent::of(message).map(|parent| parent.child(rand::random()));
            self.observe(message, share, finished);
            if !self.finish(message, decision, trace).await {
                // Stopped before it was tracked: neither it nor anything after it may be
                // tracked now, or a commit would pass it.
                return;
            }
            done += 1;
        }
        for message in &messages[done..] {
            if self.shared.stop.is_cancelled() {
                return;
            }
            self.process_message(message).await;
        }
    }

    /// Under exactly-once, why an output of `message` was refused in an aborted transaction.
    fn refusal(&self, message: &Message) -> Option<String> {
        self.deps.transactions.as_ref()?.refusal(
            &self.shared.topic,
            self.shared.partition,
            message.offset(),
        )
    }

    /// Records how long a message took to process, and from its timestamp to now.
    fn observe(&mut self, message: &Message, processing: Duration, finished: Instant) {
        let now_ms = self.clock.epoch_ms(finished);
        self.shared
            .counters
            .observe(message.timestamp_ms(), processing, now_ms);
    }

    /// Tracks and carries out a decided message's effects (see [`settle`]) and starts its
    /// deferred tasks. Returns whether the message was tracked: it is not if the partition
    /// stopped while this waited for room, and is then read again by whoever reads the
    /// partition next.
    async fn finish(
        &mut self,
        message: &Message,
        decision: Final,
        trace: Option<TraceParent>,
    ) -> bool {
        let (deps, shared) = (&self.deps, &self.shared);
        // Messages done behind one that is not (a slow deferred task, an outage) are held
        // until it is: bounded, so they cannot pile up for as long as that lasts.
        if !room_for_one_more(shared, deps.settings.max_uncommitted).await {
            return false;
        }
        let slots = self.deferrals.slots();
        let settled = settle(deps, shared, slots, message, decision, trace, Tracking::Now).await;
        match settled {
            Ok(launch) => {
                if let Some(launch) = launch {
                    launch.start(&self.deps, &self.shared, &mut self.deferrals);
                }
                true
            }
            Err(Stopped) => false,
        }
    }
}

/// Waits while `shared` holds `max` messages taken and not yet done. False if the partition
/// stopped while this had to wait (a message finished during the drain with room to spare
/// is tracked as usual).
async fn room_for_one_more(shared: &PartitionShared, max: usize) -> bool {
    while shared.offsets().in_flight() >= max {
        tokio::select! {
            biased;
            _ = shared.stop.cancelled() => return false,
            _ = tokio::time::sleep(Duration::from_millis(5)) => {}
        }
    }
    true
}
