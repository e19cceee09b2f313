//! One partition's worker: takes its messages strictly in order, runs the kernel with retries,
//! sends outputs or the dead letter, and marks each message finished in the offset tracker.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::consumer::KernelConsumerContext;
use super::fatal::Fatal;
use super::partition::{PartitionCounters, PartitionShared};
use super::partition_queue::{Owner, Polled, SharedQueue};
use super::producer::{DeliveryToken, OutputProducer, RecordKind, RetainedInput};
use super::retry::RetryPolicy;
use super::stats::RuntimeStats;
use super::trace::{to_hex, TraceParent, TRACEPARENT, TRACESTATE};
use crate::config::RuntimeSettings;
use crate::context::{Context, Record};
use crate::kernel::{Kernel, Outcome};
use crate::message::Message;
use crate::telemetry::{continue_trace, Telemetry};

/// What every partition worker shares.
pub(crate) struct WorkerDeps<K> {
    pub kernel: Arc<K>,
    pub producer: Arc<OutputProducer>,
    pub settings: Arc<RuntimeSettings>,
    pub retry: RetryPolicy,
    pub group_id: Arc<str>,
    pub kernel_name: Arc<str>,
    pub stats: Arc<RuntimeStats>,
    pub telemetry: Arc<Telemetry>,
    /// Most messages per `process_batch` call; 1 never batches.
    pub batch: usize,
    /// Raised when the process cannot go on.
    pub fatal: Arc<Fatal>,
    /// The memory budget's share for inputs kept while their outputs are in flight, in KiB
    /// permits, and how many permits it holds; `None` without a budget.
    pub retained: Option<(Arc<tokio::sync::Semaphore>, u32)>,
}

impl<K> Clone for WorkerDeps<K> {
    fn clone(&self) -> Self {
        Self {
            kernel: self.kernel.clone(),
            producer: self.producer.clone(),
            settings: self.settings.clone(),
            retry: self.retry,
            group_id: self.group_id.clone(),
            kernel_name: self.kernel_name.clone(),
            stats: self.stats.clone(),
            telemetry: self.telemetry.clone(),
            batch: self.batch,
            fatal: self.fatal.clone(),
            retained: self.retained.clone(),
        }
    }
}

/// A partition's queue, as the workers read it.
pub(crate) type KernelQueue<K> = SharedQueue<KernelConsumerContext<K>>;

