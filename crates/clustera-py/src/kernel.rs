//! A Python callable as a [`clustera::Kernel`].
//!
//! `process` takes a slot of a bounded pool (`CLUSTERA_PYTHON_THREADS`, 8 by default), moves
//! to one of tokio's blocking threads, attaches to the interpreter only for the call, and
//! hands the records the call stated to the runtime's [`Context`]. The runtime then does what
//! it does for a Rust kernel: outputs sent only on `Ack` and acknowledged before the input
//! commits, retries, dead letters, ordering, shutdown, metrics.
//!
//! Batches: under the default `CLUSTERA_ORDERING=partition` the kernel takes up to
//! `CLUSTERA_BATCH_SIZE` (64 for Python kernels) messages of a partition that are already
//! fetched per trip to a Python thread, and calls Python once per message, in order, attached
//! to the interpreter once: each message still has its own outcome and outputs, and whatever
//! follows a retry is processed again one by one, as the runtime does for any batch. It only
//! saves the thread hand-over and the GIL acquisition, which cost more than a small kernel.
//!
//! Concurrency: at most that many Python calls are in progress at once (one per partition
//! under the default `CLUSTERA_ORDERING=partition`, more with `key` or `none`). They share the
//! GIL: a kernel that waits on I/O (a socket, `time.sleep`, an `async def` awaiting) lets the
//! others run, while a CPU-bound kernel runs one call at a time, on one core, whatever the
//! pool size; the runtime's own work (fetching, producing, committing) goes on meanwhile on
//! other threads, outside the GIL.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use clustera::{Context, ErrorKind, Kernel, KernelError, Message, Outcome};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyAny;
use tokio::sync::Semaphore;

use crate::effects::{Effects, KernelContext, Producer, Sink};
use crate::outcome::{self, Style};
use crate::record::ConsumerRecord;

static IS_COROUTINE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static AWAIT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The Python side of a kernel.
pub struct Target {
    /// The kernel's name (consumer group, client id, metric label).
    pub name: String,
    /// The topics consumed unless `KAFKA_TOPIC` says otherwise.
    pub topics: Vec<String>,
    /// `process_message` or a bound `Kernel.process`.
    pub callable: Py<PyAny>,
    /// The contract it follows.
    pub style: Style,
    /// Seed style: whether a producer is passed (the seed passes None when `OUTPUT_TOPIC` is
    /// None).
    pub producer: bool,
}

/// What one call decided and stated.
pub struct Invocation {
    /// The outcome, or the classified error.
    pub outcome: Result<Outcome, KernelError>,
    /// Records and partial dead letters stated during the call.
    pub effects: Effects,
}

/// Calls the kernel once for `message`, attached to the interpreter. The same path serves the
/// runtime and `clustera.testing.TestDriver`.
pub fn invoke(
    py: Python<'_>,
    target: &Target,
    message: Message,
    attempt: u32,
    last_attempt: bool,
) -> Invocation {
    let sink = Sink::new();
    let result = call(py, target, message, &sink, attempt, last_attempt);
    let effects = sink.close();
    let outcome = match result {
        Ok(value) => outcome::from_value(py, target.style, value.bind(py)),
        Err(err) => outcome::from_exception(py, err),
    };
    Invocation { outcome, effects }
}

fn call(
    py: Python<'_>,
    target: &Target,
    message: Message,
    sink: &Sink,
    attempt: u32,
    last_attempt: bool,
) -> PyResult<Py<PyAny>> {
    let record = Bound::new(py, ConsumerRecord::new(message))?;
    let second: Py<PyAny> = match target.style {
        Style::Seed if target.producer => Bound::new(py, Producer::new(sink.clone()))?
            .into_any()
            .unbind(),
        Style::Seed => py.None(),
        Style::Kernel => Bound::new(py, KernelContext::new(sink.clone(), attempt, last_attempt))?
            .into_any()
            .unbind(),
    };
    let result = (|| {
        let value = target.callable.bind(py).call1((record.clone(), second))?;
        let is_coroutine = IS_COROUTINE.import(py, "inspect", "iscoroutine")?;
        if is_coroutine.call1((&value,))?.is_truthy()? {
            // `async def`: run on the package's event loop thread; waiting releases the GIL.
            AWAIT
                .import(py, "clustera._aio", "wait")?
                .call1((value,))
                .map(Bound::unbind)
        } else {
            Ok(value.unbind())
        }
    })();
    record.get().release();
    result
}

