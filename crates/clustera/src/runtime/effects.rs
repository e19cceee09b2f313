//! Carries out a decided message's effects: its records (outputs, dead letters) tracked and
//! sent, its deferred tasks started and, when they finish, theirs.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::decide::{self, decide, Attempt, Final};
use super::deferred::{DeferralSlots, Deferrals, Slots};
use super::deps::WorkerDeps;
use super::partition::{PartitionCounters, PartitionShared};
use super::producer::{DeliveryToken, RecordKind, RetainedInput};
use super::trace::{TraceParent, TRACEPARENT, TRACESTATE};
use crate::context::{
    DeadLetterPart, DeferredContext, DeferredTask, Effects, Record, RecordStream,
};
use crate::kernel::Kernel;
use crate::message::Message;

/// How a decided message enters the offset tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tracking {
    /// Begun and finished in one step (the sequential path: nothing later was taken).
    Now,
    /// Begun when it was taken (concurrent processing); finished here.
    Begun,
}

/// The partition stopped while a message's effects had to wait: it is not committed, and
/// whoever reads the partition next processes it again.
#[derive(Debug)]
pub(crate) struct Stopped;

/// A settled message's deferred tasks, ready to start.
pub(crate) struct Launch {
    tasks: Vec<DeferredTask>,
    slots: Slots,
    message: Arc<Message>,
    trace: Option<TraceParent>,
}

impl Launch {
    /// Starts the tasks in `deferrals`.
    pub(crate) fn start<K: Kernel>(
        self,
        deps: &WorkerDeps<K>,
        shared: &Arc<PartitionShared>,
        deferrals: &mut Deferrals,
    ) {
        for (i, task) in (1u64..).zip(self.tasks) {
            let run = DeferredRun {
                deps: deps.clone(),
                shared: shared.clone(),
                message: self.message.clone(),
                trace: self.trace,
                // Each task's records are numbered apart from the message's own.
                seq_base: i << 32,
                _slots: self.slots.clone(),
            };
            deferrals.spawn(run.run(task));
        }
    }
}

/// Counts a final outcome, then tracks and carries out its effects: records sent, the dead
/// letter, deferred tasks reserved (the caller starts them). `Err(Stopped)` if the partition
/// stopped while this had to wait for room.
pub(crate) async fn settle<K: Kernel>(
    deps: &WorkerDeps<K>,
    shared: &Arc<PartitionShared>,
    slots: &DeferralSlots,
    message: &Message,
    decision: Final,
    trace: Option<TraceParent>,
    tracking: Tracking,
) -> Result<Option<Launch>, Stopped> {
    let offset = message.offset();
    let result = async {
        // Under exactly-once, a message's records and its offset go into one transaction: the
        // guard keeps a commit from starting between them.
        let _transaction = match &deps.transactions {
            None => None,
            Some(t) => Some(t.enter(&shared.stop).await.ok_or(Stopped)?),
        };
        let counters = &shared.counters;
        let (effects, attempts) = match decision {
            Final::Done { effects, attempts } => {
                crate::infra::bump(&counters.acked);
                (effects, attempts)
            }
            Final::Skipped(reason) => {
                crate::infra::bump(&counters.skipped);
                tracing::warn!(offset, %reason, "message skipped");
                (Effects::default(), 0)
            }
            Final::DeadLetter { reason, attempts } => {
                crate::infra::bump(&counters.dead_lettered);
                let effects = Effects {
                    dead_letters: vec![DeadLetterPart {
                        reason,
                        headers: Vec::new(),
                    }],
                    ..Effects::default()
                };
                (effects, attempts)
            }
        };
        let tasks = effects.deferred.len();
        if let (true, Some(txn)) = (tasks > 0, &deps.transactions) {
            // A task's records would land in whatever transaction is open when it sends them,
            // not in the one that commits its message's offset. Nothing after this message
            // may commit either: the transaction is doomed and the partition stopped.
            txn.doom();
            shared.stop.cancel();
            deps.fatal.raise(
                "Context::defer cannot be used with CLUSTERA_GUARANTEE=exactly-once: a deferred \
                 task's records cannot join its message's transaction; use at-least-once for this \
                 kernel"
                    .to_owned(),
            );
            return Err(Stopped);
        }
        let reserved = if tasks > 0 {
            Some(slots.reserve(tasks, &shared.stop).await.ok_or(Stopped)?)
        } else {
            None
        };
        // The input is kept while its outputs are in flight, to dead-letter it if one is
        // refused; it waits while the budget's share for such inputs is spent.
        let input = if effects.outputs.is_empty() {
            None
        } else {
            let budget = retain(deps, message, &shared.stop).await.ok_or(Stopped)?;
            Some(Arc::new(RetainedInput {
                message: message.clone(),
                _budget: budget,
            }))
        };
        let records = Prepared {
            message,
            input: input.as_ref(),
            attempts,
            trace: trace.as_ref(),
        }
        .records(deps, counters, effects.outputs, &effects.dead_letters);
        let count = u32::try_from(records.len() + tasks).unwrap_or(u32::MAX);
        // Registered before sending, so no acknowledgement can arrive before it is expected.
        match tracking {
            Tracking::Now => shared.track(|o| o.finished_with(offset, count)),
            Tracking::Begun => shared.track(|o| o.complete(offset, count)),
        }
        send(deps, shared, offset, records, 0).await;
        // The tasks' copy of the input is bounded by their number, not the budget: a task that
        // waits out an outage must not hold every partition's outputs back.
        Ok(reserved.map(|slots| Launch {
            tasks: effects.deferred,
            slots,
            message: Arc::new(message.clone()),
            trace,
        }))
    }
    .await;
    if result.is_err() && tracking == Tracking::Begun {
        shared.track(|o| o.abandon(offset));
    }
    result
}

