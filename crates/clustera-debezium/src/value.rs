//! Typed access to JSON fields, with errors that name the field.

use serde_json::{Map, Value};

use crate::DecodeError;

pub(crate) type Object = Map<String, Value>;

pub(crate) fn parse(bytes: &[u8]) -> Result<Value, DecodeError> {
    serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))
}

pub(crate) fn object<'a>(v: &'a Value, what: &'static str) -> Result<&'a Object, DecodeError> {
    v.as_object().ok_or(DecodeError::NotAnObject(what))
}

/// A field that may be absent or null.
pub(crate) fn optional<'a>(o: &'a Object, field: &str) -> Option<&'a Value> {
    o.get(field).filter(|v| !v.is_null())
}

pub(crate) fn string(o: &Object, field: &str) -> Result<String, DecodeError> {
    match optional(o, field) {
        None => Err(DecodeError::Missing(field.to_owned())),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(DecodeError::invalid(
            field,
            format!("expected a string, got {}", kind(other)),
        )),
    }
}

pub(crate) fn optional_string(o: &Object, field: &str) -> Result<Option<String>, DecodeError> {
    match optional(o, field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(DecodeError::invalid(
            field,
            format!("expected a string, got {}", kind(other)),
        )),
    }
}

pub(crate) fn optional_i64(o: &Object, field: &str) -> Result<Option<i64>, DecodeError> {
    match optional(o, field) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| DecodeError::invalid(field, format!("{n} is not a whole number"))),
        Some(other) => Err(DecodeError::invalid(
            field,
            format!("expected a number, got {}", kind(other)),
        )),
    }
}

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
