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
//! ```
//! use clustera_debezium::pgtype::oid;
//! use clustera_debezium::{ColumnDef, OutputFormat, Relation, SourcePosition};
//!
//! // Once, from the environment (here a map): the format and its settings.
//! let vars = |name: &str| match name {
//!     "CLUSTERA_OUTBOX_TOPIC_PREFIX" => Some("shop".to_owned()),
//!     "CLUSTERA_OUTBOX_KEY_COLUMN" => Some("primary-key".to_owned()),
//!     _ => None,
//! };
//! let format = OutputFormat::from_vars(vars)?;
//! // Once per Relation message: the table's encoder.
//! let relation = Relation {
//!     schema: "public".into(),
//!     table: "outbox".into(),
//!     columns: vec![
//!         ColumnDef::new("id", oid::UUID, -1).key(),
//!         ColumnDef::new("payload", oid::JSONB, -1),
//!     ],
//! };
//! let encoder = format.prepare(&relation)?;
//! // Per inserted row: pgoutput's text values, where the row comes from, the time now.
//! let row = [Some("7f1c1d3e-0000-4000-8000-000000000001".to_owned()), Some(r#"{"a": 1}"#.to_owned())];
//! let source = SourcePosition { lsn: 24_023_128, tx_id: Some(555), commit_time_us: 1_559_033_904_863_123, ..Default::default() };
//! let record = encoder.encode(&row, &source, 1_559_033_904_863_841_257)?;
//! assert_eq!(record.topic, "shop.public.outbox");
//! assert_eq!(record.key.as_deref(), Some(br#"{"id":"7f1c1d3e-0000-4000-8000-000000000001"}"#.as_slice()));
//! # Ok::<(), clustera_debezium::EncodeError>(())
//! ```
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