/// Where one partition's messages come from.
pub(crate) struct PartitionSource<K: Kernel> {
    /// The partition's own librdkafka queue, read while `owner` owns it.
    pub queue: Arc<KernelQueue<K>>,
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

/// Runs until the partition is stopped: first the residual messages, then the partition queue.
pub(crate) async fn run_partition<K: Kernel>(
    deps: WorkerDeps<K>,
    shared: Arc<PartitionShared>,
    source: PartitionSource<K>,
) {
    let span = tracing::info_span!("partition", kernel = %deps.kernel_name,
        topic = %shared.topic, partition = shared.partition);
    let PartitionSource {
        queue,
        owner,
        ready,
        mut residual,
        released,
    } = source;
    async move {
        let clock = &mut WallClock::new();
        // Residual messages come first, until the poll thread has seen the main queue empty.
        loop {
            tokio::select! {
                biased;
                _ = shared.stop.cancelled() => return,
                m = residual.recv() => match m {
                    Some(m) => process_message(&deps, &shared, clock, &m).await,
                    None => return,
                },
                _ = released.cancelled() => break,
            }
        }
        while let Ok(m) = residual.try_recv() {
            if shared.stop.is_cancelled() {
                return;
            }
            process_message(&deps, &shared, clock, &m).await;
        }
        loop {
            if shared.stop.is_cancelled() {
                return;
            }
            // A worker with a backlog would otherwise never return Pending (a ready kernel
            // future, an accepted send), starving timers, retries, /healthz and signals on its
            // thread.
            tokio::task::coop::consume_budget().await;
            shared.holding.store(true, Ordering::SeqCst);
            let message = match queue.poll(owner, &shared.topic) {
                Polled::Message(m) => m,
                Polled::Error(e) => {
                    tracing::warn!(error = %e, "partition queue error");
                    continue;
                }
                Polled::Superseded => return,
                Polled::Empty => {
                    // Everything taken so far is finished (the worker is sequential).
                    shared.holding.store(false, Ordering::SeqCst);
                    tokio::select! {
                        biased;
                        _ = shared.stop.cancelled() => return,
                        _ = ready.notified() => continue,
                    }
                }
            };
            if deps.batch == 1 {
                process_message(&deps, &shared, clock, &message).await;
                continue;
            }
            // Only what is already fetched joins the batch: batching never adds latency.
            let mut batch = vec![message];
            while batch.len() < deps.batch {
                match queue.poll(owner, &shared.topic) {
                    Polled::Message(m) => batch.push(m),
                    Polled::Error(e) => tracing::warn!(error = %e, "partition queue error"),
                    Polled::Empty | Polled::Superseded => break,
                }
            }
            process_batch(&deps, &shared, clock, &batch).await;
        }
    }
    .instrument(span)
    .await
}

/// The final word on one message after retries.
enum Final {
    Outputs { records: Vec<Record>, attempts: u32 },
    Skipped(String),
    DeadLetter { reason: String, attempts: u32 },
}

async fn process_message<K: Kernel>(
    deps: &WorkerDeps<K>,
    shared: &Arc<PartitionShared>,
    clock: &mut WallClock,
    message: &Message,
) {
    let offset = message.offset();
    let started = Instant::now();
    shared.busy.store(true, Ordering::Relaxed);
    // A message that carries a trace is processed in a span continuing it.
    // When spans are exported, the outputs carry the exported span's id; otherwise a new one.
    let parent = message
        .header(TRACEPARENT)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(TraceParent::parse);
    let (decision, trace) = match parent {
        None => (decide(deps, shared, message).await, None),
        Some(parent) => {
            let span = tracing::info_span!("message", offset, trace_id = %parent.trace_id_hex(),
                parent_span_id = %to_hex(&parent.parent_id));
            let span_id = continue_trace(&span, &parent).unwrap_or_else(rand::random);
            let trace = parent.child(span_id);
            (
                decide(deps, shared, message).instrument(span).await,
                Some(trace),
            )
        }
    };
    shared.busy.store(false, Ordering::Relaxed);
    let Some(decision) = decision else {
        // Stopped while waiting to retry: never tracked, so never committed; redelivered.
        return;
    };
    let finished = Instant::now();
    finish(
        deps,
        shared,
        clock.epoch_ms(finished),
        finished - started,
        message,
        decision,
        trace,
    )
    .await;
}

/// Several messages through `Kernel::process_batch`; those without a final outcome there go
/// through the one-message path, in order.
async fn process_batch<K: Kernel>(
    deps: &WorkerDeps<K>,
    shared: &Arc<PartitionShared>,
    clock: &mut WallClock,
    messages: &[Message],
) {
    let started = Instant::now();
    shared.busy.store(true, Ordering::Relaxed);
    let mut contexts: Vec<Context> = messages
        .iter()
        .map(|_| Context::new(deps.kernel_name.clone(), 1))
        .collect();
    // Inside the async block, so a panic before the kernel's first `.await` (or in a
    // hand-written `process_batch` that panics before returning its future) is caught too.
    let results =
        AssertUnwindSafe(async { deps.kernel.process_batch(messages, &mut contexts).await })
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                deps.telemetry.metrics.error("panic");
                tracing::error!(batch = messages.len(), panic = %panic_text(&panic),
                "kernel panicked in a batch; processing its messages one by one");
                Vec::new()
            });
    shared.busy.store(false, Ordering::Relaxed);
    let finished = Instant::now();
    let now_ms = clock.epoch_ms(finished);
    // Each message is charged its share of the batch.
    let share = (finished - started) / u32::try_from(messages.len()).unwrap_or(u32::MAX).max(1);
    let mut done = 0;
    for ((message, mut ctx), result) in messages.iter().zip(contexts).zip(results) {
        let decision = match result {
            Ok(Outcome::Ack) => Final::Outputs {
                records: ctx.take_outputs(),
                attempts: 1,
            },
            Ok(Outcome::Skip(reason)) => Final::Skipped(reason),
            Ok(Outcome::DeadLetter(reason)) => Final::DeadLetter {
                reason,
                attempts: 1,
            },
            Ok(Outcome::Retry(_)) => break,
            Err(e) if e.kind() == crate::kernel::ErrorKind::Transient => break,
            Err(e) => {
                deps.telemetry.metrics.error("permanent");
                Final::DeadLetter {
                    reason: crate::kernel::error_chain(&e),
                    attempts: 1,
                }
            }
        };
        // Batched messages are not processed in a span of their own; their outputs still
        // continue the input's trace.
        let trace = message
            .header(TRACEPARENT)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(TraceParent::parse)
            .map(|parent| parent.child(rand::random()));
        finish(deps, shared, now_ms, share, message, decision, trace).await;
        done += 1;
    }
    for message in &messages[done..] {
        if shared.stop.is_cancelled() {
            return;
        }
        process_message(deps, shared, clock, message).await;
    }
}