/// One deferred task of one message, run next to the partition's worker.
struct DeferredRun<K> {
    deps: WorkerDeps<K>,
    shared: Arc<PartitionShared>,
    message: Arc<Message>,
    trace: Option<TraceParent>,
    /// Where this task's records start among the message's, for ordered resends.
    seq_base: u64,
    _slots: Slots,
}

impl<K: Kernel> DeferredRun<K> {
    /// Runs the task. A panic of the runtime's own code here (the kernel's are caught in
    /// `decide`) would leave the message unsettled for good: it is given up, and the process
    /// stops, as when a worker dies.
    async fn run(self, task: DeferredTask) {
        let (shared, fatal) = (self.shared.clone(), self.deps.fatal.clone());
        let offset = self.message.offset();
        if let Err(panic) = decide::attempt(|| self.run_task(task)).await {
            shared.track(|o| o.abandon(offset));
            fatal.raise(format!(
                "a deferred task of {}[{}] offset {offset} failed: {}",
                shared.topic,
                shared.partition,
                decide::panic_text(&panic)
            ));
        }
    }

    async fn run_task(self, task: DeferredTask) {
        let (deps, shared) = (&self.deps, &self.shared);
        let message = &*self.message;
        let offset = message.offset();
        let stream = Arc::new(TaskStream {
            producer: deps.producer.clone(),
            shared: shared.clone(),
            input: Arc::new(RetainedInput {
                message: message.clone(),
                // Held by the task anyway; bounded by the number of tasks.
                _budget: None,
            }),
            trace: self.trace,
            open: AtomicBool::new(true),
            next_seq: AtomicU64::new(self.seq_base + STREAMED_SEQ),
        });
        let call = |attempt, last| {
            let stream: Arc<dyn RecordStream> = stream.clone();
            let ctx = DeferredContext::new(
                deps.kernel_name.clone(),
                attempt,
                shared.stop.clone(),
                Some(stream),
            )
            .with_last_attempt(last);
            let task = &task;
            async move {
                let result = decide::attempt(|| task(ctx.clone())).await;
                Attempt {
                    result,
                    effects: ctx.take_effects(),
                }
            }
        };
        let decision = decide(deps, shared, offset, false, call).await;
        // Records produced at once are all tracked by now; no more may come.
        stream.open.store(false, Ordering::SeqCst);
        let Some(decision) = decision else {
            // Stopped while waiting to retry: the message is never committed; redelivered.
            shared.track(|o| o.abandon(offset));
            return;
        };
        let (outputs, letters, attempts) = match decision {
            Final::Done { effects, attempts } => (effects.outputs, effects.dead_letters, attempts),
            Final::Skipped(reason) => {
                tracing::warn!(offset, %reason, "deferred task skipped");
                (Vec::new(), Vec::new(), 0)
            }
            Final::DeadLetter { reason, attempts } => (
                Vec::new(),
                vec![DeadLetterPart {
                    reason,
                    headers: Vec::new(),
                }],
                attempts,
            ),
        };
        let input = if outputs.is_empty() {
            None
        } else {
            match retain(deps, message, &shared.stop).await {
                Some(budget) => Some(Arc::new(RetainedInput {
                    message: message.clone(),
                    _budget: budget,
                })),
                None => {
                    shared.track(|o| o.abandon(offset));
                    return;
                }
            }
        };
        let records = Prepared {
            message,
            input: input.as_ref(),
            attempts,
            trace: self.trace.as_ref(),
        }
        .records(deps, &shared.counters, outputs, &letters);
        let count = u32::try_from(records.len()).unwrap_or(u32::MAX);
        // The task's own unit is settled only after its records are expected.
        shared.track(|o| {
            o.add_unacked(offset, count)?;
            o.ack(offset)
        });
        send(deps, shared, offset, records, self.seq_base).await;
    }
}

/// Where a task's records produced at once are numbered from, after its collected ones.
const STREAMED_SEQ: u64 = 1 << 31;

/// The runtime's [`RecordStream`]: one deferred task's records produced at once, each tracked
/// on the task's message before it is sent.
struct TaskStream {
    producer: Arc<super::producer::OutputProducer>,
    shared: Arc<PartitionShared>,
    input: Arc<RetainedInput>,
    trace: Option<TraceParent>,
    /// Cleared when the task's attempts are over.
    open: AtomicBool,
    next_seq: AtomicU64,
}

