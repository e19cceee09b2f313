//! The processor kernel: Debezium change events of the outbox table in, read models out.
//!
//! Each event is routed to its handlers ([`Registry`]); each handler's writes and its
//! `(handler, event_id)` marker commit in one transaction, so a redelivered event changes
//! nothing and handlers fail on their own.
//!
//! # Failures
//!
//! Everything with a delivery consequence goes through the runtime: its retry policy
//! (`CLUSTERA_MAX_ATTEMPTS`, backoff) and its dead-letter topic (`CLUSTERA_DLQ_TOPIC`, else
//! `<input>.dlq`, with the runtime's provenance headers). A store failure of one handler is
//! classified by [`Handler::classify`], by default by SQLSTATE ([`crate::pg`]):
//!
//! - **unavailable** (connection refused or lost, a pool timeout, `08xxx`, `57P01`..`57P03`):
//!   the whole event is retried, with backoff, for as long as it lasts; it is never
//!   dead-lettered and the attempts are not counted. Handlers already applied are skipped by
//!   their markers on the next attempt.
//! - **transient** (`40001` serialization failure, `40P01` deadlock, anything unknown): the
//!   event is retried, counting attempts; on the last attempt the policy allows
//!   ([`Context::is_last_attempt`]) each handler still failing is dead-lettered alone and the
//!   event is acknowledged. With `CLUSTERA_MAX_ATTEMPTS=0` it is retried forever.
//! - **permanent** (`23xxx` constraint violation, `22xxx` invalid data), and an event a
//!   handler rejects ([`HandlerError`](crate::HandlerError)): that handler's part is
//!   dead-lettered at once; the other handlers still apply.
//!
//! A per-handler dead letter is the input message, sent with
//! [`Context::dead_letter_with`] and the headers [`headers::HANDLER`] and
//! [`headers::EVENT_ID`] on top of the runtime's. To treat some failures of a handler
//! otherwise, override [`Handler::classify`].
//!
//! Batches ([`Kernel::process_batch`]) write every handler's writes of up to
//! `CLUSTERA_BATCH_SIZE` events in one transaction; if that fails for any reason, the events
//! are processed one by one as above, where each failure is isolated and classified.

use std::sync::Arc;

use clustera::{Context, ErrorKind, Kernel, KernelError, Message, Outcome};
use clustera_debezium::{
    decode, decode_routed, Decoded, Op, OutboxColumns, OutboxEvent, RoutedHeaders,
};

#[cfg(doc)]
use crate::handler::Handler;
use crate::registry::{HandlerOutcome, Registry};
use crate::store::{Store, Write};

/// The processor's own headers on a per-handler dead letter, besides the runtime's provenance
/// headers ([`clustera::dead_letter_headers`]).
pub mod headers {
    /// The handler that gave up on the event.
    pub const HANDLER: &str = "clustera.handler";
    /// The event's id.
    pub const EVENT_ID: &str = "clustera.event.id";
}

/// What the processor skips, as the seed does by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SkipPolicy {
    /// Skip `op = d`.
    pub deletes: bool,
    /// Skip snapshot reads (`op = r`).
    pub snapshots: bool,
}

impl Default for SkipPolicy {
    fn default() -> Self {
        Self {
            deletes: true,
            snapshots: true,
        }
    }
}

/// Routes outbox events to the registry's handlers and writes through `store`.
pub struct OutboxProcessor<S> {
    registry: Registry,
    store: Arc<S>,
    columns: OutboxColumns,
    skip: SkipPolicy,
    topics: Vec<String>,
    /// Most events written in one transaction.
    batch_size: usize,
}

impl<S: Store + 'static> OutboxProcessor<S> {
    /// A processor for `topics` (default `postgres.activity.event_outbox`).
    pub fn new(registry: Registry, store: Arc<S>) -> Self {
        Self {
            registry,
            store,
            columns: OutboxColumns::default(),
            skip: SkipPolicy::default(),
            topics: vec!["postgres.activity.event_outbox".into()],
            batch_size: 500,
        }
    }

    /// Writes at most `size` events per transaction (1: one transaction per handler and
    /// event). `CLUSTERA_BATCH_SIZE` overrides it at run time.
    pub fn with_batch_size(mut self, size: usize) -> Self {
        self.batch_size = size.max(1);
        self
    }

    /// Consumes these topics instead.
    pub fn with_topics(mut self, topics: Vec<String>) -> Self {
        self.topics = topics;
        self
    }

    /// Skips these changes instead of the defaults.
    pub fn with_skip(mut self, skip: SkipPolicy) -> Self {
        self.skip = skip;
        self
    }
}

/// Dead-letters one handler's part of the event, through the runtime.
fn dead_letter_part(ctx: &mut Context, event: &OutboxEvent, handler: &str, error: &str) {
    tracing::error!(event_id = %event.event_id, handler, error, "handler dead-lettered");
    ctx.dead_letter_with(
        error.to_owned(),
        [
            (headers::HANDLER, handler.to_owned()),
            (headers::EVENT_ID, event.event_id.clone()),
        ],
    );
}

