//! Encoding in the Outbox Event Router's form (`io.debezium.transforms.outbox.EventRouter`):
//! the topic from the route-by column (`outbox.event.${routedByValue}`), the key from the
//! event-key column, the value the payload, the event id in the `id` header, extra columns as
//! headers or envelope fields, and optionally a tombstone for an empty payload.
//!
//! Followed from Debezium 3.4's router with the `JsonConverter` for keys and values and Kafka
//! Connect's `SimpleHeaderConverter` for headers. Differences, all documented on the settings:
//! `expand_json_payload` defaults to `true` here (Debezium's `table.expand.json.payload`
//! defaults to `false`); `route.topic.regex` is not supported (the default, which matches the
//! whole value, is what is implemented); `partition` placement is not supported; a
//! `timestamptz` event-timestamp column is accepted (Debezium accepts only `timestamp`).

use crate::change::{
    converted, map_columns, KafkaRecord, MappedColumn, Relation, SourcePosition, UnknownTypes,
};
use crate::connect::Schema;
use crate::json_out::Json;
use crate::pgtype::Mapped;
use crate::EncodeError;

/// Where an additional column goes (`table.fields.additional.placement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// A record header named by the alias.
    Header,
    /// A field of the value, next to `payload`, named by the alias.
    Envelope,
}

/// One entry of `table.fields.additional.placement`: `column:placement[:alias]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdditionalField {
    /// The outbox column.
    pub column: String,
    /// Header or envelope.
    pub placement: Placement,
    /// The header's or field's name (the column's name when not given).
    pub alias: String,
}

impl AdditionalField {
    /// Parses Debezium's syntax: `type:header:eventType,tenant:envelope`.
    pub fn parse_list(setting: &str, text: &str) -> Result<Vec<Self>, EncodeError> {
        let bad = |problem: String| EncodeError::Config {
            setting: setting.to_owned(),
            problem,
        };
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|entry| {
                let parts: Vec<&str> = entry.split(':').map(str::trim).collect();
                let (column, placement, alias) = match parts.as_slice() {
                    [c, p] => (*c, *p, *c),
                    [c, p, a] => (*c, *p, *a),
                    _ => {
                        return Err(bad(format!(
                            "{entry:?} is not column:placement or column:placement:alias"
                        )))
                    }
                };
                let placement = match placement {
                    "header" => Placement::Header,
                    "envelope" => Placement::Envelope,
                    "partition" => {
                        return Err(bad(format!(
                            "{entry:?}: partition placement is not supported"
                        )))
                    }
                    other => {
                        return Err(bad(format!(
                            "{entry:?}: placement {other:?} is not header or envelope"
                        )))
                    }
                };
                if column.is_empty() || alias.is_empty() {
                    return Err(bad(format!("{entry:?} has an empty name")));
                }
                Ok(Self {
                    column: column.to_owned(),
                    placement,
                    alias: alias.to_owned(),
                })
            })
            .collect()
    }
}

/// How the record key is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyConverter {
    /// Kafka Connect's `JsonConverter` (Connect's default): a string key is written quoted
    /// (`"1"`), wrapped in `{schema, payload}` when schemas are enabled.
    #[default]
    Json,
    /// `StringConverter`: the key's text as is.
    String,
}

/// Settings of the Outbox Event Router form, named after Debezium's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// `table.field.event.id` (default `id`): its value goes in the `id` header.
    pub event_id: String,
    /// `table.field.event.key` (default `aggregateid`): the record key.
    pub event_key: String,
    /// `table.field.event.payload` (default `payload`): the record value.
    pub payload: String,
    /// `table.field.event.timestamp` (default none: the event's processing time).
    pub timestamp: Option<String>,
    /// `topic.prefix` of the connector (default `postgres`): only in the name of the value's
    /// schema when envelope fields and schemas are on.
    pub topic_prefix: String,
    /// `route.by.field` (default `aggregatetype`).
    pub route_by: String,
    /// `route.topic.replacement` (default `outbox.event.${routedByValue}`).
    pub topic_replacement: String,
    /// `table.fields.additional.placement`.
    pub additional: Vec<AdditionalField>,
    /// `table.expand.json.payload`: a JSON payload is written as JSON, not as a string.
    /// **`true` by default here**; Debezium's default is `false`.
    pub expand_json_payload: bool,
    /// `route.tombstone.on.empty.payload` (default `false`).
    pub tombstone_on_empty_payload: bool,
    /// The value converter's `schemas.enable` (and the key's, with [`KeyConverter::Json`]).
    pub schemas: bool,
    /// How the key is converted.
    pub key_converter: KeyConverter,
    /// Columns of unknown types.
    pub unknown_types: UnknownTypes,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            event_id: "id".into(),
            event_key: "aggregateid".into(),
            payload: "payload".into(),
            timestamp: None,
            topic_prefix: "postgres".into(),
            route_by: "aggregatetype".into(),
            topic_replacement: "outbox.event.${routedByValue}".into(),
            additional: Vec::new(),
            expand_json_payload: true,
            tombstone_on_empty_payload: false,
            schemas: false,
            key_converter: KeyConverter::Json,
            unknown_types: UnknownTypes::Omit,
        }
    }
}

