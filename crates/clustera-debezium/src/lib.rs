//! Debezium PostgreSQL change events and transactional-outbox events, decoded without I/O.
//!
//! Accepts what Debezium really emits: with or without the JSON converter's
//! `{schema, payload}` wrapper; every `op` (`c`, `u`, `d`, `r`, `t`, `m`); `source.snapshot` as
//! a string enum (current Debezium) or a boolean (old examples); `ts_ms`/`ts_us`/`ts_ns`;
//! tombstones; and the Outbox Event Router's output. Every malformed input is a typed
//! [`DecodeError`] naming what was wrong; nothing here panics.

mod envelope;
mod error;
mod outbox;
mod router;
mod source;
mod value;

pub use envelope::{decode, ChangeEvent, Decoded, Op};
pub use error::DecodeError;
pub use outbox::{OutboxColumns, OutboxEvent};
pub use router::{decode_routed, RoutedHeaders};
pub use source::{Snapshot, Source};
