//! The CDC outbox pipeline, both ends.
//!
//! - [`relay`]: committed inserts on the outbox table, streamed from PostgreSQL's logical
//!   replication slot in one walsender session (decoded by `clustera-pgoutput`), become
//!   Debezium-format change events on Kafka;
//! - the processor library: outbox events from Debezium-format change events are routed by
//!   event type to [`Handler`]s ([`Registry`]); each handler's read-model writes and its
//!   `(handler, event_id)` marker are committed in one PostgreSQL transaction ([`PgStore`]),
//!   so a redelivered event changes nothing. [`OutboxProcessor`] is the kernel; it retries and
//!   dead-letters through the runtime, classifying store failures by SQLSTATE;
//! - [`pg`]: that classification, and the connections and backoff with which the relay, the
//!   store's pool and the demo's load generator ride out a PostgreSQL restart.
//!
//! A sample domain (the Activity App) lives in `clustera-outbox-demo`.

pub mod fold;
mod handler;
pub mod pg;
mod processor;
mod registry;
pub mod relay;
mod store;
pub mod testing;

pub use handler::{field, DocOp, Handler, HandlerError};
pub use processor::{
    headers as dead_letter_headers, OutboxProcessor, ProcessorSettings, SkipPolicy,
};
pub use registry::{HandlerOutcome, Registry};
pub use store::{PgStore, PoolSettings, Store, StoreError};
