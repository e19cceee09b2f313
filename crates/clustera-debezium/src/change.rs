//! Encoding: an inserted (or snapshot-read) row as Debezium's PostgreSQL connector writes it,
//! the raw change event (this module) or the Outbox Event Router's record ([`crate::route`]).
//!
//! The target is Debezium 3.4's PostgreSQL connector with its defaults and Kafka Connect's
//! `JsonConverter` for keys and values: the envelope's fields in Debezium's order (`before`,
//! `after`, `source`, `transaction`, `op`, `ts_ms`, `ts_us`, `ts_ns`), the source block's in
//! its schema's order, and with `schemas.enable=true` the `{schema, payload}` wrapper with the
//! schemas Debezium declares. What is not reproduced: column defaults in the schema (Debezium
//! reads them from the catalog; pgoutput does not send them) and the `transaction` block
//! (`provide.transaction.metadata`, off by default, is always `null` here).

use crate::connect::Schema;
use std::fmt::Write as _;

use crate::json_out::{write_string, Json};
use crate::pgtype::{self, ColumnDef, Mapped};
use crate::EncodeError;

/// The Debezium version this encoder's output follows, written in `source.version` by default.
pub const DEBEZIUM_VERSION: &str = "3.4.3.Final";

/// Debezium's `SnapshotRecord`: where a row stands in a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotRecord {
    /// Streamed, not from a snapshot (`"false"`, the schema's default).
    #[default]
    False,
    /// Read by a snapshot (`"true"`).
    True,
    /// The first row of a snapshot (`"first"`).
    First,
    /// The first row of a table in a snapshot (`"first_in_data_collection"`).
    FirstInDataCollection,
    /// The last row of a table in a snapshot (`"last_in_data_collection"`).
    LastInDataCollection,
    /// The last row of a snapshot (`"last"`).
    Last,
    /// Read by an incremental snapshot (`"incremental"`).
    Incremental,
}

impl SnapshotRecord {
    fn as_str(self) -> &'static str {
        match self {
            SnapshotRecord::False => "false",
            SnapshotRecord::True => "true",
            SnapshotRecord::First => "first",
            SnapshotRecord::FirstInDataCollection => "first_in_data_collection",
            SnapshotRecord::LastInDataCollection => "last_in_data_collection",
            SnapshotRecord::Last => "last",
            SnapshotRecord::Incremental => "incremental",
        }
    }

    /// `op`: `c` for a streamed insert, `r` for a snapshot read.
    fn op(self) -> &'static str {
        match self {
            SnapshotRecord::False => "c",
            _ => "r",
        }
    }
}

/// Where a row comes from: what the replication stream (or the snapshot) says of it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourcePosition {
    /// LSN of the change (`source.lsn`, and the second element of `source.sequence`).
    pub lsn: u64,
    /// LSN of the last transaction committed before this one, if known (the first element of
    /// `source.sequence`).
    pub last_commit_lsn: Option<u64>,
    /// Transaction id (`source.txId`).
    pub tx_id: Option<i64>,
    /// Commit time of the transaction (or the snapshot's read time), microseconds since the
    /// Unix epoch (`source.ts_ms`, `ts_us`, `ts_ns`).
    pub commit_time_us: i64,
    /// `source.xmin` (Debezium fills it only with `xmin.fetch.interval.ms`; usually `None`).
    pub xmin: Option<i64>,
    /// Snapshot marker; anything but `False` makes the event a read (`op: r`).
    pub snapshot: SnapshotRecord,
}

/// The captured table, as pgoutput's Relation message (and the catalog) describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// Schema (namespace).
    pub schema: String,
    /// Table.
    pub table: String,
    /// Columns in order; a row's values come in the same order.
    pub columns: Vec<ColumnDef>,
}

/// One record to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaRecord {
    /// Topic.
    pub topic: String,
    /// Key bytes (`None`: a null key).
    pub key: Option<Vec<u8>>,
    /// Value bytes (`None`: a tombstone).
    pub value: Option<Vec<u8>>,
    /// Headers in order; a `None` value is a null header.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Record timestamp in ms, if the format sets one (the Outbox Event Router does).
    pub timestamp_ms: Option<i64>,
}

/// What to do with a column whose type the encoder does not map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UnknownTypes {
    /// Refuse the table (a clear error when the relation is prepared).
    #[default]
    Fail,
    /// Leave the column out of the event, as Debezium does with
    /// `include.unknown.datatypes=false` (its default).
    Omit,
}

/// The key of a raw change event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RawKey {
    /// Debezium's: a struct of the replica identity's key columns (`null` when there are
    /// none), through the converter like the value.
    #[default]
    PrimaryKey,
    /// Clustera's choice for an outbox: this column's text as the key, so the events of one
    /// aggregate share a partition (a null value makes a null key).
    Column(String),
}

