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
//!
//! # Input forms
//!
//! - Debezium's raw change events of the outbox table (Clustera's relay, or a Debezium
//!   PostgreSQL connector), with or without the `{schema, payload}` wrapper. The row is read
//!   with the configured columns ([`ProcessorSettings::columns`], Clustera's seed table by
//!   default) or, when its event-id and event-type columns are not in the row, with the
//!   standard columns of Debezium's outbox (`id`, `aggregatetype`, `aggregateid`, `type`,
//!   `payload`). Snapshot reads (`op: r`) are processed like inserts (the markers absorb a
//!   row seen twice); deletes are skipped.
//! - The Outbox Event Router's form, recognised by its event-id header (`id`): key the
//!   aggregate id, value the payload (escaped or expanded JSON), the aggregate type from the
//!   topic (`outbox.event.<type>`) or a header; the event type from a header (`eventType`),
//!   else a payload field if configured, else the aggregate type.
//! - Tombstones (null values, raw or routed) are skipped.

use std::sync::Arc;

use clustera::infra::env::{ConfigError, Vars};
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
    /// Deletes are skipped (an outbox row deleted after relaying is cleanup, not an event);
    /// snapshot reads are processed: the relay's initial snapshot sends rows that were never
    /// relayed, and a row already applied changes nothing (its markers).
    fn default() -> Self {
        Self {
            deletes: true,
            snapshots: false,
        }
    }
}

/// How the processor reads its input: the outbox table's column names (raw change events),
/// the Outbox Event Router's header names (routed records) and what it skips. Read from the
/// environment by [`from_env`](Self::from_env):
///
/// | Variable | Default | Meaning |
/// |---|---|---|
/// | `CLUSTERA_OUTBOX_COLUMN_EVENT_ID` | `event_id` | the event's unique id |
/// | `CLUSTERA_OUTBOX_COLUMN_AGGREGATE_ID` | `aggregate_id` | the aggregate's id |
/// | `CLUSTERA_OUTBOX_COLUMN_AGGREGATE_TYPE` | `aggregate_type` | the aggregate's type |
/// | `CLUSTERA_OUTBOX_COLUMN_EVENT_TYPE` | `event_type` | the event's type (selects the handlers) |
/// | `CLUSTERA_OUTBOX_COLUMN_PAYLOAD` | `payload` | the event's data (json/jsonb) |
/// | `CLUSTERA_OUTBOX_COLUMN_STATUS` | `status` | optional |
/// | `CLUSTERA_OUTBOX_COLUMN_CREATED_AT` | `created_at` | optional |
/// | `CLUSTERA_OUTBOX_ROUTER_HEADER_EVENT_ID` | `id` | routed form: the event-id header |
/// | `CLUSTERA_OUTBOX_ROUTER_HEADER_EVENT_TYPE` | `eventType` | routed form: the event-type header |
/// | `CLUSTERA_OUTBOX_ROUTER_HEADER_AGGREGATE_TYPE` | unset: the topic's last part | routed form: the aggregate-type header |
/// | `CLUSTERA_OUTBOX_ROUTER_EVENT_TYPE_FIELD` | unset | routed form: the payload field with the event type, when there is no header |
/// | `CLUSTERA_OUTBOX_SKIP_DELETES` | `true` | skip `op: d` |
/// | `CLUSTERA_OUTBOX_SKIP_SNAPSHOTS` | `false` | skip snapshot reads (`op: r`) |
///
/// Rows that lack the configured event-id or event-type column are read with Debezium's
/// standard outbox columns (`id`, `aggregateid`, `aggregatetype`, `type`, `payload`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcessorSettings {
    /// Column names of the outbox table.
    pub columns: OutboxColumns,
    /// Header names of the routed form.
    pub routed: RoutedHeaders,
    /// What is skipped.
    pub skip: SkipPolicy,
}