/// The router's variable in `route.topic.replacement`.
const ROUTED_BY_VALUE: &str = "${routedByValue}";

/// Encodes rows of one outbox table in the router's form.
#[derive(Debug, Clone)]
pub struct RouterEncoder {
    config: RouterConfig,
    columns: Vec<MappedColumn>,
    event_id: usize,
    event_key: usize,
    payload: usize,
    route_by: usize,
    timestamp: Option<usize>,
    /// `(index, field)` of each additional column.
    additional: Vec<(usize, AdditionalField)>,
    /// `<prefix>.<schema>.<table>`: the row schema's name without `.Value`.
    record_prefix: String,
}

impl RouterEncoder {
    /// Prepares the encoding of `relation`'s rows; every configured column must exist.
    pub fn new(config: RouterConfig, relation: &Relation) -> Result<Self, EncodeError> {
        let columns = map_columns(relation, config.unknown_types)?;
        let table = format!("{}.{}", relation.schema, relation.table);
        let find = |role: &'static str, name: &str| -> Result<usize, EncodeError> {
            columns
                .iter()
                .position(|c| c.def.name == name && c.mapped.is_some())
                .ok_or_else(|| EncodeError::MissingColumn {
                    role,
                    column: name.to_owned(),
                    table: table.clone(),
                })
        };
        let event_id = find("event id", &config.event_id)?;
        let event_key = find("event key", &config.event_key)?;
        let payload = find("payload", &config.payload)?;
        let route_by = find("route-by", &config.route_by)?;
        let timestamp = match &config.timestamp {
            None => None,
            Some(name) => {
                let i = find("event timestamp", name)?;
                match columns[i].mapped {
                    Some(
                        Mapped::TimestampMillis
                        | Mapped::TimestampMicros
                        | Mapped::ZonedTimestamp(_),
                    ) => Some(i),
                    _ => {
                        return Err(EncodeError::Config {
                            setting: "event timestamp column".into(),
                            problem: format!("`{name}` is not a timestamp column"),
                        })
                    }
                }
            }
        };
        let additional = config
            .additional
            .iter()
            .map(|f| Ok((find("additional", &f.column)?, f.clone())))
            .collect::<Result<_, EncodeError>>()?;
        Ok(Self {
            record_prefix: format!(
                "{}.{}.{}",
                config.topic_prefix, relation.schema, relation.table
            ),
            config,
            columns,
            event_id,
            event_key,
            payload,
            route_by,
            timestamp,
            additional,
        })
    }

    /// One row in the router's form. `emitted_at_ns` is the event's processing time, the
    /// record timestamp unless a timestamp column is configured. `source` is not part of the
    /// routed record (the router drops the envelope); it is taken for symmetry with the raw
    /// form and ignored.
    pub fn encode(
        &self,
        values: &[Option<String>],
        _source: &SourcePosition,
        emitted_at_ns: i64,
    ) -> Result<KafkaRecord, EncodeError> {
        if values.len() != self.columns.len() {
            return Err(EncodeError::ColumnCount {
                columns: self.columns.len(),
                values: values.len(),
            });
        }
        let value_of = |i: usize| -> Result<Json, EncodeError> {
            let column = &self.columns[i];
            match (&values[i], &column.mapped) {
                (Some(text), Some(m)) => {
                    m.value(text).map_err(|problem| EncodeError::InvalidValue {
                        column: column.def.name.clone(),
                        problem,
                    })
                }
                _ => Ok(Json::Null),
            }
        };
        let routed_by = match &values[self.route_by] {
            Some(v) => v,
            None => {
                return Err(EncodeError::NullValue {
                    role: "route-by",
                    column: self.config.route_by.clone(),
                })
            }
        };
        let topic = self
            .config
            .topic_replacement
            .replace(ROUTED_BY_VALUE, routed_by);

        let key_value = value_of(self.event_key)?;
        let key = match (&key_value, self.config.key_converter) {
            (Json::Null, _) => None,
            (_, KeyConverter::String) => values[self.event_key].clone().map(String::into_bytes),
            (v, KeyConverter::Json) => {
                // The key's schema is the column's own (optional when it is nullable).
                let schema = self
                    .config
                    .schemas
                    .then(|| self.column_schema(self.event_key, true).to_json().to_text());
                Some(converted(schema.as_deref(), v))
            }
        };

        let mut headers = vec![("id".to_owned(), header_bytes(&value_of(self.event_id)?))];
        let mut envelope = Vec::new();
        for (i, field) in &self.additional {
            let v = value_of(*i)?;
            match field.placement {
                Placement::Header => headers.push((field.alias.clone(), header_bytes(&v))),
                Placement::Envelope => envelope.push((field, *i, v)),
            }
        }

        let (payload, payload_schema) = self.payload(value_of(self.payload)?);
        let empty = match &payload {
            Json::Null => true,
            Json::Str(s) => s.trim().is_empty(),
            _ => false,
        };
        let value = if empty && self.config.tombstone_on_empty_payload {
            None
        } else if envelope.is_empty() {
            let schema = self
                .config
                .schemas
                .then(|| payload_schema.to_json().to_text());
            Some(converted(schema.as_deref(), &payload))
        } else {
            let mut fields = vec![("payload".to_owned(), payload)];
            let mut schema_fields = vec![("payload".to_owned(), payload_schema)];
            for (field, i, v) in envelope {
                fields.push((field.alias.clone(), v));
                schema_fields.push((field.alias.clone(), self.column_schema(i, true)));
            }
            let schema = self.config.schemas.then(|| {
                // Debezium's getSchemaName: the row schema's name with the routed value
                // before its last part, `<prefix>.<schema>.<table>.<routedBy>.Value`.
                let name = format!("{}.{routed_by}.Value", self.record_prefix);
                Schema::structure(Some(name), schema_fields)
                    .to_json()
                    .to_text()
            });
            Some(converted(schema.as_deref(), &Json::Object(fields)))
        };

        // Debezium's `getEventTimestampMs`: the column's value in ms when it has one, else
        // the event's processing time.
        let from_column = match self.timestamp {
            None => None,
            Some(i) => match (value_of(i)?, &self.columns[i].mapped) {
                (Json::Int(us), Some(Mapped::TimestampMicros)) => Some(us.div_euclid(1_000)),
                (Json::Int(ms), _) => Some(ms),
                // timestamptz (a Clustera extension: Debezium refuses a ZonedTimestamp here).
                (Json::Str(iso), _) => {
                    crate::outbox::parse_timestamp_us(&iso).map(|us| us.div_euclid(1_000))
                }
                _ => None,
            },
        };
        let timestamp_ms = from_column.or(Some(emitted_at_ns.div_euclid(1_000_000)));

        Ok(KafkaRecord {
            topic,
            key,
            value,
            headers,
            timestamp_ms,
        })
    }

    fn column_schema(&self, i: usize, optional: bool) -> Schema {
        let c = &self.columns[i];
        match &c.mapped {
            Some(m) => m.schema(optional && c.def.optional),
            None => Schema::primitive("string").optional(),
        }
    }

    /// The payload as the router writes it, and its schema.
    fn payload(&self, raw: Json) -> (Json, Schema) {
        let column_schema = self.column_schema(self.payload, true);
        if !self.config.expand_json_payload {
            return (raw, column_schema);
        }
        // Debezium expands a string payload; if it does not parse, it is kept as it was.
        let Json::Str(text) = &raw else {
            return (raw, column_schema);
        };
        let Ok(parsed) = Json::parse(text) else {
            return (raw, column_schema);
        };
        if !self.config.schemas {
            // The schema would be thrown away: only drop what Debezium drops.
            return (pruned(parsed).unwrap_or(Json::Null), column_schema);
        }
        match expanded(&self.config.payload, parsed) {
            Some((value, schema)) => (value, schema),
            // A JSON null, or nothing Debezium keeps: a null payload.
            None => (Json::Null, Schema::primitive("string").optional()),
        }
    }
}