/// Settings of the raw change-event form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEventConfig {
    /// `topic.prefix`: the topic's first part and `source.name`.
    pub topic_prefix: String,
    /// The whole topic name, instead of `<prefix>.<schema>.<table>` (Clustera's option;
    /// Debezium would need a routing transformation).
    pub topic: Option<String>,
    /// The database name (`source.db`).
    pub database: String,
    /// `source.version`.
    pub version: String,
    /// The `JsonConverter`'s `schemas.enable`, for keys and values alike.
    pub schemas: bool,
    /// What keys the record.
    pub key: RawKey,
    /// Columns of unknown types.
    pub unknown_types: UnknownTypes,
}

impl ChangeEventConfig {
    /// The topic of `schema.table`'s events: the configured one, else
    /// `<prefix>.<schema>.<table>` with the characters Kafka refuses replaced by `_`.
    pub fn topic_for(&self, schema: &str, table: &str) -> String {
        match &self.topic {
            Some(topic) => topic.clone(),
            None => sanitize_topic(&format!("{}.{schema}.{table}", self.topic_prefix)),
        }
    }
}

impl Default for ChangeEventConfig {
    fn default() -> Self {
        Self {
            topic_prefix: "postgres".into(),
            topic: None,
            database: "postgres".into(),
            version: DEBEZIUM_VERSION.into(),
            schemas: false,
            key: RawKey::default(),
            unknown_types: UnknownTypes::default(),
        }
    }
}

