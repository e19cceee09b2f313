//! The relay's output format, chosen by configuration: the raw change event or the Outbox
//! Event Router's form, and the settings of each, read from environment-style variables
//! through a lookup function (so this stays free of I/O and testable).

use crate::change::{
    ChangeEventConfig, ChangeEventEncoder, KafkaRecord, RawKey, Relation, SourcePosition,
    UnknownTypes,
};
use crate::route::{AdditionalField, KeyConverter, RouterConfig, RouterEncoder};
use crate::EncodeError;

/// Which form the relay writes, with its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputFormat {
    /// Debezium's raw change event (`CLUSTERA_OUTBOX_FORMAT=debezium`, the default).
    Debezium(ChangeEventConfig),
    /// The Outbox Event Router's form (`CLUSTERA_OUTBOX_FORMAT=router`).
    Router(RouterConfig),
}

/// The column that keys records by default: Clustera keys by aggregate, so that one
/// aggregate's events share a partition (`primary-key` gives Debezium's own key).
const DEFAULT_KEY_COLUMN: &str = "aggregate_id";

/// What [`OutputFormat::from_vars`] gives with nothing set: raw change events keyed by
/// `aggregate_id`.
impl Default for OutputFormat {
    fn default() -> Self {
        OutputFormat::Debezium(ChangeEventConfig {
            key: RawKey::Column(DEFAULT_KEY_COLUMN.to_owned()),
            ..ChangeEventConfig::default()
        })
    }
}

/// A table's prepared encoder, for either form.
#[derive(Debug, Clone)]
pub enum TableEncoder {
    /// Raw change events.
    Debezium(ChangeEventEncoder),
    /// Routed outbox records.
    Router(RouterEncoder),
}

impl TableEncoder {
    /// The record for one inserted (or snapshot-read) row: `values` in the relation's column
    /// order as pgoutput's text (`None` for NULL); `emitted_at_ns` the processing time in
    /// nanoseconds since the epoch.
    pub fn encode(
        &self,
        values: &[Option<String>],
        source: &SourcePosition,
        emitted_at_ns: i64,
    ) -> Result<KafkaRecord, EncodeError> {
        match self {
            TableEncoder::Debezium(e) => e.encode(values, source, emitted_at_ns),
            TableEncoder::Router(e) => e.encode(values, source, emitted_at_ns),
        }
    }
}

impl OutputFormat {
    /// Prepares the encoding of one table's rows (once per Relation message).
    pub fn prepare(&self, relation: &Relation) -> Result<TableEncoder, EncodeError> {
        Ok(match self {
            OutputFormat::Debezium(c) => {
                TableEncoder::Debezium(ChangeEventEncoder::new(c.clone(), relation.clone())?)
            }
            OutputFormat::Router(c) => {
                TableEncoder::Router(RouterEncoder::new(c.clone(), relation)?)
            }
        })
    }

    /// Sets `source.db` (the relay knows it from its connection: `current_database()`).
    pub fn set_database(&mut self, database: &str) {
        if let OutputFormat::Debezium(c) = self {
            c.database = database.to_owned();
        }
    }