/// Counts a final outcome, then tracks and sends its records (outputs or the dead letter).
async fn finish<K: Kernel>(
    deps: &WorkerDeps<K>,
    shared: &Arc<PartitionShared>,
    now_ms: i64,
    processing: Duration,
    message: &Message,
    decision: Final,
    trace: Option<TraceParent>,
) {
    let offset = message.offset();
    let counters = &shared.counters;
    counters.processing.observe(processing);
    if let Some(ts) = message.timestamp_ms() {
        if let Ok(ms) = u64::try_from(now_ms - ts) {
            counters.end_to_end.observe(Duration::from_millis(ms));
        }
    }
    let mut input = None;
    let (records, attempts) = match decision {
        Final::Outputs { records, attempts } => {
            PartitionCounters::bump(&counters.acked);
            if !records.is_empty() {
                // Kept while its outputs are in flight, to dead-letter it if one is refused;
                // waits while the budget's share for such inputs is spent.
                input = Some(Arc::new(RetainedInput {
                    message: message.clone(),
                    _budget: retain(deps, message).await,
                }));
            }
            (records, attempts)
        }
        Final::Skipped(reason) => {
            PartitionCounters::bump(&counters.skipped);
            tracing::warn!(offset, %reason, "message skipped");
            (Vec::new(), 0)
        }
        Final::DeadLetter { reason, attempts } => {
            PartitionCounters::bump(&counters.dead_lettered);
            let letter = deps
                .producer
                .dead_letters()
                .record(message, &reason, attempts);
            tracing::error!(offset, %reason, attempts, dead_letter_topic = %letter.topic,
                "message dead-lettered");
            (vec![letter], attempts)
        }
    };
    // Registered before sending, so no acknowledgement can arrive before it is expected.
    let records = match &trace {
        Some(t) => records
            .into_iter()
            .map(|r| with_trace(r, t, message.header(TRACESTATE)))
            .collect(),
        None => records,
    };
    let count = u32::try_from(records.len()).unwrap_or(u32::MAX);
    shared.track(|o| o.finished_with(offset, count));
    for (seq, record) in (0u32..).zip(&records) {
        let kind = match &input {
            Some(input) => RecordKind::Output {
                input: input.clone(),
                attempts,
            },
            None => RecordKind::DeadLetter,
        };
        let token = Box::new(DeliveryToken {
            partition: shared.clone(),
            offset,
            seq,
            pinned_partition: record.partition,
            kind,
            unexplained_failures: 0,
        });
        deps.producer.send(record, token).await;
    }
}