impl<S: Store + 'static> Kernel for OutboxProcessor<S> {
    fn name(&self) -> &str {
        "outbox-processor"
    }

    fn default_topics(&self) -> Vec<String> {
        self.topics.clone()
    }

    async fn process(&self, msg: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        match self.event(msg)? {
            Ok(event) => self.handle(ctx, event).await,
            Err(skip) => Ok(skip),
        }
    }

    fn max_batch(&self) -> usize {
        self.batch_size
    }

    /// Every handler's writes of the whole batch in one transaction. If it fails, the
    /// runtime processes the messages one by one, where a failing handler is isolated,
    /// retried and dead-lettered alone.
    async fn process_batch(
        &self,
        messages: &[Message],
        contexts: &mut [Context],
    ) -> Vec<Result<Outcome, KernelError>> {
        let mut results: Vec<Option<Result<Outcome, KernelError>>> = Vec::new();
        let mut planned = Vec::new();
        for (i, msg) in messages.iter().enumerate() {
            results.push(match self.event(msg) {
                Err(e) => Some(Err(e)),
                Ok(Err(skip)) => Some(Ok(skip)),
                Ok(Ok(event)) if self.registry.handlers_for(&event.event_type).is_empty() => {
                    Some(Ok(no_handler(&event)))
                }
                Ok(Ok(event)) => {
                    let plan = self.registry.plan(&event);
                    planned.push((i, event, plan));
                    None
                }
            });
        }
        let writes: Vec<Write<'_>> = planned
            .iter()
            .flat_map(|(_, event, plan)| {
                plan.iter().filter_map(|(handler, ops)| {
                    Some(Write {
                        handler,
                        event_id: &event.event_id,
                        ops: ops.as_ref().ok()?,
                    })
                })
            })
            .collect();
        let started = std::time::Instant::now();
        let applied = self.store.apply_all(&writes).await;
        tracing::debug!(
            events = planned.len(),
            writes = writes.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "batch written"
        );
        if let Err(e) = applied {
            tracing::warn!(error = %clustera::infra::error_chain(&e), batch = messages.len(),
                "batch write failed; processing its events one by one");
            return Vec::new();
        }
        for (i, event, plan) in &planned {
            for (handler, ops) in plan {
                if let Err(e) = ops {
                    dead_letter_part(&mut contexts[*i], event, handler, &e.to_string());
                }
            }
            results[*i] = Some(Ok(Outcome::Ack));
        }
        results.into_iter().map_while(|r| r).collect()
    }
}

fn no_handler(event: &OutboxEvent) -> Outcome {
    Outcome::skip(format!("no handler for {}", event.event_type))
}

impl<S: Store + 'static> OutboxProcessor<S> {
    /// The message's outbox event, or the outcome for a message that carries none.
    fn event(&self, msg: &Message) -> Result<Result<OutboxEvent, Outcome>, KernelError> {
        match self.routed_event(msg)? {
            Some(event) => Ok(Ok(event)),
            None => self.change_event(msg),
        }
    }

    /// The Outbox Event Router's form: recognised by its event-id and event-type headers.
    fn routed_event(&self, msg: &Message) -> Result<Option<OutboxEvent>, KernelError> {
        let names = RoutedHeaders::default();
        if msg.header(&names.event_id).is_none() || msg.header(&names.event_type).is_none() {
            return Ok(None);
        }
        let headers: Vec<(&str, &[u8])> = msg
            .headers()
            .iter()
            .filter_map(|h| Some((h.name.as_str(), h.value.as_deref()?)))
            .collect();
        decode_routed(msg.topic(), msg.key(), msg.value(), &headers, &names)
            .map(Some)
            .map_err(KernelError::permanent)
    }

    /// A change event of the outbox table, or the outcome for a change that carries none.
    fn change_event(&self, msg: &Message) -> Result<Result<OutboxEvent, Outcome>, KernelError> {
        let change = match decode(msg.value()).map_err(KernelError::permanent)? {
            Decoded::Tombstone => return Ok(Err(Outcome::skip("tombstone"))),
            Decoded::Change(c) => c,
        };
        match change.op {
            Op::Delete if self.skip.deletes => return Ok(Err(Outcome::skip("delete"))),
            Op::Read if self.skip.snapshots => return Ok(Err(Outcome::skip("snapshot read"))),
            Op::Truncate | Op::Message => return Ok(Err(Outcome::skip("not a row change"))),
            _ => {}
        }
        Ok(OutboxEvent::from_change(&change, &self.columns)
            .map_err(KernelError::permanent)?
            .ok_or_else(|| Outcome::skip("no outbox row")))
    }

    /// Runs the event's handlers; dead-letters, per handler, what they cannot do.
    async fn handle(&self, ctx: &mut Context, event: OutboxEvent) -> Result<Outcome, KernelError> {
        if self.registry.handlers_for(&event.event_type).is_empty() {
            return Ok(no_handler(&event));
        }
        let outcomes = self.registry.dispatch(&*self.store, &event).await;
        let failed = |wanted: ErrorKind| {
            outcomes.iter().find_map(|o| match o {
                HandlerOutcome::Failed {
                    handler,
                    error,
                    kind,
                } if *kind == wanted => Some(format!("handler {handler}: {error}")),
                _ => None,
            })
        };
        // The server is away: retry the whole event (applied handlers are skipped by their
        // markers) for as long as it lasts.
        if let Some(why) = failed(ErrorKind::Unavailable) {
            return Err(KernelError::unavailable(why));
        }
        // A failure that may pass: retry while the policy allows another attempt.
        if let Some(why) = failed(ErrorKind::Transient) {
            if !ctx.is_last_attempt() {
                return Err(KernelError::transient(why));
            }
        }
        for o in &outcomes {
            match o {
                HandlerOutcome::Invalid { handler, error }
                | HandlerOutcome::Failed { handler, error, .. } => {
                    dead_letter_part(ctx, &event, handler, error);
                }
                HandlerOutcome::Applied(_) | HandlerOutcome::AlreadyApplied(_) => {}
            }
        }
        Ok(Outcome::Ack)
    }
}
