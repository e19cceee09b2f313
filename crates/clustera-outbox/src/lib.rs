//! The outbox pipeline's consuming side: outbox events from Debezium-format change events are
//! routed by event type to handlers; each handler's read-model writes and its
//! `(handler, event_id)` marker are committed in one PostgreSQL transaction, so a redelivered
//! event changes nothing.

pub mod activity;
pub mod fold;
mod handler;
pub mod load;
pub mod observe;
pub mod pgoutput;
mod processor;
mod registry;
pub mod relay;
pub mod report;
mod store;
pub mod testing;
pub mod wakeup;

pub use handler::{DocOp, Handler, HandlerError};
pub use processor::{headers as dead_letter_headers, OutboxProcessor, SkipPolicy};
pub use registry::{HandlerOutcome, Registry};
pub use store::{PgStore, Store, StoreError};