/// [`expanded`]'s value without its schema: null object fields and empty arrays dropped.
fn pruned(value: Json) -> Option<Json> {
    match value {
        Json::Null => None,
        Json::Array(items) if items.is_empty() => None,
        Json::Array(items) => Some(Json::Array(
            items
                .into_iter()
                .map(|i| pruned(i).unwrap_or(Json::Null))
                .collect(),
        )),
        Json::Object(fields) => {
            let mut out: Vec<(String, Json)> = Vec::with_capacity(fields.len());
            for (name, v) in fields {
                if out.iter().any(|(n, _)| *n == name) {
                    continue;
                }
                if let Some(v) = pruned(v) {
                    out.push((name, v));
                }
            }
            Some(Json::Object(out))
        }
        other => Some(other),
    }
}

/// Debezium's JSON expansion (`JsonSchemaData` with its defaults): a value and the schema it
/// derives; object fields that are null or empty arrays are left out
/// (`table.json.payload.null.behavior=ignore`, `…empty.array.behavior=ignore`).
/// Integers are `int32` or `int64` by size, other numbers `double`; an array's elements take
/// the first element's schema. `None` for what Debezium drops.
fn expanded(key: &str, value: Json) -> Option<(Json, Schema)> {
    match value {
        Json::Null => None,
        Json::Bool(b) => Some((Json::Bool(b), Schema::primitive("boolean").optional())),
        Json::Number(text) => {
            let ty = match text.parse::<i64>() {
                Ok(n) if i32::try_from(n).is_ok() => "int32",
                Ok(_) => "int64",
                Err(_) => "double",
            };
            Some((Json::Number(text), Schema::primitive(ty).optional()))
        }
        Json::Int(n) => Some((Json::Int(n), Schema::primitive("int64").optional())),
        Json::Double(d) => Some((Json::Double(d), Schema::primitive("double").optional())),
        Json::Float(f) => Some((Json::Float(f), Schema::primitive("float").optional())),
        Json::Str(s) => Some((Json::Str(s), Schema::primitive("string").optional())),
        Json::Array(items) => {
            if items.is_empty() {
                return None;
            }
            let mut element_schema = None;
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match expanded(key, item) {
                    Some((v, s)) => {
                        element_schema.get_or_insert(s);
                        out.push(v);
                    }
                    None => out.push(Json::Null),
                }
            }
            let element = element_schema.unwrap_or_else(|| Schema::primitive("string").optional());
            Some((Json::Array(out), Schema::array(element).optional()))
        }
        Json::Object(fields) => {
            let mut out = Vec::with_capacity(fields.len());
            let mut schema_fields = Vec::with_capacity(fields.len());
            for (name, v) in fields {
                let field_key = if key.is_empty() {
                    name.clone()
                } else {
                    format!("{key}.{name}")
                };
                // A repeated name keeps its first occurrence, as Debezium's schema does.
                if out.iter().any(|(n, _): &(String, Json)| *n == name) {
                    continue;
                }
                if let Some((v, s)) = expanded(&field_key, v) {
                    schema_fields.push((name.clone(), s));
                    out.push((name, v));
                }
            }
            Some((
                Json::Object(out),
                Schema::structure(Some(key.to_owned()), schema_fields).optional(),
            ))
        }
    }
}

/// Kafka Connect's `SimpleHeaderConverter`: strings as their UTF-8, numbers and booleans as
/// their text, null as a null header; anything else as compact JSON.
fn header_bytes(v: &Json) -> Option<Vec<u8>> {
    match v {
        Json::Null => None,
        Json::Str(s) => Some(s.clone().into_bytes()),
        Json::Number(n) => Some(n.clone().into_bytes()),
        other => Some(other.to_text().into_bytes()),
    }
}
