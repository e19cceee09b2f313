//! The one place where a decoded outbox row becomes a Kafka record. Both read paths
//! (streaming and peek) describe relations to [`Tables`] and ask it for each inserted row's
//! record; the format itself (Debezium's raw change event, or the Outbox Event Router's form,
//! with their settings) is `clustera-debezium`'s [`OutputFormat`], so what reaches Kafka is
//! exactly what Debezium 3.4's PostgreSQL connector would write.

use std::collections::HashMap;

use clustera::dead_letter_headers;
use clustera_debezium::{
    ColumnDef, EncodeError, KafkaRecord, OutputFormat, Relation, SnapshotRecord, SourcePosition,
    TableEncoder,
};
use clustera_pgoutput::Column;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use super::RelayError;

/// Microseconds between 1970-01-01 and 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// The relation id under which the snapshot describes the outbox (0 is PostgreSQL's
/// invalid OID: never a streamed relation's).
pub(crate) const SNAPSHOT_RELATION: u32 = 0;

/// Where the rows being decoded come from: the transaction, for the source block.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Origin {
    /// Transaction id (0: none, for a snapshot's rows).
    pub xid: u32,
    /// Commit time, microseconds since 2000-01-01.
    pub commit_ts: i64,
    /// LSN of the previous transaction's commit, once one was seen (`source.sequence`).
    pub last_commit_lsn: Option<u64>,
    /// Streamed (`False`), or the row's place in a snapshot.
    pub snapshot: SnapshotRecord,
}

impl Origin {
    /// A snapshot's row, read now.
    pub fn snapshot(marker: SnapshotRecord) -> Self {
        Self {
            xid: 0,
            commit_ts: chrono::Utc::now().timestamp_micros() - PG_EPOCH_US,
            last_commit_lsn: None,
            snapshot: marker,
        }
    }

    /// The source position of a change at `lsn` in this transaction.
    fn position(&self, lsn: u64) -> SourcePosition {
        SourcePosition {
            lsn,
            last_commit_lsn: self.last_commit_lsn,
            tx_id: (self.xid != 0).then_some(i64::from(self.xid)),
            commit_time_us: self.commit_ts + PG_EPOCH_US,
            xmin: None,
            snapshot: self.snapshot,
        }
    }
}

/// The outbox table as last described: its encoder, and its column names for dead letters.
struct Outbox {
    encoder: TableEncoder,
    columns: Vec<String>,
}

/// Headers of a row the relay dead-lettered (besides [`dead_letter_headers::ERROR`]).
pub mod dead_letter {
    /// `schema.table` of the row.
    pub const TABLE: &str = "clustera.relay.table";
    /// The row's LSN (`0/16B3748`).
    pub const LSN: &str = "clustera.relay.lsn";
    /// Its transaction id.
    pub const XID: &str = "clustera.relay.xid";
}

/// The relations the stream described, each with its prepared encoder if it is the outbox
/// table (other tables in the publication are ignored).
pub(crate) struct Tables {
    format: OutputFormat,
    schema: String,
    table: String,
    dead_letter_topic: Option<String>,
    described: HashMap<u32, Option<Outbox>>,
}

impl Tables {
    /// Encodes rows of `schema.table` in `format`; rows the format refuses go to
    /// `dead_letter_topic` if there is one, else stop the relay.
    pub fn new(
        format: OutputFormat,
        schema: &str,
        table: &str,
        dead_letter_topic: Option<String>,
    ) -> Self {
        Self {
            format,
            schema: schema.to_owned(),
            table: table.to_owned(),
            dead_letter_topic,
            described: HashMap::new(),
        }
    }

    /// Sets `source.db`, which the relay learns from its connection.
    pub fn set_database(&mut self, database: &str) {
        self.format.set_database(database);
    }

    /// Forgets every relation: a new session describes them again.
    pub fn clear(&mut self) {
        self.described.clear();
    }

