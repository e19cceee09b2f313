//! The processor kernel: Debezium change events of the outbox table in, read models out.

use std::sync::Arc;

use clustera::{Context, Kernel, KernelError, Message, Outcome, Record};
use clustera_debezium::{
    decode, decode_routed, Decoded, Op, OutboxColumns, OutboxEvent, RoutedHeaders,
};

use crate::registry::{HandlerOutcome, Registry};
use crate::store::{Store, Write};

/// Headers added to a per-handler dead-letter record (besides the original's).
pub mod headers {
    /// The handler that gave up on the event.
    pub const HANDLER: &str = "clustera.handler";
    /// Why.
    pub const ERROR: &str = "clustera.error";
    /// The event's id.
    pub const EVENT_ID: &str = "clustera.event.id";
    /// Where the message came from.
    pub const ORIGINAL_TOPIC: &str = "clustera.original.topic";
    /// Its partition.
    pub const ORIGINAL_PARTITION: &str = "clustera.original.partition";
    /// Its offset.
    pub const ORIGINAL_OFFSET: &str = "clustera.original.offset";
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
    /// Attempts before a handler whose store writes keep failing is dead-lettered alone.
    max_attempts: u32,
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
            max_attempts: 5,
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

    fn dead_letter(msg: &Message, event: &OutboxEvent, handler: &str, error: &str) -> Record {
        let mut r = Record::to(format!("{}.dlq", msg.topic())).maybe_key(msg.key_bytes());
        if let Some(v) = msg.value_bytes() {
            r = r.value(v);
        }
        for h in msg.headers() {
            if let Some(v) = &h.value {
                r = r.header(h.name.clone(), v.clone());
            }
        }
        r.header(headers::HANDLER, handler.to_owned())
            .header(headers::ERROR, error.to_owned())
            .header(headers::EVENT_ID, event.event_id.clone())
            .header(headers::ORIGINAL_TOPIC, msg.topic().to_owned())
            .header(headers::ORIGINAL_PARTITION, msg.partition().to_string())
            .header(headers::ORIGINAL_OFFSET, msg.offset().to_string())
    }
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
            Ok(event) => self.handle(msg, ctx, event).await,
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
            tracing::warn!(error = %e, batch = messages.len(),
                "batch write failed; processing its events one by one");
            return Vec::new();
        }
        for (i, event, plan) in &planned {
            for (handler, ops) in plan {
                if let Err(e) = ops {
                    let error = e.to_string();
                    tracing::error!(event_id = %event.event_id, handler, error, "handler dead-lettered");
                    contexts[*i].send(Self::dead_letter(&messages[*i], event, handler, &error));
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
    async fn handle(
        &self,
        msg: &Message,
        ctx: &mut Context,
        event: OutboxEvent,
    ) -> Result<Outcome, KernelError> {
        if self.registry.handlers_for(&event.event_type).is_empty() {
            return Ok(no_handler(&event));
        }
        let outcomes = self.registry.dispatch(&*self.store, &event).await;
        let failed: Vec<(&str, &str)> = outcomes
            .iter()
            .filter_map(|o| match o {
                HandlerOutcome::Failed { handler, error } => {
                    Some((handler.as_str(), error.as_str()))
                }
                _ => None,
            })
            .collect();
        // A store failure is transient: retry the message; handlers already applied are
        // skipped by their markers. Past the attempts, each failed handler is dead-lettered.
        if !failed.is_empty() && ctx.attempt() < self.max_attempts {
            tracing::warn!(event_id = %event.event_id, failed = ?failed, "handler writes failed; retrying");
            return Ok(Outcome::retry());
        }
        for o in &outcomes {
            match o {
                HandlerOutcome::Invalid { handler, error }
                | HandlerOutcome::Failed { handler, error } => {
                    tracing::error!(event_id = %event.event_id, handler, error, "handler dead-lettered");
                    ctx.send(Self::dead_letter(msg, &event, handler, error));
                }
                HandlerOutcome::Applied(_) | HandlerOutcome::AlreadyApplied(_) => {}
            }
        }
        Ok(Outcome::Ack)
    }
}
