//! What a kernel can do while processing a message: state its effects (output records,
//! dead letters, deferred tasks), which the runtime carries out.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::kernel::{KernelError, Outcome};
use crate::message::Header;

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The topic to produce to.
    pub topic: String,
    /// The key; records with the same key land in the same partition.
    pub key: Option<Bytes>,
    /// The value; `None` produces a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// An explicit partition; `None` lets the partitioner choose by key.
    pub partition: Option<i32>,
}

impl Record {
    /// A record for `topic` with no key, value or headers yet.
    pub fn to(topic: impl Into<String>) -> Self {
        Self {
            topic: topic.into(),
            key: None,
            value: None,
            headers: Vec::new(),
            partition: None,
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the key if there is one (convenient with [`crate::Message::key_bytes`]).
    pub fn maybe_key(mut self, key: Option<Bytes>) -> Self {
        self.key = key;
        self
    }

    /// Sets the value.
    pub fn value(mut self, value: impl Into<Bytes>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// Serializes `value` as JSON and sets the `content-type` header.
    pub fn json<T: serde::Serialize>(self, value: &T) -> Result<Self, serde_json::Error> {
        let bytes = serde_json::to_vec(value)?;
        Ok(self
            .value(bytes)
            .header("content-type", &b"application/json"[..]))
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header {
            name: name.into(),
            value: Some(value.into()),
        });
        self
    }

    /// Pins the record to a partition.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }
}

/// Handed to [`crate::Kernel::process`] with each message: where the kernel states the
/// message's effects. None of them happens unless the attempt's outcome is
/// [`Outcome::Ack`](crate::Outcome::Ack); then the runtime carries them out and commits the
/// message's offset only once all of them are done.
pub struct Context {
    kernel: Arc<str>,
    attempt: u32,
    last_attempt: bool,
    effects: Effects,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("kernel", &self.kernel)
            .field("attempt", &self.attempt)
            .field("last_attempt", &self.last_attempt)
            .field("outputs", &self.effects.outputs)
            .field("dead_letters", &self.effects.dead_letters)
            .field("deferred", &self.effects.deferred.len())
            .finish()
    }
}

impl Context {
    /// A context for one attempt; `attempt` counts from 1.
    pub fn new(kernel: impl Into<Arc<str>>, attempt: u32) -> Self {
        Self {
            kernel: kernel.into(),
            attempt,
            last_attempt: false,
            effects: Effects::default(),
        }
    }

    /// Marks whether this is the last attempt the retry policy allows (see
    /// [`Context::is_last_attempt`]); the runtime sets it, a test may.
    pub fn with_last_attempt(mut self, last: bool) -> Self {
        self.last_attempt = last;
        self
    }

    /// Queues a record. It is produced only if this attempt's outcome is `Ack`, and the input's
    /// offset is committed only after the broker has acknowledged it.
    pub fn send(&mut self, record: Record) {
        self.effects.outputs.push(record);
    }

    /// Dead-letters this message for one part of its effects (say, one handler out of
    /// several failed for good) while the rest go ahead. The dead letter goes to the
    /// runtime's dead-letter topic (`CLUSTERA_DLQ_TOPIC`, else `<input>.dlq`) with the usual
    /// provenance headers and `reason` as `clustera.error`, and is sent like an output: only
    /// if the outcome is `Ack`, committed only once acknowledged. Each call makes one dead
    /// letter.
    pub fn dead_letter(&mut self, reason: impl Into<String>) {
        self.effects
            .dead_letters
            .push(DeadLetterPart::new(reason, Vec::<(String, Bytes)>::new()));
    }

    /// Like [`Context::dead_letter`], with headers of the kernel's own on the dead letter
    /// (say, `clustera.handler` naming the handler that failed), after the provenance
    /// headers and replacing any of the original's with the same name. The runtime's own
    /// provenance headers cannot be replaced this way.
    pub fn dead_letter_with<N, V>(
        &mut self,
        reason: impl Into<String>,
        headers: impl IntoIterator<Item = (N, V)>,
    ) where
        N: Into<String>,
        V: Into<Bytes>,
    {
        self.effects
            .dead_letters
            .push(DeadLetterPart::new(reason, headers));
    }

