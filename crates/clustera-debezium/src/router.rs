//! The Debezium Outbox Event Router's output: the record's key is the aggregate id, its
//! value the payload (an escaped JSON string, or expanded JSON with `expand.json.payload`),
//! and the event id and type travel in headers.

use serde_json::Value;

use crate::envelope::unwrap_schema;
use crate::outbox::OutboxEvent;
use crate::value;
use crate::DecodeError;

/// Header names the router was configured with. Defaults: `id` (the router's only header by
/// default) and `eventType` (the usual `table.fields.additional.placement=type:header:eventType`).
///
/// The event type is taken from the `event_type` header; without it, from the payload's
/// `event_type_field` (when set and a string there); without either, the aggregate type
/// stands for it, so that a router configured with nothing but its defaults (only the `id`
/// header) is still read: handlers are then registered by aggregate type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedHeaders {
    /// Header holding the event id.
    pub event_id: String,
    /// Header holding the event type, if present.
    pub event_type: String,
    /// A top-level string field of the payload holding the event type, used when the header
    /// is absent.
    pub event_type_field: Option<String>,
    /// Header holding the aggregate type, if placed in a header; otherwise it is taken from
    /// the topic name `<prefix>.<AggregateType>` (the router's `outbox.event.${routedByValue}`).
    pub aggregate_type: Option<String>,
}

impl Default for RoutedHeaders {
    fn default() -> Self {
        Self {
            event_id: "id".into(),
            event_type: "eventType".into(),
            event_type_field: None,
            aggregate_type: None,
        }
    }
}

/// A header's text. With the JSON header converter strings arrive quoted; both forms work.
fn header_text(headers: &[(&str, &[u8])], name: &str) -> Result<Option<String>, DecodeError> {
    let Some((_, raw)) = headers.iter().rev().find(|(n, _)| *n == name) else {
        return Ok(None);
    };
    let text = std::str::from_utf8(raw)
        .map_err(|_| DecodeError::invalid(format!("header {name}"), "is not UTF-8"))?;
    if text.starts_with('"') {
        if let Ok(Value::String(s)) = serde_json::from_str::<Value>(text) {
            return Ok(Some(s));
        }
    }
    Ok(Some(text.to_owned()))
}

/// Decodes one routed record.
pub fn decode_routed(
    topic: &str,
    key: Option<&[u8]>,
    value_bytes: Option<&[u8]>,
    headers: &[(&str, &[u8])],
    names: &RoutedHeaders,
) -> Result<OutboxEvent, DecodeError> {
    let event_id = header_text(headers, &names.event_id)?
        .ok_or_else(|| DecodeError::Missing(format!("header {}", names.event_id)))?;
    let event_type_header = header_text(headers, &names.event_type)?;
    let aggregate_type = match &names.aggregate_type {
        Some(h) => {
            header_text(headers, h)?.ok_or_else(|| DecodeError::Missing(format!("header {h}")))?
        }
        None => topic.rsplit('.').next().unwrap_or(topic).to_owned(),
    };
    let key = key.ok_or_else(|| DecodeError::Missing("key (the aggregate id)".into()))?;
    let key_value = value::parse(key).ok();
    let aggregate_id = match key_value.as_ref().map(unwrap_schema) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => std::str::from_utf8(key)
            .map_err(|_| DecodeError::invalid("key", "is not UTF-8"))?
            .to_owned(),
    };
    let bytes = value_bytes.ok_or_else(|| DecodeError::Missing("value (the payload)".into()))?;
    let parsed = value::parse(bytes)?;
    let payload = match unwrap_schema(&parsed) {
        Value::String(s) => serde_json::from_str(s).map_err(|e| {
            DecodeError::invalid("payload", format!("escaped payload is not JSON: {e}"))
        })?,
        other => other.clone(),
    };
    let event_type = match event_type_header {
        Some(t) => t,
        None => match names
            .event_type_field
            .as_ref()
            .and_then(|f| payload.get(f))
            .and_then(Value::as_str)
        {
            Some(t) => t.to_owned(),
            None => aggregate_type.clone(),
        },
    };
    for (field, v) in [
        ("event id", &event_id),
        ("event type", &event_type),
        ("aggregate id", &aggregate_id),
        ("aggregate type", &aggregate_type),
    ] {
        if v.trim().is_empty() {
            return Err(DecodeError::invalid(field, "is empty"));
        }
    }
    Ok(OutboxEvent {
        event_id,
        aggregate_id,
        aggregate_type,
        event_type,
        payload,
        status: None,
        created_at_us: None,
    })
}
