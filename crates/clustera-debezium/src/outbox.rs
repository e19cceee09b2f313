//! The transactional-outbox event carried by a change to the outbox table.

use serde_json::Value;

use crate::envelope::{ChangeEvent, Op};
use crate::value::{self, Object};
use crate::DecodeError;

/// Column names of the outbox table; the defaults are the seed's `event_outbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxColumns {
    /// Unique id of the event (uuid).
    pub event_id: String,
    /// The aggregate the event is about (uuid); events of one aggregate stay in order.
    pub aggregate_id: String,
    /// `User`, `Activity`, …
    pub aggregate_type: String,
    /// `UserCreated`, `ParticipantJoined`, …
    pub event_type: String,
    /// The event's data (jsonb).
    pub payload: String,
    /// `pending`, … (optional).
    pub status: String,
    /// When the row was written (optional).
    pub created_at: String,
}

impl Default for OutboxColumns {
    fn default() -> Self {
        Self {
            event_id: "event_id".into(),
            aggregate_id: "aggregate_id".into(),
            aggregate_type: "aggregate_type".into(),
            event_type: "event_type".into(),
            payload: "payload".into(),
            status: "status".into(),
            created_at: "created_at".into(),
        }
    }
}

impl OutboxColumns {
    /// The outbox table the Outbox Event Router expects by default
    /// (`id`, `aggregatetype`, `aggregateid`, `type`, `payload`): what a Debezium user's table
    /// has. It has no status or creation-time column.
    pub fn debezium() -> Self {
        Self {
            event_id: "id".into(),
            aggregate_id: "aggregateid".into(),
            aggregate_type: "aggregatetype".into(),
            event_type: "type".into(),
            payload: "payload".into(),
            // No such columns: an empty name is never a column.
            status: String::new(),
            created_at: String::new(),
        }
    }

    /// Whether `row` has this mapping's event-id and event-type columns.
    fn fits(&self, row: &Object) -> bool {
        row.contains_key(&self.event_id) && row.contains_key(&self.event_type)
    }
}

/// A typed outbox event.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEvent {
    /// Unique id (idempotency key).
    pub event_id: String,
    /// The aggregate's id.
    pub aggregate_id: String,
    /// The aggregate's type.
    pub aggregate_type: String,
    /// The event's type: selects the handlers.
    pub event_type: String,
    /// The event's data, always expanded JSON.
    pub payload: Value,
    /// The row's status column, if present.
    pub status: Option<String>,
    /// When the row was written, in microseconds since the epoch, if present.
    pub created_at_us: Option<i64>,
}

impl OutboxEvent {
    /// The event in a change to the outbox table: the new row for creates, updates and
    /// snapshot reads, the old row for deletes; `None` for truncates and logical messages.
    pub fn from_change(
        event: &ChangeEvent,
        columns: &OutboxColumns,
    ) -> Result<Option<Self>, DecodeError> {
        let row = match event.op {
            Op::Create | Op::Update | Op::Read => event.after.as_ref(),
            Op::Delete => event.before.as_ref(),
            Op::Truncate | Op::Message => return Ok(None),
        };
        let row = row.ok_or_else(|| DecodeError::Missing("after".into()))?;
        if !row.contains_key(&columns.event_type) && !row.contains_key(&columns.event_id) {
            return Err(DecodeError::NotOutbox(event.source.qualified_table()));
        }
        Self::from_row(row, columns).map(Some)
    }

    /// Like [`from_change`](Self::from_change), with the first of `mappings` whose event-id
    /// and event-type columns are in the row: one processor reads Clustera's outbox table and
    /// a Debezium user's standard one alike.
    pub fn from_change_any(
        event: &ChangeEvent,
        mappings: &[OutboxColumns],
    ) -> Result<Option<Self>, DecodeError> {
        let row = match event.op {
            Op::Create | Op::Update | Op::Read => event.after.as_ref(),
            Op::Delete => event.before.as_ref(),
            Op::Truncate | Op::Message => return Ok(None),
        };
        let row = row.ok_or_else(|| DecodeError::Missing("after".into()))?;
        match mappings.iter().find(|m| m.fits(row)) {
            Some(columns) => Self::from_row(row, columns).map(Some),
            None => Err(DecodeError::NotOutbox(event.source.qualified_table())),
        }
    }