    /// A Relation message: prepares the outbox table's encoder. A table the format cannot
    /// encode (a configured column missing, a type it does not map) is refused now, before
    /// any of its rows, with the reason.
    pub fn describe(
        &mut self,
        oid: u32,
        schema: String,
        table: String,
        columns: Vec<Column>,
    ) -> Result<(), RelayError> {
        if schema != self.schema || table != self.table {
            self.described.insert(oid, None);
            return Ok(());
        }
        let names = columns.iter().map(|c| c.name.clone()).collect();
        let relation = Relation {
            schema,
            table,
            columns: columns
                .into_iter()
                .map(|c| {
                    let def = ColumnDef::new(c.name, c.type_oid, c.type_modifier);
                    if c.key {
                        def.key()
                    } else {
                        def
                    }
                })
                .collect(),
        };
        let encoder = self
            .format
            .prepare(&relation)
            .map_err(|source| RelayError::Table {
                table: format!("{}.{}", relation.schema, relation.table),
                source,
            })?;
        self.described.insert(
            oid,
            Some(Outbox {
                encoder,
                columns: names,
            }),
        );
        Ok(())
    }

    /// The record of one row inserted at `lsn`, or `None` when the row is not the outbox's.
    /// A row the format refuses becomes a dead letter when a dead-letter topic is set.
    pub fn encode(
        &self,
        oid: u32,
        values: &[Option<String>],
        origin: &Origin,
        lsn: u64,
    ) -> Result<Option<KafkaRecord>, RelayError> {
        let Some(described) = self.described.get(&oid) else {
            return Err(RelayError::UnknownRelation(oid));
        };
        let Some(outbox) = described else {
            return Ok(None);
        };
        let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        let encoded = outbox
            .encoder
            .encode(values, &origin.position(lsn), now_ns)
            .and_then(|record| match topic_problem(&record.topic) {
                // Kafka would refuse it for good: a poison row, not a broker outage.
                Some(problem) => Err(EncodeError::InvalidValue {
                    column: "topic".into(),
                    problem: format!("{:?} {problem}", record.topic),
                }),
                None => Ok(record),
            });
        let source = match encoded {
            Ok(record) => return Ok(Some(record)),
            Err(source) => source,
        };
        let lsn = clustera_pgoutput::format_lsn(lsn);
        let Some(topic) = &self.dead_letter_topic else {
            return Err(RelayError::Row {
                lsn,
                xid: origin.xid,
                source,
            });
        };
        tracing::warn!(%lsn, xid = origin.xid, error = %source, %topic,
            "an outbox row cannot be encoded; dead-lettered");
        Ok(Some(dead_letter_record(
            topic,
            &outbox.columns,
            values,
            &[
                (dead_letter_headers::ERROR, source.to_string()),
                (
                    dead_letter::TABLE,
                    format!("{}.{}", self.schema, self.table),
                ),
                (dead_letter::LSN, lsn),
                (dead_letter::XID, origin.xid.to_string()),
            ],
        )))
    }
}

/// Why Kafka would refuse `topic` as a name, if it would.
fn topic_problem(topic: &str) -> Option<&'static str> {
    if topic.is_empty() || topic == "." || topic == ".." {
        Some("is not a topic name")
    } else if topic.len() > 249 {
        Some("is longer than Kafka's 249 characters")
    } else if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("has characters Kafka refuses (only letters, digits, '.', '_' and '-')")
    } else {
        None
    }
}

/// A refused row as a JSON object of its columns' text (as pgoutput gave it), with headers
/// saying why and where it came from.
fn dead_letter_record(
    topic: &str,
    columns: &[String],
    values: &[Option<String>],
    headers: &[(&str, String)],
) -> KafkaRecord {
    let row: serde_json::Map<String, serde_json::Value> = columns
        .iter()
        .zip(values)
        .map(|(name, value)| (name.clone(), value.clone().into()))
        .collect();
    KafkaRecord {
        topic: topic.to_owned(),
        key: None,
        value: Some(serde_json::Value::Object(row).to_string().into_bytes()),
        headers: headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), Some(value.clone().into_bytes())))
            .collect(),
        timestamp_ms: None,
    }
}

