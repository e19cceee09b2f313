//! The contract between a kernel author and the runtime.

use std::future::Future;
use std::time::Duration;

use crate::context::Context;
use crate::message::{DecodeError, Message};

/// What a kernel decided about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done: the outputs collected in the [`Context`] are sent, and once the broker has
    /// acknowledged them the offset may be committed.
    Ack,
    /// A transient failure: process the same message again, after the given delay or the retry
    /// policy's backoff. Nothing later in the partition overtakes it. Outputs of the failed
    /// attempt are discarded.
    Retry(Option<Duration>),
    /// Log the reason and move on without producing anything.
    Skip(String),
    /// Send the message to the dead-letter topic with this reason, and move on.
    DeadLetter(String),
}

impl Outcome {
    /// Retry after the retry policy's backoff.
    pub fn retry() -> Self {
        Outcome::Retry(None)
    }

    /// Retry after exactly `delay`.
    pub fn retry_after(delay: Duration) -> Self {
        Outcome::Retry(Some(delay))
    }

    /// Skip with a reason that is logged.
    pub fn skip(reason: impl Into<String>) -> Self {
        Outcome::Skip(reason.into())
    }

    /// Dead-letter with a reason that travels in the record's headers.
    pub fn dead_letter(reason: impl Into<String>) -> Self {
        Outcome::DeadLetter(reason.into())
    }
}

/// Whether retrying can help, and for how long.
///
/// The rule: an error that says nothing about the message (a dependency that cannot be
/// reached) must never dead-letter it, however long it lasts; an error that may go away for
/// this message (a deadlock, a serialization conflict, a timeout, a 503) gets the retry
/// policy's attempts; an error caused by the message itself (invalid data, a constraint it
/// violates) is final at once. A kernel picks the kind where it builds the error
/// ([`KernelError::unavailable`], [`KernelError::transient`], [`KernelError::permanent`], or
/// the [`ResultExt`] shorthands); to change how a whole family of errors is treated, map them
/// in one place of the kernel (the outbox processor, for example, classifies PostgreSQL
/// errors by SQLSTATE and lets its handlers override that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A dependency is down or unreachable (connection refused or lost, a database
    /// restarting): retried with backoff for as long as it lasts, never dead-lettered, and
    /// not counted against `CLUSTERA_MAX_ATTEMPTS`. The partition waits meanwhile.
    Unavailable,
    /// The same message may succeed later (a timeout, a 503, a deadlock): retried up to
    /// `CLUSTERA_MAX_ATTEMPTS`, then dead-lettered.
    Transient,
    /// The message itself is bad (undecodable, invalid): dead-lettered at once.
    Permanent,
}

/// An error returned by [`Kernel::process`], classified so the runtime knows what to do.
#[derive(Debug, thiserror::Error)]
#[error("{kind:?} error: {source}")]
pub struct KernelError {
    kind: ErrorKind,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl KernelError {
    /// A dependency that cannot be reached: retried for as long as it lasts.
    pub fn unavailable(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            kind: ErrorKind::Unavailable,
            source: source.into(),
        }
    }

    /// A failure that retrying may fix.
    pub fn transient(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            kind: ErrorKind::Transient,
            source: source.into(),
        }
    }

    /// A failure caused by the message itself.
    pub fn permanent(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            source: source.into(),
        }
    }

    /// How the runtime will treat it.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The outcome this error stands for.
    pub fn outcome(&self) -> Outcome {
        match self.kind {
            ErrorKind::Unavailable | ErrorKind::Transient => Outcome::Retry(None),
            ErrorKind::Permanent => Outcome::DeadLetter(error_chain(&*self.source)),
        }
    }

    /// Like [`KernelError::outcome`], consuming the error.
    pub fn into_outcome(self) -> Outcome {
        self.outcome()
    }
}

/// A message that cannot be decoded is a poison pill: retrying will never help.
impl From<DecodeError> for KernelError {
    fn from(e: DecodeError) -> Self {
        KernelError::permanent(e)
    }
}

pub(crate) use crate::infra::error_chain;