impl ProcessorSettings {
    /// Reads the settings through `var` (unset variables keep their defaults).
    pub fn from_vars(var: Vars<'_>) -> Result<Self, ConfigError> {
        let d = Self::default();
        let name = |variable: &str, default: &str| var(variable).unwrap_or_else(|| default.into());
        let flag = |variable: &str, default: bool| -> Result<bool, ConfigError> {
            match var(variable).as_deref() {
                None => Ok(default),
                Some("true" | "1" | "yes") => Ok(true),
                Some("false" | "0" | "no") => Ok(false),
                Some(other) => Err(ConfigError::invalid(
                    variable,
                    format!("{other:?} is not true or false"),
                )),
            }
        };
        let c = &d.columns;
        Ok(Self {
            columns: OutboxColumns {
                event_id: name("CLUSTERA_OUTBOX_COLUMN_EVENT_ID", &c.event_id),
                aggregate_id: name("CLUSTERA_OUTBOX_COLUMN_AGGREGATE_ID", &c.aggregate_id),
                aggregate_type: name("CLUSTERA_OUTBOX_COLUMN_AGGREGATE_TYPE", &c.aggregate_type),
                event_type: name("CLUSTERA_OUTBOX_COLUMN_EVENT_TYPE", &c.event_type),
                payload: name("CLUSTERA_OUTBOX_COLUMN_PAYLOAD", &c.payload),
                status: name("CLUSTERA_OUTBOX_COLUMN_STATUS", &c.status),
                created_at: name("CLUSTERA_OUTBOX_COLUMN_CREATED_AT", &c.created_at),
            },
            routed: RoutedHeaders {
                event_id: name("CLUSTERA_OUTBOX_ROUTER_HEADER_EVENT_ID", &d.routed.event_id),
                event_type: name(
                    "CLUSTERA_OUTBOX_ROUTER_HEADER_EVENT_TYPE",
                    &d.routed.event_type,
                ),
                event_type_field: var("CLUSTERA_OUTBOX_ROUTER_EVENT_TYPE_FIELD"),
                aggregate_type: var("CLUSTERA_OUTBOX_ROUTER_HEADER_AGGREGATE_TYPE"),
            },
            skip: SkipPolicy {
                deletes: flag("CLUSTERA_OUTBOX_SKIP_DELETES", d.skip.deletes)?,
                snapshots: flag("CLUSTERA_OUTBOX_SKIP_SNAPSHOTS", d.skip.snapshots)?,
            },
        })
    }

    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&clustera::infra::env::env_var)
    }
}

/// Routes outbox events to the registry's handlers and writes through `store`.
pub struct OutboxProcessor<S> {
    registry: Registry,
    store: Arc<S>,
    /// The configured columns, then Debezium's standard ones.
    mappings: [OutboxColumns; 2],
    routed: RoutedHeaders,
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
            mappings: [OutboxColumns::default(), OutboxColumns::debezium()],
            routed: RoutedHeaders::default(),
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

    /// Reads the outbox table's columns, the routed form's headers and the skip policy from
    /// `settings` ([`ProcessorSettings::from_env`]).
    pub fn with_settings(mut self, settings: ProcessorSettings) -> Self {
        self.mappings[0] = settings.columns;
        self.routed = settings.routed;
        self.skip = settings.skip;
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
        // A null value is a tombstone in either form: Debezium's after a delete, or the
        // router's for an empty payload (`route.tombstone.on.empty.payload`).
        if msg.value().is_none() {
            return Ok(Err(Outcome::skip("tombstone")));
        }
        match self.routed_event(msg)? {
            // The router's "delete" (a null or empty payload) when it was not told to send a
            // tombstone for it: nothing to apply.
            Some(event) if event.payload.is_null() => {
                Ok(Err(Outcome::skip("routed record with an empty payload")))
            }
            Some(event) => Ok(Ok(event)),
            None => self.change_event(msg),
        }
    }