    /// Reads the format and its settings from variables (`get` returns a variable's value, or
    /// `None` when unset). Unknown values are errors naming the variable.
    ///
    /// | Variable | Default | Debezium's name |
    /// |---|---|---|
    /// | `CLUSTERA_OUTBOX_FORMAT` | `debezium` (or `router`) | |
    /// | `CLUSTERA_OUTBOX_SCHEMAS` | `false` | converter `schemas.enable` |
    /// | `CLUSTERA_OUTBOX_UNKNOWN_TYPES` | `fail` (or `omit`) | `include.unknown.datatypes` |
    /// | `CLUSTERA_OUTBOX_TOPIC_PREFIX` | `postgres` | `topic.prefix` |
    /// | `CLUSTERA_OUTBOX_TOPIC` | unset | the whole topic name, instead of `<prefix>.<schema>.<table>` |
    /// | `CLUSTERA_OUTBOX_KEY_COLUMN` | `aggregate_id` | the column whose text keys the record, or `primary-key` for Debezium's key (a struct of the key columns) |
    /// | `CLUSTERA_OUTBOX_ROUTER_FIELD_EVENT_ID` | `id` | `table.field.event.id` |
    /// | `CLUSTERA_OUTBOX_ROUTER_FIELD_EVENT_KEY` | `aggregateid` | `table.field.event.key` |
    /// | `CLUSTERA_OUTBOX_ROUTER_FIELD_PAYLOAD` | `payload` | `table.field.event.payload` |
    /// | `CLUSTERA_OUTBOX_ROUTER_FIELD_TIMESTAMP` | unset | `table.field.event.timestamp` |
    /// | `CLUSTERA_OUTBOX_ROUTER_ROUTE_BY_FIELD` | `aggregatetype` | `route.by.field` |
    /// | `CLUSTERA_OUTBOX_ROUTER_TOPIC_REPLACEMENT` | `outbox.event.${routedByValue}` | `route.topic.replacement` |
    /// | `CLUSTERA_OUTBOX_ROUTER_ADDITIONAL_PLACEMENT` | unset | `table.fields.additional.placement` |
    /// | `CLUSTERA_OUTBOX_ROUTER_EXPAND_JSON_PAYLOAD` | `true` (Debezium: `false`) | `table.expand.json.payload` |
    /// | `CLUSTERA_OUTBOX_ROUTER_TOMBSTONE_ON_EMPTY_PAYLOAD` | `false` | `route.tombstone.on.empty.payload` |
    /// | `CLUSTERA_OUTBOX_ROUTER_KEY_CONVERTER` | `json` (or `string`) | `key.converter` |
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, EncodeError> {
        let text = |name: &str, default: &str| -> Result<String, EncodeError> {
            match get(name) {
                None => Ok(default.to_owned()),
                Some(v) if v.trim().is_empty() => Err(EncodeError::Config {
                    setting: name.to_owned(),
                    problem: "is empty".into(),
                }),
                Some(v) => Ok(v.trim().to_owned()),
            }
        };
        let flag = |name: &str, default: bool| -> Result<bool, EncodeError> {
            match get(name).as_deref().map(str::trim) {
                None => Ok(default),
                Some("true" | "1" | "yes") => Ok(true),
                Some("false" | "0" | "no") => Ok(false),
                Some(other) => Err(EncodeError::Config {
                    setting: name.to_owned(),
                    problem: format!("{other:?} is not true or false"),
                }),
            }
        };
        let schemas = flag("CLUSTERA_OUTBOX_SCHEMAS", false)?;
        let unknown_types = match text("CLUSTERA_OUTBOX_UNKNOWN_TYPES", "fail")?.as_str() {
            "fail" => UnknownTypes::Fail,
            "omit" => UnknownTypes::Omit,
            other => {
                return Err(EncodeError::Config {
                    setting: "CLUSTERA_OUTBOX_UNKNOWN_TYPES".into(),
                    problem: format!("{other:?} is not fail or omit"),
                })
            }
        };
        match text("CLUSTERA_OUTBOX_FORMAT", "debezium")?.as_str() {
            "debezium" => Ok(OutputFormat::Debezium(ChangeEventConfig {
                topic_prefix: text("CLUSTERA_OUTBOX_TOPIC_PREFIX", "postgres")?,
                schemas,
                topic: match get("CLUSTERA_OUTBOX_TOPIC") {
                    None => None,
                    Some(_) => Some(text("CLUSTERA_OUTBOX_TOPIC", "")?),
                },
                key: match text("CLUSTERA_OUTBOX_KEY_COLUMN", DEFAULT_KEY_COLUMN)?.as_str() {
                    "primary-key" => RawKey::PrimaryKey,
                    column => RawKey::Column(column.to_owned()),
                },
                unknown_types,
                ..ChangeEventConfig::default()
            })),
            "router" => {
                let d = RouterConfig::default();
                let additional = match get("CLUSTERA_OUTBOX_ROUTER_ADDITIONAL_PLACEMENT") {
                    None => Vec::new(),
                    Some(v) => AdditionalField::parse_list(
                        "CLUSTERA_OUTBOX_ROUTER_ADDITIONAL_PLACEMENT",
                        &v,
                    )?,
                };
                let topic_replacement = text(
                    "CLUSTERA_OUTBOX_ROUTER_TOPIC_REPLACEMENT",
                    &d.topic_replacement,
                )?;
                let key_converter =
                    match text("CLUSTERA_OUTBOX_ROUTER_KEY_CONVERTER", "json")?.as_str() {
                        "json" => KeyConverter::Json,
                        "string" => KeyConverter::String,
                        other => {
                            return Err(EncodeError::Config {
                                setting: "CLUSTERA_OUTBOX_ROUTER_KEY_CONVERTER".into(),
                                problem: format!("{other:?} is not json or string"),
                            })
                        }
                    };
                Ok(OutputFormat::Router(RouterConfig {
                    event_id: text("CLUSTERA_OUTBOX_ROUTER_FIELD_EVENT_ID", &d.event_id)?,
                    event_key: text("CLUSTERA_OUTBOX_ROUTER_FIELD_EVENT_KEY", &d.event_key)?,
                    payload: text("CLUSTERA_OUTBOX_ROUTER_FIELD_PAYLOAD", &d.payload)?,
                    timestamp: match get("CLUSTERA_OUTBOX_ROUTER_FIELD_TIMESTAMP") {
                        None => None,
                        Some(_) => Some(text("CLUSTERA_OUTBOX_ROUTER_FIELD_TIMESTAMP", "")?),
                    },
                    topic_prefix: text("CLUSTERA_OUTBOX_TOPIC_PREFIX", &d.topic_prefix)?,
                    route_by: text("CLUSTERA_OUTBOX_ROUTER_ROUTE_BY_FIELD", &d.route_by)?,
                    topic_replacement,
                    additional,
                    expand_json_payload: flag("CLUSTERA_OUTBOX_ROUTER_EXPAND_JSON_PAYLOAD", true)?,
                    tombstone_on_empty_payload: flag(
                        "CLUSTERA_OUTBOX_ROUTER_TOMBSTONE_ON_EMPTY_PAYLOAD",
                        false,
                    )?,
                    schemas,
                    key_converter,
                    // The router reads a few named columns: others of unknown types are
                    // simply not needed, unless the operator asked to fail on them.
                    unknown_types: if get("CLUSTERA_OUTBOX_UNKNOWN_TYPES").is_some() {
                        unknown_types
                    } else {
                        UnknownTypes::Omit
                    },
                }))
            }
            other => Err(EncodeError::Config {
                setting: "CLUSTERA_OUTBOX_FORMAT".into(),
                problem: format!("{other:?} is not debezium or router"),
            }),
        }
    }
}
