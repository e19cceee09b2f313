//! Handlers by event type. Each handler of an event runs on its own: one failing leaves the
//! others' writes in place, and its own failure is reported for it alone.

use std::collections::HashMap;
use std::sync::Arc;

use clustera::ErrorKind;
use clustera_debezium::OutboxEvent;

use crate::handler::{DocOp, Handler, HandlerError};
use crate::store::Store;

/// What happened to one handler of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerOutcome {
    /// Its writes and marker were committed.
    Applied(String),
    /// Its marker was already there: a redelivery, nothing changed.
    AlreadyApplied(String),
    /// The event is unusable for this handler (permanent: dead-letter it for this handler).
    Invalid {
        /// The handler.
        handler: String,
        /// Why.
        error: String,
    },
    /// The store failed; `kind` ([`Handler::classify`]) says whether retrying can help (the
    /// handlers that were applied are skipped by their markers when the event is retried).
    Failed {
        /// The handler.
        handler: String,
        /// Why.
        error: String,
        /// What the failure means for this handler.
        kind: ErrorKind,
    },
}

/// Event type → handlers.
#[derive(Default, Clone)]
pub struct Registry {
    handlers: HashMap<String, Vec<Arc<dyn Handler>>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for `event_type`; several handlers per type run independently.
    pub fn register(&mut self, event_type: &str, handler: Arc<dyn Handler>) -> &mut Self {
        self.handlers
            .entry(event_type.to_owned())
            .or_default()
            .push(handler);
        self
    }

    /// The handlers of `event_type`, in registration order.
    pub fn handlers_for(&self, event_type: &str) -> &[Arc<dyn Handler>] {
        self.handlers.get(event_type).map_or(&[], Vec::as_slice)
    }

    /// Each handler's writes for the event (no I/O), in registration order.
    pub fn plan(&self, event: &OutboxEvent) -> Vec<(String, Result<Vec<DocOp>, HandlerError>)> {
        self.handlers_for(&event.event_type)
            .iter()
            .map(|h| (h.name().to_owned(), h.handle(event)))
            .collect()
    }

    /// Runs every handler of the event against `store`, each on its own; a store failure is
    /// classified by its handler ([`Handler::classify`]).
    pub async fn dispatch<S: Store>(&self, store: &S, event: &OutboxEvent) -> Vec<HandlerOutcome> {
        let mut outcomes = Vec::new();
        for handler in self.handlers_for(&event.event_type) {
            let name = handler.name().to_owned();
            let outcome = match handler.handle(event) {
                Err(e) => HandlerOutcome::Invalid {
                    handler: name,
                    error: e.to_string(),
                },
                Ok(ops) => match store.apply(&name, &event.event_id, &ops).await {
                    Ok(true) => HandlerOutcome::Applied(name),
                    Ok(false) => HandlerOutcome::AlreadyApplied(name),
                    Err(e) => HandlerOutcome::Failed {
                        kind: handler.classify(&e),
                        handler: name,
                        // With its causes: the server's message is in the source.
                        error: clustera::infra::error_chain(&e),
                    },
                },
            };
            outcomes.push(outcome);
        }
        outcomes
    }
}
