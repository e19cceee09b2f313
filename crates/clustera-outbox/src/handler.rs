//! A handler turns one event into document operations; it performs no I/O itself, so the
//! store can apply its writes and the processed-marker atomically.

use clustera::ErrorKind;
use clustera_debezium::OutboxEvent;
use serde_json::Value;

use crate::store::StoreError;

/// One write to a read model: a JSON document identified by collection and id.
#[derive(Debug, Clone, PartialEq)]
pub enum DocOp {
    /// Replaces (or creates) the document.
    Upsert {
        /// The read model.
        collection: &'static str,
        /// The document's id.
        id: String,
        /// The whole document.
        doc: Value,
    },
    /// Merges top-level fields into the document (creating it if absent).
    Merge {
        /// The read model.
        collection: &'static str,
        /// The document's id.
        id: String,
        /// The fields to set.
        patch: Value,
    },
    /// Adds `by` to a numeric field (absent counts as 0).
    Increment {
        /// The read model.
        collection: &'static str,
        /// The document's id.
        id: String,
        /// The field.
        field: &'static str,
        /// The amount.
        by: i64,
    },
    /// Appends `value` to an array field unless it is already there.
    AddToSet {
        /// The read model.
        collection: &'static str,
        /// The document's id.
        id: String,
        /// The array field.
        field: &'static str,
        /// The element.
        value: Value,
    },
}

/// Why a handler could not handle an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// The event lacks what the handler needs: retrying cannot help.
    #[error("invalid event: {0}")]
    Invalid(String),
}

/// Builds read-model writes for the event types it is registered for.
pub trait Handler: Send + Sync {
    /// A stable name: part of the processed-marker key.
    fn name(&self) -> &str;

    /// The writes for `event`.
    fn handle(&self, event: &OutboxEvent) -> Result<Vec<DocOp>, HandlerError>;

    /// What a store failure of this handler's writes means: by default
    /// [`StoreError::kind`], the rule of [`crate::pg`] (unavailable server: retried for as
    /// long as it lasts; serialization failure or deadlock: retried up to
    /// `CLUSTERA_MAX_ATTEMPTS`; constraint violation or invalid data: this handler's part of
    /// the event is dead-lettered at once). Override it to treat some failures of this
    /// handler otherwise, say a unique violation that only means "already there" as
    /// `Transient`, or a check the data may satisfy later.
    fn classify(&self, error: &StoreError) -> ErrorKind {
        error.kind()
    }
}

/// A required string field of the payload.
pub fn field<'a>(event: &'a OutboxEvent, name: &str) -> Result<&'a str, HandlerError> {
    event
        .payload
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| {
            HandlerError::Invalid(format!(
                "{}: payload has no string `{name}`",
                event.event_type
            ))
        })
}