/// Classifies any error with `?`: `http.get(url).await.transient()?`.
pub trait ResultExt<T> {
    /// Treats the error as a dependency being down (retried for as long as it lasts).
    fn unavailable(self) -> Result<T, KernelError>;
    /// Treats the error as transient (retried).
    fn transient(self) -> Result<T, KernelError>;
    /// Treats the error as permanent (dead-lettered).
    fn permanent(self) -> Result<T, KernelError>;
}

impl<T, E> ResultExt<T> for Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn unavailable(self) -> Result<T, KernelError> {
        self.map_err(KernelError::unavailable)
    }

    fn transient(self) -> Result<T, KernelError> {
        self.map_err(KernelError::transient)
    }

    fn permanent(self) -> Result<T, KernelError> {
        self.map_err(KernelError::permanent)
    }
}

/// A single-purpose message processor. The runtime owns everything else: consuming, ordering,
/// retries, dead letters, producing, commits, rebalances and shutdown.
///
/// Implementations may write `async fn process(...)`; the future must be `Send` because
/// partitions are processed concurrently on a multi-threaded runtime.
pub trait Kernel: Send + Sync + 'static {
    /// A short, stable name: it defaults the consumer group and client id and labels metrics.
    fn name(&self) -> &str;

    /// The topics consumed unless `KAFKA_TOPIC` overrides them.
    fn default_topics(&self) -> Vec<String>;

    /// Processes one message. Messages of one partition arrive strictly in order, one at a time.
    /// The effects stated through `ctx` (records, dead letters, deferred tasks) happen only if
    /// the outcome is [`Outcome::Ack`].
    fn process(
        &self,
        message: &Message,
        ctx: &mut Context,
    ) -> impl Future<Output = Result<Outcome, KernelError>> + Send;

    /// Registers the kernel's own metrics; they are served on `/metrics` with the runtime's,
    /// under the `clustera_` prefix and the `kernel` label. Called once, before the kernel
    /// runs. The default registers nothing.
    fn register_metrics(&self, _registry: &mut prometheus_client::registry::Registry) {}

    /// How many consecutive messages of one partition [`process_batch`](Self::process_batch)
    /// takes at most, unless `CLUSTERA_BATCH_SIZE` says otherwise. 1 (the default) never
    /// batches.
    fn max_batch(&self) -> usize {
        1
    }

    /// Processes consecutive messages of one partition together, for kernels whose writes are
    /// cheaper in bulk. `contexts[i]` belongs to `messages[i]`. The runtime only batches what
    /// is already fetched, so a batch never waits for more messages to arrive.
    ///
    /// Returns outcomes for a prefix of `messages`, in order. The runtime accepts the final
    /// ones (ack, skip, dead-letter) up to the first [`Outcome::Retry`] or transient error;
    /// that message and every later one (also those past a short result, or all of them if
    /// the batch panicked) are processed again one by one through
    /// [`process`](Self::process), from their first attempt. So a batch may fail as a whole
    /// and leave the per-message path to isolate the culprit, and the order of final outcomes
    /// is always the order of the messages.
    ///
    /// The default processes each message in turn and stops at the first that is not final.
    fn process_batch(
        &self,
        messages: &[Message],
        contexts: &mut [Context],
    ) -> impl Future<Output = Vec<Result<Outcome, KernelError>>> + Send {
        async move {
            let mut results = Vec::with_capacity(messages.len());
            for (message, ctx) in messages.iter().zip(contexts.iter_mut()) {
                let result = self.process(message, ctx).await;
                let last = match &result {
                    Ok(Outcome::Retry(_)) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != ErrorKind::Permanent,
                };
                results.push(result);
                if last {
                    break;
                }
            }
            results
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_outcomes() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "upstream slow");
        assert_eq!(
            KernelError::transient(io).into_outcome(),
            Outcome::Retry(None)
        );
        let bad = KernelError::permanent("field `id` missing");
        assert_eq!(
            bad.into_outcome(),
            Outcome::DeadLetter("field `id` missing".into())
        );
    }

    #[test]
    fn result_ext_classifies() {
        let r: Result<(), std::fmt::Error> = Err(std::fmt::Error);
        assert_eq!(r.transient().unwrap_err().kind(), ErrorKind::Transient);
    }
}
