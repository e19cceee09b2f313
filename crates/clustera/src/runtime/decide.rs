//! Runs one kernel call (`process`, or a deferred task) attempt after attempt until its
//! outcome is final: the retry policy, error classification and panics in one place.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;

use futures::FutureExt;
use tracing::Instrument;

use super::deps::WorkerDeps;
use super::partition::PartitionShared;
use super::trace::{to_hex, TraceParent};
use crate::context::{Context, Effects};
use crate::kernel::{error_chain, ErrorKind, Kernel, KernelError, Outcome};
use crate::message::Message;
use crate::telemetry::continue_trace;

/// The final word on one message (or one deferred task of it) after retries.
pub(crate) enum Final {
    /// Acknowledged: carry out these effects.
    Done {
        effects: Effects,
        attempts: u32,
    },
    Skipped(String),
    DeadLetter {
        reason: String,
        attempts: u32,
    },
}

/// What one attempt returned (or its panic), and the effects it stated.
pub(crate) struct Attempt {
    pub result: std::thread::Result<Result<Outcome, KernelError>>,
    pub effects: Effects,
}

/// Makes the future with `make` and runs it, with panics caught: also a panic while making
/// it (a hand-written `process` that panics before returning its future) or before its first
/// `.await`.
pub(crate) async fn attempt<T, Fut>(make: impl FnOnce() -> Fut) -> std::thread::Result<T>
where
    Fut: Future<Output = T>,
{
    AssertUnwindSafe(async move { make().await })
        .catch_unwind()
        .await
}

/// What an attempt's result means: the outcome, the error's text if there was one, and
/// whether the error says a dependency is down (retried without counting the attempt).
pub(crate) fn judge<K>(
    deps: &WorkerDeps<K>,
    offset: i64,
    result: std::thread::Result<Result<Outcome, KernelError>>,
) -> (Outcome, Option<String>, bool) {
    match result {
        Ok(Ok(outcome)) => (outcome, None, false),
        Ok(Err(e)) => {
            let kind = e.kind();
            deps.telemetry.metrics.error(match kind {
                ErrorKind::Unavailable => "unavailable",
                ErrorKind::Transient => "transient",
                ErrorKind::Permanent => "permanent",
            });
            let text = error_chain(&e);
            (e.into_outcome(), Some(text), kind == ErrorKind::Unavailable)
        }
        Err(panic) => {
            deps.telemetry.metrics.error("panic");
            let text = panic_text(&panic);
            tracing::error!(offset, panic = %text, "kernel panicked");
            (
                Outcome::DeadLetter(format!("kernel panicked: {text}")),
                None,
                false,
            )
        }
    }
}

/// Calls `call` until its outcome is final. `None` if the partition was stopped while
/// waiting to retry. `pauses` says whether the partition waits meanwhile (the sequential
/// path) or not (a deferred task), for the paused gauge. `call` is given the attempt's number
/// and whether it is the last the policy allows ([`Context::is_last_attempt`]).
pub(crate) async fn decide<K, F, Fut>(
    deps: &WorkerDeps<K>,
    shared: &PartitionShared,
    offset: i64,
    pauses: bool,
    mut call: F,
) -> Option<Final>
where
    F: FnMut(u32, bool) -> Fut,
    Fut: Future<Output = Attempt>,
{
    // Built on the first retry only: most messages never need it.
    let mut delays = None;
    let mut attempt = 1u32;
    // Attempts that count against the policy: not those that met an unavailable dependency.
    let mut counted = 0u32;
    loop {
        // Whether a counted failure of this attempt would exhaust the policy.
        let last = deps.retry.exhausted(counted + 1);
        let Attempt { result, effects } = call(attempt, last).await;
        let (outcome, error, unavailable) = judge(deps, offset, result);
        if !unavailable {
            counted += 1;
        }
        match outcome {
            Outcome::Ack => {
                return Some(Final::Done {
                    effects,
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
                crate::infra::bump(&shared.counters.retries);
                let why = error.unwrap_or_else(|| "the kernel asked to retry".to_owned());
                if !unavailable && deps.retry.exhausted(counted) {
                    return Some(Final::DeadLetter {
                        reason: format!("gave up after {counted} attempts: {why}"),
                        attempts: attempt,
                    });
                }
                let delay = delay
                    .or_else(|| delays.get_or_insert_with(|| deps.retry.delays()).next())
                    .unwrap_or(deps.settings.retry_max_delay);
                tracing::warn!(offset, attempt, delay_ms = delay.as_millis() as u64,
                    reason = %why, unavailable, "retrying");
                if pauses {
                    shared.retrying.store(true, Ordering::Relaxed);
                }
                let stopped = tokio::select! {
                    biased;
                    _ = shared.stop.cancelled() => true,
                    _ = tokio::time::sleep(delay) => false,
                };
                if pauses {
                    shared.retrying.store(false, Ordering::Relaxed);
                }
                if stopped {
                    return None;
                }
                attempt += 1;
            }
        }
    }
}

/// Runs the kernel's `process` on `message` until its outcome is final (see [`decide`]),
/// in a span continuing the trace the message carries; returns the trace its records
/// continue. When spans are exported, the records carry the exported span's id; otherwise a
/// new one.
pub(crate) async fn decide_message<K: Kernel>(
    deps: &WorkerDeps<K>,
    shared: &PartitionShared,
    message: &Message,
    pauses: bool,
) -> (Option<Final>, Option<TraceParent>) {
    let offset = message.offset();
    let call = |attempt, last| async move {
        let mut ctx = Context::new(deps.kernel_name.clone(), attempt).with_last_attempt(last);
        let result = self::attempt(|| deps.kernel.process(message, &mut ctx)).await;
        Attempt {
            result,
            effects: ctx.take_effects(),
        }
    };
    match TraceParent::of(message) {
        None => (decide(deps, shared, offset, pauses, call).await, None),
        Some(parent) => {
            let span = tracing::info_span!("message", offset, trace_id = %parent.trace_id_hex(),
                parent_span_id = %to_hex(&parent.parent_id));
            let span_id = continue_trace(&span, &parent).unwrap_or_else(rand::random);
            let trace = parent.child(span_id);
            let decision = decide(deps, shared, offset, pauses, call)
                .instrument(span)
                .await;
            (decision, Some(trace))
        }
    }
}

/// A panic's message, when it has one.
pub(crate) fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
