//! [`TestDriver`] runs a kernel's `process` in memory, the way the runtime would for one
//! attempt: unit tests of kernel logic need no broker.

use crate::context::{Context, DeadLetterPart, DeferredContext, Record};
use crate::kernel::{Kernel, KernelError, Outcome};
use crate::message::Message;

/// What one call of `process` produced.
#[derive(Debug)]
pub struct TestRun {
    /// The outcome, errors already mapped as the runtime maps them.
    pub outcome: Outcome,
    /// The error, if `process` returned one.
    pub error: Option<KernelError>,
    /// The records the kernel queued (sent only if the outcome is `Ack`).
    pub outputs: Vec<Record>,
    /// The dead letters asked for with [`Context::dead_letter`](crate::Context::dead_letter).
    pub dead_letters: Vec<DeadLetterPart>,
    /// The tasks given to [`Context::defer`](crate::Context::defer), each run once (attempt 1)
    /// after `process` returned `Ack`, in order.
    pub deferred: Vec<DeferredRun>,
}

/// What one deferred task did in its first attempt.
#[derive(Debug)]
pub struct DeferredRun {
    /// The outcome, errors already mapped as the runtime maps them.
    pub outcome: Outcome,
    /// The error, if the task returned one.
    pub error: Option<KernelError>,
    /// The records the task queued.
    pub outputs: Vec<Record>,
    /// The dead letters the task asked for.
    pub dead_letters: Vec<DeadLetterPart>,
}

/// Drives a kernel in memory.
pub struct TestDriver<K> {
    kernel: K,
    next_offset: i64,
}

impl<K: Kernel> TestDriver<K> {
    /// Wraps a kernel.
    pub fn new(kernel: K) -> Self {
        Self {
            kernel,
            next_offset: 0,
        }
    }

    /// Processes a message built from `value` on the kernel's first default topic.
    pub async fn process_value(&mut self, key: Option<&[u8]>, value: &[u8]) -> TestRun {
        let topic = self
            .kernel
            .default_topics()
            .into_iter()
            .next()
            .unwrap_or_else(|| "test".to_owned());
        let mut message = Message::new(&topic, 0, self.next_offset).with_value(value.to_vec());
        if let Some(k) = key {
            message = message.with_key(k.to_vec());
        }
        self.process(&message).await
    }

    /// Processes `message` once (attempt 1).
    pub async fn process(&mut self, message: &Message) -> TestRun {
        self.next_offset = message.offset() + 1;
        let mut ctx = Context::new(self.kernel.name(), 1);
        let (outcome, error) = match self.kernel.process(message, &mut ctx).await {
            Ok(o) => (o, None),
            Err(e) => (e.outcome(), Some(e)),
        };
        let effects = ctx.take_effects();
        let mut deferred = Vec::new();
        // As in the runtime, a deferred task runs only if the message was acknowledged.
        let tasks = if outcome == Outcome::Ack {
            effects.deferred
        } else {
            Vec::new()
        };
        for task in tasks {
            // The driver never stops: `stopped()` never resolves.
            let cx = DeferredContext::new(
                self.kernel.name().into(),
                1,
                tokio_util::sync::CancellationToken::new(),
                // `send_now` records are reported with the others.
                None,
            );
            let (outcome, error) = match task(cx.clone()).await {
                Ok(o) => (o, None),
                Err(e) => (e.outcome(), Some(e)),
            };
            let done = cx.take_effects();
            deferred.push(DeferredRun {
                outcome,
                error,
                outputs: done.outputs,
                dead_letters: done.dead_letters,
            });
        }
        TestRun {
            outcome,
            error,
            outputs: effects.outputs,
            dead_letters: effects.dead_letters,
            deferred,
        }
    }

    /// The kernel under test.
    pub fn kernel(&self) -> &K {
        &self.kernel
    }
}