    /// The Outbox Event Router's form: recognised by its event-id header, the only header the
    /// router writes by default (a raw change event has none).
    fn routed_event(&self, msg: &Message) -> Result<Option<OutboxEvent>, KernelError> {
        let names = &self.routed;
        if msg.header(&names.event_id).is_none() {
            return Ok(None);
        }
        let headers: Vec<(&str, &[u8])> = msg
            .headers()
            .iter()
            .filter_map(|h| Some((h.name.as_str(), h.value.as_deref()?)))
            .collect();
        decode_routed(msg.topic(), msg.key(), msg.value(), &headers, names)
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
        Ok(OutboxEvent::from_change_any(&change, &self.mappings)
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    use clustera::testing::TestDriver;
    use serde_json::json;

    use super::*;
    use crate::handler::{DocOp, Handler, HandlerError};
    use crate::store::StoreError;

    /// Markers in memory.
    #[derive(Default)]
    struct Markers(Mutex<HashSet<(String, String)>>);

    impl Store for Markers {
        async fn apply(
            &self,
            handler: &str,
            event_id: &str,
            _ops: &[DocOp],
        ) -> Result<bool, StoreError> {
            let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
            Ok(seen.insert((handler.to_owned(), event_id.to_owned())))
        }
    }

    /// Remembers every event it is given.
    #[derive(Default)]
    struct Seen(Mutex<Vec<OutboxEvent>>);

    impl Handler for Seen {
        fn name(&self) -> &str {
            "seen"
        }
        fn handle(&self, event: &OutboxEvent) -> Result<Vec<DocOp>, HandlerError> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(event.clone());
            Ok(Vec::new())
        }
    }

    fn processor(
        types: &[&str],
        settings: ProcessorSettings,
    ) -> (OutboxProcessor<Markers>, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let mut registry = Registry::new();
        for t in types {
            registry.register(t, seen.clone());
        }
        let p =
            OutboxProcessor::new(registry, Arc::new(Markers::default())).with_settings(settings);
        (p, seen)
    }

    fn taken(seen: &Seen) -> Vec<OutboxEvent> {
        std::mem::take(&mut *seen.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The raw change event of Debezium's documented outbox example (standard columns).
    fn debezium_raw(op: &str) -> Vec<u8> {
        json!({
            "before": null,
            "after": {
                "id": "406c07f3-26f0-4eea-a50c-109940064b8f",
                "aggregateid": "1",
                "aggregatetype": "Order",
                "payload": "{\"id\": 1, \"type\": \"OrderCreated\", \"customerId\": 123}",
                "timestamp": 1_556_890_294_344i64,
                "type": "OrderCreated"
            },
            "source": {"connector": "postgresql", "name": "dbserver1", "schema": "inventory",
                       "table": "outboxevent", "snapshot": if op == "r" { "true" } else { "false" }},
            "op": op,
            "ts_ms": 1_556_890_294_484i64
        })
        .to_string()
        .into_bytes()
    }

    fn routed(value: Option<&[u8]>) -> Message {
        let m = Message::new("outbox.event.Order", 0, 7)
            .with_key(br#""1""#.to_vec())
            .with_header("id", b"406c07f3-26f0-4eea-a50c-109940064b8f".to_vec());
        match value {
            Some(v) => m.with_value(v.to_vec()),
            None => m,
        }
    }

    const ORDER: &[u8] = br#"{"id":1,"type":"OrderCreated","customerId":123}"#;

    #[tokio::test]
    async fn a_debezium_connectors_standard_outbox_columns() {
        let (p, seen) = processor(&["OrderCreated"], ProcessorSettings::default());
        let mut driver = TestDriver::new(p);
        let run = driver.process_value(Some(b"k"), &debezium_raw("c")).await;
        assert_eq!(run.outcome, Outcome::Ack, "{:?}", run.error);
        let events = taken(&seen);
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(
            (
                e.event_id.as_str(),
                e.aggregate_id.as_str(),
                e.aggregate_type.as_str(),
                e.event_type.as_str()
            ),
            (
                "406c07f3-26f0-4eea-a50c-109940064b8f",
                "1",
                "Order",
                "OrderCreated"
            )
        );
        assert_eq!(
            e.payload,
            json!({"id": 1, "type": "OrderCreated", "customerId": 123})
        );
    }

    #[tokio::test]
    async fn snapshot_reads_are_processed_unless_skipped() {
        let (p, seen) = processor(&["OrderCreated"], ProcessorSettings::default());
        let run = TestDriver::new(p)
            .process_value(None, &debezium_raw("r"))
            .await;
        assert_eq!(run.outcome, Outcome::Ack);
        assert_eq!(taken(&seen).len(), 1);

        let vars =
            |name: &str| (name == "CLUSTERA_OUTBOX_SKIP_SNAPSHOTS").then(|| "true".to_owned());
        let (p, seen) = processor(
            &["OrderCreated"],
            ProcessorSettings::from_vars(&vars).unwrap(),
        );
        let run = TestDriver::new(p)
            .process_value(None, &debezium_raw("r"))
            .await;
        assert_eq!(run.outcome, Outcome::skip("snapshot read"));
        assert!(taken(&seen).is_empty());
    }

    #[tokio::test]
    async fn the_router_form_with_only_the_id_header() {
        // No event-type header: the aggregate type (from the topic) selects the handlers.
        let (p, seen) = processor(&["Order"], ProcessorSettings::default());
        let run = TestDriver::new(p).process(&routed(Some(ORDER))).await;
        assert_eq!(run.outcome, Outcome::Ack, "{:?}", run.error);
        let events = taken(&seen);
        assert_eq!(events.len(), 1);
        assert_eq!(
            (
                events[0].event_id.as_str(),
                events[0].aggregate_id.as_str(),
                events[0].event_type.as_str()
            ),
            ("406c07f3-26f0-4eea-a50c-109940064b8f", "1", "Order")
        );
        assert_eq!(events[0].payload["customerId"], 123);

        // Told which payload field carries the event type.
        let vars = |name: &str| {
            (name == "CLUSTERA_OUTBOX_ROUTER_EVENT_TYPE_FIELD").then(|| "type".to_owned())
        };
        let (p, seen) = processor(
            &["OrderCreated"],
            ProcessorSettings::from_vars(&vars).unwrap(),
        );
        let run = TestDriver::new(p).process(&routed(Some(ORDER))).await;
        assert_eq!(run.outcome, Outcome::Ack, "{:?}", run.error);
        assert_eq!(taken(&seen)[0].event_type, "OrderCreated");

        // The router's escaped form (a JSON string) reads the same.
        let escaped = serde_json::to_vec(&String::from_utf8(ORDER.to_vec()).unwrap()).unwrap();
        let (p, seen) = processor(&["Order"], ProcessorSettings::default());
        let run = TestDriver::new(p).process(&routed(Some(&escaped))).await;
        assert_eq!(run.outcome, Outcome::Ack, "{:?}", run.error);
        assert_eq!(taken(&seen)[0].payload["customerId"], 123);
    }

    #[tokio::test]
    async fn tombstones_are_skipped_in_either_form() {
        let (p, seen) = processor(&["Order", "OrderCreated"], ProcessorSettings::default());
        let mut driver = TestDriver::new(p);
        // The router's tombstone for an empty payload: the id header and a null value.
        let run = driver.process(&routed(None)).await;
        assert_eq!(run.outcome, Outcome::skip("tombstone"));
        // Debezium's tombstone after a delete: no headers, a null value.
        let run = driver
            .process(&Message::new("postgres.activity.event_outbox", 0, 1).with_key(b"k".to_vec()))
            .await;
        assert_eq!(run.outcome, Outcome::skip("tombstone"));
        // The router without its tombstone option writes a JSON null for an empty payload.
        let run = driver.process(&routed(Some(b"null"))).await;
        assert_eq!(
            run.outcome,
            Outcome::skip("routed record with an empty payload")
        );
        assert!(taken(&seen).is_empty());
        assert!(run.dead_letters.is_empty());
    }

    #[tokio::test]
    async fn column_names_from_the_environment() {
        let vars = |name: &str| {
            let v = match name {
                "CLUSTERA_OUTBOX_COLUMN_EVENT_ID" => "uid",
                "CLUSTERA_OUTBOX_COLUMN_AGGREGATE_ID" => "entity",
                "CLUSTERA_OUTBOX_COLUMN_AGGREGATE_TYPE" => "entity_kind",
                "CLUSTERA_OUTBOX_COLUMN_EVENT_TYPE" => "kind",
                "CLUSTERA_OUTBOX_COLUMN_PAYLOAD" => "body",
                _ => return None,
            };
            Some(v.to_owned())
        };
        let settings = ProcessorSettings::from_vars(&vars).unwrap();
        assert_eq!(settings.columns.event_id, "uid");
        assert_eq!(settings.columns.created_at, "created_at");
        let (p, seen) = processor(&["Shipped"], settings);
        let value = json!({
            "before": null,
            "after": {"uid": "e1", "entity": "42", "entity_kind": "Parcel", "kind": "Shipped",
                      "body": "{\"to\": \"Lyon\"}"},
            "op": "c"
        });
        let run = TestDriver::new(p)
            .process_value(None, value.to_string().as_bytes())
            .await;
        assert_eq!(run.outcome, Outcome::Ack, "{:?}", run.error);
        let events = taken(&seen);
        assert_eq!(
            (
                events[0].event_id.as_str(),
                events[0].aggregate_id.as_str(),
                events[0].aggregate_type.as_str()
            ),
            ("e1", "42", "Parcel")
        );
        assert_eq!(events[0].payload, json!({"to": "Lyon"}));
    }

    /// What the relay's encoder writes for a seed outbox row, in each form, the processor
    /// reads back as the same event.
    #[tokio::test]
    async fn every_form_the_encoder_writes_is_processed() {
        use clustera_debezium::pgtype::oid;
        use clustera_debezium::{ColumnDef, OutputFormat, Relation, SourcePosition};

        let relation = Relation {
            schema: "activity".into(),
            table: "event_outbox".into(),
            columns: vec![
                ColumnDef::new("event_id", oid::UUID, -1).key(),
                ColumnDef::new("aggregate_id", oid::UUID, -1).not_null(),
                ColumnDef::new("aggregate_type", oid::TEXT, -1).not_null(),
                ColumnDef::new("event_type", oid::TEXT, -1).not_null(),
                ColumnDef::new("payload", oid::JSONB, -1).not_null(),
                ColumnDef::new("status", oid::TEXT, -1).not_null(),
                ColumnDef::new("created_at", oid::TIMESTAMPTZ, -1).not_null(),
            ],
        };
        let row: Vec<Option<String>> = [
            "8a4d2b1e-3f5c-4e7a-9b1d-2c3e4f5a6b7c",
            "11111111-2222-4333-8444-555555555555",
            "User",
            "UserCreated",
            r#"{"email": "test@example.com", "username": "testuser"}"#,
            "pending",
            "2024-01-15 10:30:00.123456+00",
        ]
        .iter()
        .map(|s| Some((*s).to_owned()))
        .collect();
        let forms: [&[(&str, &str)]; 4] = [
            &[("CLUSTERA_OUTBOX_KEY_COLUMN", "aggregate_id")],
            &[("CLUSTERA_OUTBOX_SCHEMAS", "true")],
            &[
                ("CLUSTERA_OUTBOX_FORMAT", "router"),
                ("CLUSTERA_OUTBOX_ROUTER_FIELD_EVENT_ID", "event_id"),
                ("CLUSTERA_OUTBOX_ROUTER_FIELD_EVENT_KEY", "aggregate_id"),
                ("CLUSTERA_OUTBOX_ROUTER_ROUTE_BY_FIELD", "aggregate_type"),
                (
                    "CLUSTERA_OUTBOX_ROUTER_ADDITIONAL_PLACEMENT",
                    "event_type:header:eventType",
                ),
            ],
            &[
                ("CLUSTERA_OUTBOX_FORMAT", "router"),
                ("CLUSTERA_OUTBOX_SCHEMAS", "true"),
                ("CLUSTERA_OUTBOX_ROUTER_EXPAND_JSON_PAYLOAD", "false"),
                ("CLUSTERA_OUTBOX_ROUTER_FIELD_EVENT_ID", "event_id"),
                ("CLUSTERA_OUTBOX_ROUTER_FIELD_EVENT_KEY", "aggregate_id"),
                ("CLUSTERA_OUTBOX_ROUTER_ROUTE_BY_FIELD", "aggregate_type"),
                (
                    "CLUSTERA_OUTBOX_ROUTER_ADDITIONAL_PLACEMENT",
                    "event_type:header:eventType",
                ),
            ],
        ];
        for vars in forms {
            let get = |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            };
            let record = OutputFormat::from_vars(get)
                .unwrap()
                .prepare(&relation)
                .unwrap()
                .encode(&row, &SourcePosition::default(), 0)
                .unwrap();
            let mut msg = Message::new(&record.topic, 0, 0);
            if let Some(k) = record.key {
                msg = msg.with_key(k);
            }
            if let Some(v) = record.value {
                msg = msg.with_value(v);
            }
            for (name, value) in record.headers {
                msg = msg.with_header(name, value.unwrap_or_default());
            }
            let (p, seen) = processor(&["UserCreated"], ProcessorSettings::default());
            let run = TestDriver::new(p).process(&msg).await;
            assert_eq!(run.outcome, Outcome::Ack, "{vars:?}: {:?}", run.error);
            let events = taken(&seen);
            assert_eq!(events.len(), 1, "{vars:?}");
            let e = &events[0];
            assert_eq!(
                (
                    e.event_id.as_str(),
                    e.aggregate_id.as_str(),
                    e.aggregate_type.as_str()
                ),
                (
                    "8a4d2b1e-3f5c-4e7a-9b1d-2c3e4f5a6b7c",
                    "11111111-2222-4333-8444-555555555555",
                    "User"
                ),
                "{vars:?}"
            );
            assert_eq!(
                e.payload,
                json!({"email": "test@example.com", "username": "testuser"}),
                "{vars:?}"
            );
        }
    }

    #[test]
    fn settings_defaults_and_errors_name_the_variable() {
        let none = |_: &str| None;
        let d = ProcessorSettings::from_vars(&none).unwrap();
        assert_eq!(d, ProcessorSettings::default());
        assert_eq!(
            d.skip,
            SkipPolicy {
                deletes: true,
                snapshots: false
            }
        );
        assert_eq!(d.routed.event_id, "id");
        assert_eq!(d.routed.event_type, "eventType");
        let bad =
            |name: &str| (name == "CLUSTERA_OUTBOX_SKIP_DELETES").then(|| "sometimes".to_owned());
        let e = ProcessorSettings::from_vars(&bad).unwrap_err();
        assert_eq!(e.variable, "CLUSTERA_OUTBOX_SKIP_DELETES");
        let routed = |name: &str| match name {
            "CLUSTERA_OUTBOX_ROUTER_HEADER_EVENT_ID" => Some("eventId".to_owned()),
            "CLUSTERA_OUTBOX_ROUTER_HEADER_AGGREGATE_TYPE" => Some("aggregateType".to_owned()),
            _ => None,
        };
        let s = ProcessorSettings::from_vars(&routed).unwrap();
        assert_eq!(s.routed.event_id, "eventId");
        assert_eq!(s.routed.aggregate_type.as_deref(), Some("aggregateType"));
    }
}