/// Debezium's topic-name sanitiser: characters Kafka refuses become `_`.
pub(crate) fn sanitize_topic(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A column with its mapping; `None` for an omitted column of an unknown type.
#[derive(Debug, Clone)]
pub(crate) struct MappedColumn {
    pub def: ColumnDef,
    pub mapped: Option<Mapped>,
}

/// Maps every column of `relation`, refusing or omitting unknown types.
pub(crate) fn map_columns(
    relation: &Relation,
    unknown: UnknownTypes,
) -> Result<Vec<MappedColumn>, EncodeError> {
    relation
        .columns
        .iter()
        .map(|def| {
            let mapped = pgtype::mapping(def)?;
            if mapped.is_none() && unknown == UnknownTypes::Fail {
                return Err(EncodeError::UnsupportedType {
                    column: def.name.clone(),
                    type_oid: def.type_oid,
                    why: "describe it (an enum) or leave the column out of the publication".into(),
                });
            }
            Ok(MappedColumn {
                def: def.clone(),
                mapped,
            })
        })
        .collect()
}

/// The `JsonConverter` output for `payload` under `schema` (pre-rendered), with or without
/// the `{schema, payload}` wrapper.
pub(crate) fn converted(schema_text: Option<&str>, payload: &Json) -> Vec<u8> {
    match schema_text {
        None => payload.to_text().into_bytes(),
        Some(schema) => {
            let payload = payload.to_text();
            let mut out = String::with_capacity(schema.len() + payload.len() + 24);
            out.push_str("{\"schema\":");
            out.push_str(schema);
            out.push_str(",\"payload\":");
            out.push_str(&payload);
            out.push('}');
            out.into_bytes()
        }
    }
}

/// Encodes rows of one table as raw change events: prepared once per relation, so a row only
/// costs its values.
#[derive(Debug, Clone)]
pub struct ChangeEventEncoder {
    config: ChangeEventConfig,
    relation: Relation,
    columns: Vec<MappedColumn>,
    topic: String,
    /// Rendered envelope schema, when schemas are enabled.
    value_schema: Option<String>,
    /// Rendered key schema (primary-key keys with schemas enabled).
    key_schema: Option<String>,
    /// Index of the key column (`RawKey::Column`).
    key_column: Option<usize>,
}

impl ChangeEventEncoder {
    /// Prepares the encoding of `relation`'s rows.
    pub fn new(config: ChangeEventConfig, relation: Relation) -> Result<Self, EncodeError> {
        let columns = map_columns(&relation, config.unknown_types)?;
        let topic = config.topic_for(&relation.schema, &relation.table);
        let record_prefix = format!(
            "{}.{}.{}",
            config.topic_prefix, relation.schema, relation.table
        );
        let key_column = match &config.key {
            RawKey::PrimaryKey => None,
            RawKey::Column(name) => Some(
                relation
                    .columns
                    .iter()
                    .position(|c| &c.name == name)
                    .ok_or_else(|| EncodeError::MissingColumn {
                        role: "key",
                        column: name.clone(),
                        table: format!("{}.{}", relation.schema, relation.table),
                    })?,
            ),
        };
        let value_schema = config.schemas.then(|| {
            envelope_schema(&record_prefix, &columns)
                .to_json()
                .to_text()
        });
        let key_schema = (config.schemas && config.key == RawKey::PrimaryKey)
            .then(|| key_schema(&record_prefix, &columns))
            .flatten()
            .map(|s| s.to_json().to_text());
        Ok(Self {
            config,
            relation,
            columns,
            topic,
            value_schema,
            key_schema,
            key_column,
        })
    }

    /// The topic: `<prefix>.<schema>.<table>`, unless configured whole.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The change event for one inserted (or snapshot-read) row, `values` in column order
    /// (text as pgoutput sends it, `None` for NULL). `emitted_at_ns` is the envelope's
    /// `ts_ms`/`ts_us`/`ts_ns`: when the event was produced, nanoseconds since the epoch.
    pub fn encode(
        &self,
        values: &[Option<String>],
        source: &SourcePosition,
        emitted_at_ns: i64,
    ) -> Result<KafkaRecord, EncodeError> {
        if self.columns.len() != values.len() {
            return Err(EncodeError::ColumnCount {
                columns: self.columns.len(),
                values: values.len(),
            });
        }
        // Written straight to text rather than through a value tree: this runs for every
        // relayed row.
        let mut out = String::with_capacity(self.value_capacity(values));
        if let Some(schema) = &self.value_schema {
            out.push_str("{\"schema\":");
            out.push_str(schema);
            out.push_str(",\"payload\":");
        }
        out.push_str("{\"before\":null,\"after\":");
        self.write_row(&mut out, values, |_| true)?;
        out.push_str(",\"source\":");
        self.write_source(&mut out, source);
        out.push_str(",\"transaction\":null,\"op\":\"");
        out.push_str(source.snapshot.op());
        out.push_str("\",");
        write_times(&mut out, emitted_at_ns);
        out.push('}');
        if self.value_schema.is_some() {
            out.push('}');
        }
        let key = match (&self.config.key, self.key_column) {
            (RawKey::Column(_), Some(i)) => values[i].clone().map(String::into_bytes),
            _ if !self.columns.iter().any(|c| c.def.key && c.mapped.is_some()) => None,
            _ => {
                let mut key = String::new();
                if let Some(schema) = &self.key_schema {
                    key.push_str("{\"schema\":");
                    key.push_str(schema);
                    key.push_str(",\"payload\":");
                }
                self.write_row(&mut key, values, |c| c.def.key)?;
                if self.key_schema.is_some() {
                    key.push('}');
                }
                Some(key.into_bytes())
            }
        };
        Ok(KafkaRecord {
            topic: self.topic.clone(),
            key,
            value: Some(out.into_bytes()),
            headers: Vec::new(),
            timestamp_ms: None,
        })
    }

    /// A guess at the value's size, so the text is allocated once.
    fn value_capacity(&self, values: &[Option<String>]) -> usize {
        let text: usize = values.iter().flatten().map(|v| v.len() + 8).sum();
        let names: usize = self.columns.iter().map(|c| c.def.name.len() + 4).sum();
        text + names + 512 + self.value_schema.as_ref().map_or(0, String::len)
    }

    /// The row's columns that `include` selects, as a JSON object.
    fn write_row(
        &self,
        out: &mut String,
        values: &[Option<String>],
        include: impl Fn(&MappedColumn) -> bool,
    ) -> Result<(), EncodeError> {
        out.push('{');
        let mut first = true;
        for (column, value) in self.columns.iter().zip(values) {
            let Some(mapped) = &column.mapped else {
                continue;
            };
            if !include(column) {
                continue;
            }
            if !first {
                out.push(',');
            }
            first = false;
            write_string(out, &column.def.name);
            out.push(':');
            match value {
                None => out.push_str("null"),
                Some(text) => {
                    mapped
                        .write_value(text, out)
                        .map_err(|problem| EncodeError::InvalidValue {
                            column: column.def.name.clone(),
                            problem,
                        })?
                }
            }
        }
        out.push('}');
        Ok(())
    }

    /// The source block, its fields in the order of Debezium's PostgreSQL source schema.
    fn write_source(&self, out: &mut String, s: &SourcePosition) {
        out.push_str("{\"version\":");
        write_string(out, &self.config.version);
        out.push_str(",\"connector\":\"postgresql\",\"name\":");
        write_string(out, &self.config.topic_prefix);
        let ns = s.commit_time_us.saturating_mul(1_000);
        let _ = write!(
            out,
            ",\"ts_ms\":{},\"snapshot\":\"",
            ns.div_euclid(1_000_000)
        );
        out.push_str(s.snapshot.as_str());
        out.push_str("\",\"db\":");
        write_string(out, &self.config.database);
        // A JSON array of two strings (last commit LSN, this LSN), itself carried as a string.
        out.push_str(",\"sequence\":\"[");
        match s.last_commit_lsn {
            Some(lsn) => {
                let _ = write!(out, "\\\"{lsn}\\\"");
            }
            None => out.push_str("null"),
        }
        let _ = write!(out, ",\\\"{}\\\"]\"", s.lsn);
        let _ = write!(
            out,
            ",\"ts_us\":{},\"ts_ns\":{},\"schema\":",
            ns.div_euclid(1_000),
            ns
        );
        write_string(out, &self.relation.schema);
        out.push_str(",\"table\":");
        write_string(out, &self.relation.table);
        out.push_str(",\"txId\":");
        write_optional(out, s.tx_id);
        // An LSN is below 2^63 in practice; Debezium writes it as a Java long too.
        let _ = write!(out, ",\"lsn\":{},\"xmin\":", s.lsn as i64);
        write_optional(out, s.xmin);
        out.push('}');
    }
}

fn write_optional(out: &mut String, v: Option<i64>) {
    match v {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("null"),
    }
}

/// `"ts_ms":…,"ts_us":…,"ts_ns":…` of a time in nanoseconds (flooring, as Debezium's
/// arithmetic on an `Instant` does).
fn write_times(out: &mut String, ns: i64) {
    let _ = write!(
        out,
        "\"ts_ms\":{},\"ts_us\":{},\"ts_ns\":{}",
        ns.div_euclid(1_000_000),
        ns.div_euclid(1_000),
        ns
    );
}

/// The struct of a row's columns (`<prefix>.<schema>.<table>.Value`).
pub(crate) fn row_schema(record_prefix: &str, columns: &[MappedColumn]) -> Schema {
    Schema::structure(
        Some(format!("{record_prefix}.Value")),
        columns
            .iter()
            .filter_map(|c| {
                let m = c.mapped.as_ref()?;
                Some((c.def.name.clone(), m.schema(c.def.optional)))
            })
            .collect(),
    )
    .optional()
}

fn key_schema(record_prefix: &str, columns: &[MappedColumn]) -> Option<Schema> {
    let fields: Vec<(String, Schema)> = columns
        .iter()
        .filter(|c| c.def.key)
        .filter_map(|c| Some((c.def.name.clone(), c.mapped.as_ref()?.schema(false))))
        .collect();
    (!fields.is_empty()).then(|| Schema::structure(Some(format!("{record_prefix}.Key")), fields))
}

/// `io.debezium.connector.postgresql.Source`, version 1 (Debezium 3.4).
fn source_schema() -> Schema {
    let string = || Schema::primitive("string");
    let int64 = || Schema::primitive("int64");
    let mut snapshot = Schema::named("string", "io.debezium.data.Enum")
        .parameter(
            "allowed",
            "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental",
        )
        .optional();
    snapshot.default = Some(Json::str("false"));
    Schema::structure(
        Some("io.debezium.connector.postgresql.Source".into()),
        vec![
            ("version".into(), string()),
            ("connector".into(), string()),
            ("name".into(), string()),
            ("ts_ms".into(), int64()),
            ("snapshot".into(), snapshot),
            ("db".into(), string()),
            ("sequence".into(), string().optional()),
            ("ts_us".into(), int64().optional()),
            ("ts_ns".into(), int64().optional()),
            ("schema".into(), string()),
            ("table".into(), string()),
            ("txId".into(), int64().optional()),
            ("lsn".into(), int64().optional()),
            ("xmin".into(), int64().optional()),
        ],
    )
    .version(1)
}

/// Debezium's transaction block (`event.block`), declared even when it is always null.
fn transaction_schema() -> Schema {
    Schema::structure(
        Some("event.block".into()),
        vec![
            ("id".into(), Schema::primitive("string")),
            ("total_order".into(), Schema::primitive("int64")),
            ("data_collection_order".into(), Schema::primitive("int64")),
        ],
    )
    .optional()
    .version(1)
}

/// `<prefix>.<schema>.<table>.Envelope`, version 2.
fn envelope_schema(record_prefix: &str, columns: &[MappedColumn]) -> Schema {
    let row = row_schema(record_prefix, columns);
    Schema::structure(
        Some(format!("{record_prefix}.Envelope")),
        vec![
            ("before".into(), row.clone()),
            ("after".into(), row),
            ("source".into(), source_schema()),
            ("transaction".into(), transaction_schema()),
            ("op".into(), Schema::primitive("string")),
            ("ts_ms".into(), Schema::primitive("int64").optional()),
            ("ts_us".into(), Schema::primitive("int64").optional()),
            ("ts_ns".into(), Schema::primitive("int64").optional()),
        ],
    )
    .version(2)
}