/// A [`Target`] run by the runtime.
pub struct PyKernel {
    target: Arc<Target>,
    slots: Arc<Semaphore>,
    batch: usize,
    calls: Arc<AtomicUsize>,
}

impl PyKernel {
    /// At most `threads` calls at once; up to `batch` already-fetched messages of a partition
    /// per trip to a Python thread.
    pub fn new(target: Target, threads: usize, batch: usize) -> Self {
        Self {
            target: Arc::new(target),
            slots: Arc::new(Semaphore::new(threads.max(1))),
            batch: batch.max(1),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How many Python calls are running, readable after the kernel was handed to the runtime:
    /// a call still running once the runtime has stopped (a kernel stuck past the drain
    /// timeout) must not race the interpreter's finalization.
    pub fn running_calls(&self) -> Arc<AtomicUsize> {
        self.calls.clone()
    }

    /// Calls the kernel for each message in turn on a blocking thread, attached to the
    /// interpreter once for all of them, stopping after the first outcome that is not final
    /// (the runtime processes the rest again one by one, as for any batch).
    async fn call_all(
        &self,
        messages: Vec<Message>,
        attempts: Vec<(u32, bool)>,
    ) -> Result<Vec<Invocation>, KernelError> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| KernelError::transient(HostError(e.to_string())))?;
        let target = self.target.clone();
        let calls = self.calls.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let _slot = permit;
            calls.fetch_add(1, Ordering::SeqCst);
            let _running = Running(calls);
            Python::attach(|py| {
                let mut done = Vec::with_capacity(messages.len());
                for (message, (attempt, last)) in messages.into_iter().zip(attempts) {
                    let invocation = invoke(py, &target, message, attempt, last);
                    let final_ = match &invocation.outcome {
                        Ok(Outcome::Retry(_)) => false,
                        Ok(_) => true,
                        Err(e) => e.kind() == ErrorKind::Permanent,
                    };
                    done.push(invocation);
                    if !final_ {
                        break;
                    }
                }
                done
            })
        })
        .await;
        match joined {
            Ok(done) => Ok(done),
            // The runtime catches a kernel's panic and dead-letters its message.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(KernelError::transient(HostError(e.to_string()))),
        }
    }
}

/// Counts a call out when it ends, however it ends.
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A Python failure that is not the kernel's decision (the pool closed, a call cancelled).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct HostError(String);

fn hand_over(invocation: Invocation, ctx: &mut Context) -> Result<Outcome, KernelError> {
    for record in invocation.effects.outputs {
        ctx.send(record);
    }
    for reason in invocation.effects.dead_letters {
        ctx.dead_letter(reason);
    }
    invocation.outcome
}

impl Kernel for PyKernel {
    fn name(&self) -> &str {
        &self.target.name
    }

    fn default_topics(&self) -> Vec<String> {
        self.target.topics.clone()
    }

    async fn process(&self, message: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        let attempt = (ctx.attempt(), ctx.is_last_attempt());
        let mut done = self.call_all(vec![message.clone()], vec![attempt]).await?;
        match done.pop() {
            Some(invocation) => hand_over(invocation, ctx),
            None => Err(KernelError::transient(HostError(
                "the Python call returned nothing".into(),
            ))),
        }
    }

    fn max_batch(&self) -> usize {
        self.batch
    }

    async fn process_batch(
        &self,
        messages: &[Message],
        contexts: &mut [Context],
    ) -> Vec<Result<Outcome, KernelError>> {
        let attempts = contexts
            .iter()
            .map(|c| (c.attempt(), c.is_last_attempt()))
            .collect();
        match self.call_all(messages.to_vec(), attempts).await {
            Ok(done) => done
                .into_iter()
                .zip(contexts.iter_mut())
                .map(|(invocation, ctx)| hand_over(invocation, ctx))
                .collect(),
            // Nothing was decided: the runtime processes every message again one by one.
            Err(e) => vec![Err(e)],
        }
    }
}
