//! Debezium PostgreSQL change events and transactional-outbox events, both directions, without
//! I/O.
//!
//! **Encoding** ([`OutputFormat`], [`ChangeEventEncoder`], [`RouterEncoder`]): an inserted or
//! snapshot-read row, as pgoutput describes it (a [`Relation`] of [`ColumnDef`]s and the text
//! of each value), becomes the record Debezium 3.4's PostgreSQL connector would write: the raw
//! change event (envelope, full source block, Debezium's type mapping, optionally the
//! `JsonConverter`'s `{schema, payload}` wrapper, topic `<prefix>.<schema>.<table>`) or the
//! Outbox Event Router's form. Bad values and unknown types are typed [`EncodeError`]s.
//!
//! **Decoding** accepts what Debezium really emits: with or without the JSON converter's
//! `{schema, payload}` wrapper; every `op` (`c`, `u`, `d`, `r`, `t`, `m`); `source.snapshot` as
//! a string enum (current Debezium) or a boolean (old examples); `ts_ms`/`ts_us`/`ts_ns`;
//! tombstones; and the Outbox Event Router's output. Every malformed input is a typed
//! [`DecodeError`] naming what was wrong; nothing here panics.

mod change;
mod connect;
mod envelope;
mod error;
mod json_out;
mod outbox;
mod output;
pub mod pgtype;
mod route;
mod router;
mod source;
mod value;

pub use change::{
    ChangeEventConfig, ChangeEventEncoder, KafkaRecord, RawKey, Relation, SnapshotRecord,
    SourcePosition, UnknownTypes, DEBEZIUM_VERSION,
};
pub use output::{OutputFormat, TableEncoder};
pub use pgtype::{ColumnDef, UserType};
pub use route::{AdditionalField, KeyConverter, Placement, RouterConfig, RouterEncoder};

pub use envelope::{decode, ChangeEvent, Decoded, Op};
pub use error::{DecodeError, EncodeError};
pub use outbox::{OutboxColumns, OutboxEvent};
pub use router::{decode_routed, RoutedHeaders};
pub use source::{Snapshot, Source};