    /// Reads an outbox row as Debezium encodes it: uuids as strings, jsonb as a JSON string
    /// (or already expanded), timestamps as ISO-8601 strings or microsecond integers.
    pub fn from_row(row: &Object, columns: &OutboxColumns) -> Result<Self, DecodeError> {
        let payload = match value::optional(row, &columns.payload) {
            None => Value::Null,
            Some(Value::String(s)) => serde_json::from_str(s).map_err(|e| {
                DecodeError::invalid(&columns.payload, format!("jsonb column is not JSON: {e}"))
            })?,
            Some(other) => other.clone(),
        };
        let created_at_us = match value::optional(row, &columns.created_at) {
            None => None,
            Some(Value::Number(n)) => Some(n.as_i64().ok_or_else(|| {
                DecodeError::invalid(&columns.created_at, format!("{n} is not a whole number"))
            })?),
            Some(Value::String(s)) => Some(parse_timestamp_us(s).ok_or_else(|| {
                DecodeError::invalid(
                    &columns.created_at,
                    format!("{s:?} is not an ISO-8601 timestamp"),
                )
            })?),
            Some(other) => {
                return Err(DecodeError::invalid(
                    &columns.created_at,
                    format!("expected a timestamp, got {}", value::kind(other)),
                ))
            }
        };
        // Identifiers are text or uuid columns (strings); an integer column (a `bigint`
        // aggregate id) is taken as its decimal text.
        let id = |field: &str| -> Result<String, DecodeError> {
            let s = match value::optional(row, field) {
                Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
                _ => value::string(row, field)?,
            };
            if s.trim().is_empty() {
                return Err(DecodeError::invalid(field, "is empty"));
            }
            Ok(s)
        };
        Ok(Self {
            event_id: id(&columns.event_id)?,
            aggregate_id: id(&columns.aggregate_id)?,
            aggregate_type: id(&columns.aggregate_type)?,
            event_type: id(&columns.event_type)?,
            payload,
            status: value::optional_string(row, &columns.status)?,
            created_at_us,
        })
    }
}

/// Parses Debezium's ZonedTimestamp (RFC 3339; a space instead of `T` is accepted) into
/// microseconds since the epoch.
pub(crate) fn parse_timestamp_us(s: &str) -> Option<i64> {
    let s = s.trim();
    let normalized = match s.get(10..11) {
        Some(" ") => format!("{}T{}", &s[..10], &s[11..]),
        _ => s.to_owned(),
    };
    chrono::DateTime::parse_from_rfc3339(&normalized)
        .ok()
        .map(|t| t.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::parse_timestamp_us;

    #[test]
    fn timestamps_in_debezium_forms() {
        assert_eq!(parse_timestamp_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_timestamp_us("2024-01-15T10:30:00.123456Z"),
            Some(1_705_314_600_123_456)
        );
        assert_eq!(
            parse_timestamp_us("2024-01-15T12:30:00.123456+02:00"),
            Some(1_705_314_600_123_456)
        );
        assert_eq!(
            parse_timestamp_us("2024-01-15 10:30:00.1Z"),
            Some(1_705_314_600_100_000)
        );
        assert_eq!(
            parse_timestamp_us("2000-02-29T00:00:00Z"),
            Some(951_782_400_000_000)
        );
        for bad in [
            "",
            "2024-13-01T00:00:00Z",
            "yesterday",
            "2024-01-15T25:00:00Z",
            "2024-01-15T10:30:00.12a",
        ] {
            assert_eq!(parse_timestamp_us(bad), None, "{bad:?}");
        }
    }
}
