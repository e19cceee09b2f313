//! The `source` block: where a change came from.

use serde_json::Value;

use crate::value::{self, Object};
use crate::DecodeError;

/// Whether a change was read by a snapshot. Current Debezium sends a string; old examples a
/// boolean; both are accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Snapshot {
    /// A streamed change (`"false"` or `false`).
    No,
    /// Part of a snapshot (`"true"`, `true`, `"first"`, `"first_in_data_collection"`, …).
    Yes,
    /// The last record of a snapshot (`"last"`, `"last_in_data_collection"`).
    Last,
    /// An incremental snapshot read (`"incremental"`).
    Incremental,
}

/// The fields of `source` a consumer uses; the rest is ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Source {
    /// `postgresql` for this connector.
    pub connector: Option<String>,
    /// The logical server name.
    pub name: Option<String>,
    /// Database.
    pub db: Option<String>,
    /// Schema.
    pub schema: Option<String>,
    /// Table.
    pub table: Option<String>,
    /// Transaction id.
    pub tx_id: Option<i64>,
    /// Log sequence number of the change.
    pub lsn: Option<i64>,
    /// When the change was made in the database (ms since the epoch).
    pub ts_ms: Option<i64>,
    /// Snapshot marker.
    pub snapshot: Option<Snapshot>,
}

impl Source {
    pub(crate) fn decode(o: &Object) -> Result<Self, DecodeError> {
        let snapshot = match value::optional(o, "snapshot") {
            None => None,
            Some(Value::Bool(b)) => Some(if *b { Snapshot::Yes } else { Snapshot::No }),
            Some(Value::String(s)) => Some(match s.as_str() {
                "false" => Snapshot::No,
                "true" | "first" | "first_in_data_collection" => Snapshot::Yes,
                "last" | "last_in_data_collection" => Snapshot::Last,
                "incremental" => Snapshot::Incremental,
                other => {
                    return Err(DecodeError::invalid(
                        "source.snapshot",
                        format!("unknown value {other:?}"),
                    ))
                }
            }),
            Some(other) => {
                return Err(DecodeError::invalid(
                    "source.snapshot",
                    format!("expected a string or boolean, got {}", value::kind(other)),
                ))
            }
        };
        Ok(Self {
            connector: value::optional_string(o, "connector")?,
            name: value::optional_string(o, "name")?,
            db: value::optional_string(o, "db")?,
            schema: value::optional_string(o, "schema")?,
            table: value::optional_string(o, "table")?,
            tx_id: value::optional_i64(o, "txId")?,
            lsn: value::optional_i64(o, "lsn")?,
            ts_ms: value::optional_i64(o, "ts_ms")?,
            snapshot,
        })
    }

    /// `schema.table`, as far as known.
    pub fn qualified_table(&self) -> String {
        match (&self.schema, &self.table) {
            (Some(s), Some(t)) => format!("{s}.{t}"),
            (None, Some(t)) => t.clone(),
            _ => "an unknown table".to_owned(),
        }
    }
}