    /// Finishes this message in a task the runtime runs next to the partition, so the kernel
    /// can take the next message meanwhile (a slow call whose order does not matter).
    ///
    /// The message's offset commits only when every task it deferred has finished and that
    /// task's records are acknowledged, so commits stay contiguous: a later message that is
    /// done waits for an earlier deferred one. Each attempt of the task gets a fresh
    /// [`DeferredContext`] for its records, and its outcome is treated like
    /// [`Kernel::process`](crate::Kernel::process)'s: retried with the runtime's backoff and
    /// attempts (an [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) error retries for
    /// as long as it lasts), dead-lettered when final, a panic dead-lettered.
    ///
    /// At most `CLUSTERA_MAX_DEFERRED` deferred tasks of one partition run at once; beyond
    /// that the partition waits (backpressure). Revocation and shutdown wait for them within
    /// the drain timeout; a task still running then is cancelled and its message, never
    /// committed, is delivered again. Like outputs, the task runs only if this attempt's
    /// outcome is `Ack`.
    pub fn defer<F, Fut>(&mut self, task: F)
    where
        F: Fn(DeferredContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Outcome, KernelError>> + Send + 'static,
    {
        self.effects
            .deferred
            .push(Arc::new(move |ctx| Box::pin(task(ctx))));
    }

    /// Which attempt this is, counting from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether a transient failure of this attempt would be final: the retry policy
    /// (`CLUSTERA_MAX_ATTEMPTS`, attempts that met an unavailable dependency not counted)
    /// allows no further attempt, so a [`KernelError::transient`](crate::KernelError::transient)
    /// returned now dead-letters the message. Never true when attempts are unbounded. A
    /// kernel whose message has independent parts uses it to dead-letter only the part that
    /// keeps failing ([`Context::dead_letter_with`]) and acknowledge the rest.
    pub fn is_last_attempt(&self) -> bool {
        self.last_attempt
    }

    /// The kernel's name.
    pub fn kernel(&self) -> &str {
        &self.kernel
    }

    /// The records queued so far.
    pub fn outputs(&self) -> &[Record] {
        &self.effects.outputs
    }

    /// The dead letters asked for so far ([`Context::dead_letter`]).
    pub fn dead_letters(&self) -> &[DeadLetterPart] {
        &self.effects.dead_letters
    }

    /// How many tasks [`Context::defer`] was given so far.
    pub fn deferred(&self) -> usize {
        self.effects.deferred.len()
    }

    /// Takes the effects stated so far.
    pub(crate) fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.effects)
    }
}

/// Handed to each attempt of a task given to [`Context::defer`]: where the task states its
/// records. Cheap to clone; every clone adds to the same attempt.
#[derive(Clone)]
pub struct DeferredContext {
    kernel: Arc<str>,
    attempt: u32,
    last_attempt: bool,
    effects: Arc<Mutex<Effects>>,
    stop: CancellationToken,
    /// Where [`DeferredContext::send_now`] produces; `None` collects like `send`.
    stream: Option<Arc<dyn RecordStream>>,
}

/// Produces a deferred task's records at once, tracked on its message (the runtime's
/// implementation lives with the rest of the effects).
pub(crate) trait RecordStream: Send + Sync {
    /// Produces `record`, waiting for room in the producer's queue.
    fn send(
        &self,
        record: Record,
    ) -> Pin<Box<dyn Future<Output = Result<(), TaskEnded>> + Send + '_>>;
}

/// [`DeferredContext::send_now`] after the task ended (a clone of its context kept too
/// long): the record was not produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the deferred task has ended: a record can no longer be produced for its message")]
pub struct TaskEnded;

impl DeferredContext {
    /// `stop` is the partition's: cancelled on revocation and shutdown.
    pub(crate) fn new(
        kernel: Arc<str>,
        attempt: u32,
        stop: CancellationToken,
        stream: Option<Arc<dyn RecordStream>>,
    ) -> Self {
        Self {
            kernel,
            attempt,
            last_attempt: false,
            effects: Arc::default(),
            stop,
            stream,
        }
    }