/// The producer's form of a record: optional key and value (a tombstone), headers, and the
/// timestamp the format chose (else the producer's clock).
pub(crate) fn future_record(record: &KafkaRecord) -> FutureRecord<'_, [u8], [u8]> {
    let mut out = FutureRecord::to(&record.topic);
    if let Some(key) = &record.key {
        out = out.key(key.as_slice());
    }
    if let Some(value) = &record.value {
        out = out.payload(value.as_slice());
    }
    if !record.headers.is_empty() {
        let headers = record.headers.iter().fold(
            OwnedHeaders::new_with_capacity(record.headers.len()),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: value.as_deref(),
                })
            },
        );
        out = out.headers(headers);
    }
    if let Some(ms) = record.timestamp_ms {
        out = out.timestamp(ms);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, type_oid: u32, key: bool) -> Column {
        Column {
            name: name.into(),
            type_oid,
            type_modifier: -1,
            key,
        }
    }

    fn outbox_columns() -> Vec<Column> {
        vec![
            column("id", 2950, true),
            column("aggregate_id", 25, false),
            column("payload", 3802, false),
        ]
    }

    #[test]
    fn only_the_outbox_table_is_encoded() {
        let mut tables = Tables::new(OutputFormat::default(), "app", "outbox", None);
        tables
            .describe(1, "app".into(), "outbox".into(), outbox_columns())
            .unwrap();
        tables
            .describe(2, "app".into(), "other".into(), outbox_columns())
            .unwrap();
        let row = [
            Some("7f1c1d3e-0000-4000-8000-000000000001".to_owned()),
            Some("order-1".to_owned()),
            Some(r#"{"a":1}"#.to_owned()),
        ];
        let origin = Origin {
            xid: 7,
            ..Origin::default()
        };
        let record = tables.encode(1, &row, &origin, 42).unwrap().unwrap();
        assert_eq!(record.topic, "postgres.app.outbox");
        assert_eq!(record.key.as_deref(), Some(b"order-1".as_slice()));
        let value: serde_json::Value =
            serde_json::from_slice(record.value.as_deref().unwrap()).unwrap();
        assert_eq!(value["after"]["payload"], r#"{"a":1}"#);
        assert_eq!(value["source"]["txId"], 7);
        assert_eq!(value["source"]["lsn"], 42);
        assert_eq!(value["source"]["ts_ms"], PG_EPOCH_US / 1000);
        assert!(tables.encode(2, &row, &origin, 43).unwrap().is_none());
        assert!(matches!(
            tables.encode(3, &row, &origin, 44),
            Err(RelayError::UnknownRelation(3))
        ));
    }

    #[test]
    fn a_routed_topic_kafka_would_refuse_is_a_poison_row() {
        let format = OutputFormat::from_vars(|name: &str| {
            [
                ("CLUSTERA_OUTBOX_FORMAT", "router"),
                ("CLUSTERA_OUTBOX_ROUTER_FIELD_EVENT_ID", "id"),
                ("CLUSTERA_OUTBOX_ROUTER_FIELD_EVENT_KEY", "aggregate_id"),
                ("CLUSTERA_OUTBOX_ROUTER_ROUTE_BY_FIELD", "aggregate_id"),
            ]
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
        })
        .unwrap();
        let mut tables = Tables::new(format, "app", "outbox", Some("dead".into()));
        tables
            .describe(1, "app".into(), "outbox".into(), outbox_columns())
            .unwrap();
        let row = |route: &str| {
            [
                Some("7f1c1d3e-0000-4000-8000-000000000001".to_owned()),
                Some(route.to_owned()),
                Some("{}".to_owned()),
            ]
        };
        let origin = Origin::default();
        let ok = tables
            .encode(1, &row("Order"), &origin, 1)
            .unwrap()
            .unwrap();
        assert_eq!(ok.topic, "outbox.event.Order");
        let dead = tables
            .encode(1, &row("Big Order!"), &origin, 2)
            .unwrap()
            .unwrap();
        assert_eq!(dead.topic, "dead");
        let (_, error) = dead
            .headers
            .iter()
            .find(|(k, _)| k == "clustera.error")
            .unwrap();
        let error = String::from_utf8(error.clone().unwrap()).unwrap();
        assert!(error.contains("outbox.event.Big Order!"), "{error}");
    }

    #[test]
    fn a_table_the_format_cannot_encode_is_refused_with_the_reason() {
        let mut tables = Tables::new(OutputFormat::default(), "app", "outbox", None);
        let e = tables
            .describe(
                1,
                "app".into(),
                "outbox".into(),
                vec![column("id", 2950, true)],
            )
            .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("app.outbox") && text.contains("aggregate_id"),
            "{text}"
        );
    }
}