/// Takes `message`'s size (in KiB, at most the whole share) from the retained-input budget.
async fn retain<K>(
    deps: &WorkerDeps<K>,
    message: &Message,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let (budget, total) = deps.retained.as_ref()?;
    let size = message.key().map_or(0, <[u8]>::len) + message.value().map_or(0, <[u8]>::len);
    // An input larger than the whole share takes all of it, rather than waiting forever.
    let kib = u32::try_from(size / 1024 + 1)
        .unwrap_or(u32::MAX)
        .min(*total);
    budget.clone().acquire_many_owned(kib).await.ok()
}

/// Runs the kernel until its outcome is final. `None` if the partition was stopped meanwhile.
async fn decide<K: Kernel>(
    deps: &WorkerDeps<K>,
    shared: &PartitionShared,
    message: &Message,
) -> Option<Final> {
    // Built on the first retry only: most messages never need it.
    let mut delays = None;
    let mut attempt = 1u32;
    loop {
        let mut ctx = Context::new(deps.kernel_name.clone(), attempt);
        // Inside the async block, so a panic before the kernel's first `.await` (or in a
        // hand-written `process` that panics before returning its future) is caught too.
        let result = AssertUnwindSafe(async { deps.kernel.process(message, &mut ctx).await })
            .catch_unwind()
            .await;
        let (outcome, error) = match result {
            Ok(Ok(outcome)) => (outcome, None),
            Ok(Err(e)) => {
                deps.telemetry.metrics.error(match e.kind() {
                    crate::kernel::ErrorKind::Transient => "transient",
                    crate::kernel::ErrorKind::Permanent => "permanent",
                });
                let text = crate::kernel::error_chain(&e);
                (e.into_outcome(), Some(text))
            }
            Err(panic) => {
                deps.telemetry.metrics.error("panic");
                let text = panic_text(&panic);
                tracing::error!(offset = message.offset(), panic = %text, "kernel panicked");
                (
                    Outcome::DeadLetter(format!("kernel panicked: {text}")),
                    None,
                )
            }
        };
        match outcome {
            Outcome::Ack => {
                return Some(Final::Outputs {
                    records: ctx.take_outputs(),
                    attempts: attempt,
                })
            }
            Outcome::Skip(reason) => return Some(Final::Skipped(reason)),
            Outcome::DeadLetter(reason) => {
                return Some(Final::DeadLetter {
                    reason,
                    attempts: attempt,
                })
            }
            Outcome::Retry(delay) => {
                PartitionCounters::bump(&shared.counters.retries);
                let why = error.unwrap_or_else(|| "the kernel asked to retry".to_owned());
                if deps.retry.exhausted(attempt) {
                    return Some(Final::DeadLetter {
                        reason: format!("gave up after {attempt} attempts: {why}"),
                        attempts: attempt,
                    });
                }
                let delay = delay
                    .or_else(|| delays.get_or_insert_with(|| deps.retry.delays()).next())
                    .unwrap_or(deps.settings.retry_max_delay);
                tracing::warn!(offset = message.offset(), attempt, delay_ms = delay.as_millis() as u64,
                    reason = %why, "retrying message");
                shared.retrying.store(true, Ordering::Relaxed);
                let stopped = tokio::select! {
                    biased;
                    _ = shared.stop.cancelled() => true,
                    _ = tokio::time::sleep(delay) => false,
                };
                shared.retrying.store(false, Ordering::Relaxed);
                if stopped {
                    return None;
                }
                attempt += 1;
            }
        }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
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

/// Wall-clock milliseconds from a monotonic instant, for end-to-end latency without a system
/// clock read per message. Re-anchored every ten seconds so clock adjustments are followed.
struct WallClock {
    anchor: Instant,
    anchor_epoch_ms: i64,
}

impl WallClock {
    fn new() -> Self {
        Self {
            anchor: Instant::now(),
            anchor_epoch_ms: system_epoch_ms(),
        }
    }

    fn epoch_ms(&mut self, at: Instant) -> i64 {
        let since = at.saturating_duration_since(self.anchor);
        if since > Duration::from_secs(10) {
            *self = Self::new();
            return self.anchor_epoch_ms;
        }
        self.anchor_epoch_ms + i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    }
}

fn system_epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