    /// Produces `record` now, rather than when the task's outcome is known, waiting for room
    /// in the producer's queue (the memory budget's share). For answers too large to hold:
    /// stream them from disk chunk by chunk. The message still commits only once every such
    /// record is acknowledged. Unlike [`DeferredContext::send`], what was produced stays
    /// produced if the attempt then fails or is retried (a retry produces it again:
    /// at-least-once).
    pub async fn send_now(&self, record: Record) -> Result<(), TaskEnded> {
        match &self.stream {
            Some(stream) => stream.send(record).await,
            None => {
                self.effects().outputs.push(record);
                Ok(())
            }
        }
    }

    pub(crate) fn with_last_attempt(mut self, last: bool) -> Self {
        self.last_attempt = last;
        self
    }

    fn effects(&self) -> std::sync::MutexGuard<'_, Effects> {
        // Pushing to a Vec cannot leave it half-changed; a poisoned lock is still whole.
        self.effects.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a record, produced only if this attempt's outcome is `Ack`.
    pub fn send(&self, record: Record) {
        self.effects().outputs.push(record);
    }

    /// Dead-letters the message for part of this task's effects; see [`Context::dead_letter`].
    pub fn dead_letter(&self, reason: impl Into<String>) {
        self.effects()
            .dead_letters
            .push(DeadLetterPart::new(reason, Vec::<(String, Bytes)>::new()));
    }

    /// Like [`DeferredContext::dead_letter`], with headers; see [`Context::dead_letter_with`].
    pub fn dead_letter_with<N, V>(
        &self,
        reason: impl Into<String>,
        headers: impl IntoIterator<Item = (N, V)>,
    ) where
        N: Into<String>,
        V: Into<Bytes>,
    {
        self.effects()
            .dead_letters
            .push(DeadLetterPart::new(reason, headers));
    }

    /// Which attempt of the task this is, counting from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether a transient failure of this attempt would be final; see
    /// [`Context::is_last_attempt`].
    pub fn is_last_attempt(&self) -> bool {
        self.last_attempt
    }

    /// The kernel's name.
    pub fn kernel(&self) -> &str {
        &self.kernel
    }

    /// Resolves once the message's partition stops: revoked, or the kernel shutting down.
    ///
    /// For a task that waits on something only the partition's later messages bring (the
    /// rest of a request that arrives in several messages): once the partition stops, those
    /// messages go to its next owner, so waiting is pointless. The task should then return an
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) error: the runtime gives up
    /// on the message without committing it (nor anything after it), and the next owner
    /// processes it again. A task that can finish on its own (a call under way) may ignore
    /// this and finish within the drain timeout.
    pub async fn stopped(&self) {
        self.stop.cancelled().await;
    }

    /// Whether the message's partition has stopped (see [`DeferredContext::stopped`]).
    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Takes the records stated so far (a deferred task cannot defer again).
    pub(crate) fn take_effects(&self) -> Effects {
        let mut effects = std::mem::take(&mut *self.effects());
        effects.deferred.clear();
        effects
    }
}

impl std::fmt::Debug for DeferredContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredContext")
            .field("kernel", &self.kernel)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// A task given to [`Context::defer`], callable once per attempt.
pub(crate) type DeferredTask = Arc<
    dyn Fn(DeferredContext) -> Pin<Box<dyn Future<Output = Result<Outcome, KernelError>> + Send>>
        + Send
        + Sync,
>;

/// One dead letter a kernel asked for, for part of a message's effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterPart {
    /// Why: the dead letter's `clustera.error`.
    pub reason: String,
    /// The kernel's own headers on it.
    pub headers: Vec<Header>,
}

impl DeadLetterPart {
    fn new<N: Into<String>, V: Into<Bytes>>(
        reason: impl Into<String>,
        headers: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        Self {
            reason: reason.into(),
            headers: headers
                .into_iter()
                .map(|(name, value)| Header {
                    name: name.into(),
                    value: Some(value.into()),
                })
                .collect(),
        }
    }
}

/// What one attempt asked for, carried out only if its outcome is `Ack`.
#[derive(Default)]
pub(crate) struct Effects {
    pub outputs: Vec<Record>,
    /// One dead letter of the input each.
    pub dead_letters: Vec<DeadLetterPart>,
    pub deferred: Vec<DeferredTask>,
}
