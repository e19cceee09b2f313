//! The one place where a decoded outbox row becomes a Kafka record (key and value). Both read
//! paths (streaming and peek) call [`change_event`] and nothing else, so the format can be
//! replaced by `clustera-debezium`'s encoders (the full source block, the type mapping, the
//! Outbox Event Router form) without touching the relay.
//!
//! Today: Debezium's change event as the JSON converter writes it without schemas, with a
//! partial source block.

use clustera_pgoutput::Column;
use serde_json::{json, Map, Value};

/// A table as a Relation message described it.
#[derive(Debug, Clone)]
pub(crate) struct Relation {
    /// Schema.
    pub schema: String,
    /// Table.
    pub table: String,
    /// Columns in order.
    pub columns: Vec<Column>,
}

/// Where a row came from, for the source block.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    /// Transaction id.
    pub xid: u32,
    /// Commit time, microseconds since 2000-01-01.
    pub commit_ts: i64,
}

/// Microseconds between 1970-01-01 and 2000-01-01, PostgreSQL's epoch.
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// The Kafka key (the value of `key_column`, empty if NULL) and value of one inserted row.
pub(crate) fn change_event(
    rel: &Relation,
    values: &[Option<String>],
    key_column: &str,
    origin: Origin,
) -> (String, String) {
    let mut after = Map::new();
    let mut key = String::new();
    for (column, value) in rel.columns.iter().zip(values) {
        if column.name == key_column {
            key = value.clone().unwrap_or_default();
        }
        after.insert(
            column.name.clone(),
            debezium_value(column.type_oid, value.as_deref()),
        );
    }
    let ts_ms = (origin.commit_ts + PG_EPOCH_US) / 1000;
    let envelope = json!({
        "before": null,
        "after": after,
        "source": {
            "connector": "postgresql",
            "name": "clustera",
            "ts_ms": ts_ms,
            "snapshot": "false",
            "schema": rel.schema,
            "table": rel.table,
            "txId": origin.xid,
        },
        "op": "c",
        "ts_ms": chrono::Utc::now().timestamp_millis(),
    });
    (key, envelope.to_string())
}

/// A column value in Debezium's PostgreSQL encoding: uuid, json(b) and text as strings,
/// timestamptz as an ISO-8601 ZonedTimestamp, numbers and booleans as JSON. The walsender
/// session runs with `DateStyle=ISO, TimeZone=UTC`, so timestamps arrive as
/// `2026-01-02 03:04:05.678+00`.
fn debezium_value(type_oid: u32, text: Option<&str>) -> Value {
    let Some(text) = text else {
        return Value::Null;
    };
    match type_oid {
        16 => Value::Bool(text == "t"),
        20 | 21 | 23 => text
            .parse::<i64>()
            .map_or_else(|_| json!(text), Value::from),
        700 | 701 => text
            .parse::<f64>()
            .map_or_else(|_| json!(text), Value::from),
        1184 => chrono::DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z").map_or_else(
            |_| json!(text),
            |t| {
                json!(t
                    .with_timezone(&chrono::Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            },
        ),
        _ => json!(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_utc_timestamps_become_zoned_timestamps() {
        assert_eq!(
            debezium_value(1184, Some("2026-01-02 03:04:05.678+00")),
            json!("2026-01-02T03:04:05.678Z")
        );
        // Anything else is passed through as text rather than guessed at.
        assert_eq!(
            debezium_value(1184, Some("Fri 02 Jan 03:04:05.678 2026 UTC")),
            json!("Fri 02 Jan 03:04:05.678 2026 UTC")
        );
        assert_eq!(debezium_value(23, Some("42")), json!(42));
        assert_eq!(debezium_value(16, Some("t")), json!(true));
        assert_eq!(debezium_value(25, None), Value::Null);
    }
}
