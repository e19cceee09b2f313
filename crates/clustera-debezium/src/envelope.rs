//! The change-event envelope: `op`, `before`, `after`, `source`, timestamps; with or without
//! the JSON converter's `{schema, payload}` wrapper.

use serde_json::Value;

use crate::source::Source;
use crate::value::{self, Object};
use crate::DecodeError;

/// The kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `c`: a row was inserted.
    Create,
    /// `u`: a row was updated.
    Update,
    /// `d`: a row was deleted.
    Delete,
    /// `r`: a row was read by a snapshot.
    Read,
    /// `t`: the table was truncated.
    Truncate,
    /// `m`: a logical decoding message.
    Message,
}

impl Op {
    fn parse(s: &str) -> Result<Self, DecodeError> {
        Ok(match s {
            "c" => Op::Create,
            "u" => Op::Update,
            "d" => Op::Delete,
            "r" => Op::Read,
            "t" => Op::Truncate,
            "m" => Op::Message,
            other => return Err(DecodeError::UnknownOp(other.to_owned())),
        })
    }
}

/// One decoded change event.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeEvent {
    /// What happened.
    pub op: Op,
    /// The row before the change (updates with full replica identity, deletes).
    pub before: Option<Object>,
    /// The row after the change (creates, updates, snapshot reads).
    pub after: Option<Object>,
    /// Where it came from.
    pub source: Source,
    /// When Debezium processed it, in microseconds since the epoch, from the most precise of
    /// `ts_ns`, `ts_us` and `ts_ms`.
    pub ts_us: Option<i64>,
    /// For `op = m`: the logical message's prefix and content.
    pub message: Option<Object>,
}

/// What a record's value decodes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A null value: the tombstone Debezium sends after a delete, for log compaction.
    Tombstone,
    /// A change.
    Change(Box<ChangeEvent>),
}

/// Decodes a record value (`None` for a null value).
pub fn decode(value: Option<&[u8]>) -> Result<Decoded, DecodeError> {
    let Some(bytes) = value else {
        return Ok(Decoded::Tombstone);
    };
    let parsed = value::parse(bytes)?;
    let envelope = unwrap_schema(&parsed);
    if envelope.is_null() {
        return Ok(Decoded::Tombstone);
    }
    let o = value::object(envelope, "the change event")?;
    let op = Op::parse(&value::string(o, "op")?)?;
    let row = |field: &str| -> Result<Option<Object>, DecodeError> {
        match value::optional(o, field) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(other) => Err(DecodeError::invalid(
                field,
                format!("expected an object, got {}", value::kind(other)),
            )),
        }
    };
    let (before, after) = (row("before")?, row("after")?);
    match op {
        Op::Create | Op::Update | Op::Read if after.is_none() => {
            return Err(DecodeError::Missing("after".into()))
        }
        Op::Delete if before.is_none() => return Err(DecodeError::Missing("before".into())),
        _ => {}
    }
    let source = match value::optional(o, "source") {
        None => Source::default(),
        Some(v) => Source::decode(value::object(v, "source")?)?,
    };
    let ts_us = match (
        value::optional_i64(o, "ts_ns")?,
        value::optional_i64(o, "ts_us")?,
        value::optional_i64(o, "ts_ms")?,
    ) {
        (Some(ns), _, _) => Some(ns / 1_000),
        (None, Some(us), _) => Some(us),
        (None, None, Some(ms)) => ms.checked_mul(1_000),
        _ => None,
    };
    let message = match value::optional(o, "message") {
        None if op == Op::Message => return Err(DecodeError::Missing("message".into())),
        None => None,
        Some(v) => Some(value::object(v, "message")?.clone()),
    };
    Ok(Decoded::Change(Box::new(ChangeEvent {
        op,
        before,
        after,
        source,
        ts_us,
        message,
    })))
}

/// The JSON converter with `schemas.enable=true` wraps every value as `{schema, payload}`.
pub(crate) fn unwrap_schema(v: &Value) -> &Value {
    match v {
        Value::Object(o) if o.contains_key("schema") && o.contains_key("payload") => &o["payload"],
        other => other,
    }
}