impl RecordStream for TaskStream {
    fn send(
        &self,
        record: Record,
    ) -> Pin<Box<dyn Future<Output = Result<(), crate::context::TaskEnded>> + Send + '_>> {
        Box::pin(async move {
            let message = &self.input.message;
            let offset = message.offset();
            if !self.open.load(Ordering::SeqCst) {
                return Err(crate::context::TaskEnded);
            }
            // The task's own unit is unsettled while it runs, so the message cannot be done
            // and this cannot fail; expected before it is sent, as every record is.
            let mut tracked = false;
            self.shared.track(|o| {
                o.add_unacked(offset, 1)?;
                tracked = true;
                Ok(())
            });
            if !tracked {
                return Err(crate::context::TaskEnded);
            }
            let record = match &self.trace {
                Some(t) => with_trace(record, t, message.header(TRACESTATE)),
                None => record,
            };
            let token = Box::new(DeliveryToken {
                partition: self.shared.clone(),
                offset,
                seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
                pinned_partition: record.partition,
                kind: RecordKind::Output {
                    input: self.input.clone(),
                    attempts: 1,
                },
                unexplained_failures: 0,
            });
            self.producer.send(&record, token).await;
            Ok(())
        })
    }
}

/// What a message's records are built from.
struct Prepared<'a> {
    message: &'a Message,
    /// Kept for outputs, to dead-letter the message if one is refused.
    input: Option<&'a Arc<RetainedInput>>,
    attempts: u32,
    trace: Option<&'a TraceParent>,
}

impl Prepared<'_> {
    /// The records to send: outputs continuing the message's trace, then one dead letter per
    /// reason.
    fn records<K>(
        &self,
        deps: &WorkerDeps<K>,
        counters: &PartitionCounters,
        outputs: Vec<Record>,
        dead_letters: &[DeadLetterPart],
    ) -> Vec<(Record, RecordKind)> {
        let message = self.message;
        let mut records: Vec<(Record, RecordKind)> = outputs
            .into_iter()
            .map(|r| {
                let r = match self.trace {
                    Some(t) => with_trace(r, t, message.header(TRACESTATE)),
                    None => r,
                };
                let kind = match self.input {
                    Some(input) => RecordKind::Output {
                        input: input.clone(),
                        attempts: self.attempts,
                    },
                    // Not reached: an input is kept whenever there are outputs.
                    None => RecordKind::DeadLetter,
                };
                (r, kind)
            })
            .collect();
        for DeadLetterPart { reason, headers } in dead_letters {
            crate::infra::bump(&counters.letters);
            let letter =
                deps.producer
                    .dead_letters()
                    .record_with(message, reason, self.attempts, headers);
            tracing::error!(offset = message.offset(), %reason, attempts = self.attempts,
                dead_letter_topic = %letter.topic, "message dead-lettered");
            records.push((letter, RecordKind::DeadLetter));
        }
        records
    }
}

/// Sends records of the message at `offset`, numbered from `seq_base` for ordered resends.
async fn send<K>(
    deps: &WorkerDeps<K>,
    shared: &Arc<PartitionShared>,
    offset: i64,
    records: Vec<(Record, RecordKind)>,
    seq_base: u64,
) {
    for (seq, (record, kind)) in (seq_base..).zip(records) {
        let token = Box::new(DeliveryToken {
            partition: shared.clone(),
            offset,
            seq,
            pinned_partition: record.partition,
            kind,
            unexplained_failures: 0,
        });
        deps.producer.send(&record, token).await;
    }
}

/// Takes `message`'s size (in KiB, at most the whole share) from the retained-input budget:
/// `Some(None)` without a budget, `None` if the partition stopped while this had to wait.
async fn retain<K>(
    deps: &WorkerDeps<K>,
    message: &Message,
    stop: &CancellationToken,
) -> Option<Option<tokio::sync::OwnedSemaphorePermit>> {
    let Some((budget, total)) = deps.retained.as_ref() else {
        return Some(None);
    };
    let size = message.key().map_or(0, <[u8]>::len) + message.value().map_or(0, <[u8]>::len);
    // An input larger than the whole share takes all of it, rather than waiting forever.
    let kib = u32::try_from(size / 1024 + 1)
        .unwrap_or(u32::MAX)
        .min(*total);
    if let Ok(permit) = budget.clone().try_acquire_many_owned(kib) {
        return Some(Some(permit));
    }
    tokio::select! {
        biased;
        _ = stop.cancelled() => None,
        permit = budget.clone().acquire_many_owned(kib) => Some(permit.ok()),
    }
}

/// Sets the record's `traceparent` to this message's span (replacing any the kernel set) and
/// copies the input's `tracestate`.
fn with_trace(mut record: Record, trace: &TraceParent, state: Option<&[u8]>) -> Record {
    record
        .headers
        .retain(|h| h.name != TRACEPARENT && (state.is_none() || h.name != TRACESTATE));
    record = record.header(TRACEPARENT, trace.to_header());
    if let Some(state) = state {
        record = record.header(TRACESTATE, state.to_vec());
    }
    record
}
