//! JSON Schema: compiling a schema once, validating values against it, and decoding JSON into
//! a serde type with the path of the field that did not fit.
//!
//! Validation is `jsonschema`'s (drafts 4 to 2020-12, the draft chosen by `$schema`); this
//! module only turns its findings into [`Violation`]s that name the field. Remote `$ref`s are
//! never fetched: a schema must be self-contained (bundle it first), so validation never does
//! I/O. `format` keywords are asserted (a `date-time` that does not parse is a violation),
//! which is stricter than validators that treat them as annotations.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::SchemaError;

/// How many violations one error reports; the rest are counted.
const MAX_REPORTED: usize = 5;

/// One way a value breaks its schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Where, as a JSON pointer into the value (`/items/0/quantity`; `/` for the whole value).
    pub path: String,
    /// What is wrong, as the validator says it (`0 is less than the minimum of 1`).
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at {}: {}", self.path, self.reason)
    }
}

/// The violations of one value, formatted for a log line or a dead-letter header.
pub(crate) fn describe(violations: &[Violation]) -> String {
    let mut out = violations
        .iter()
        .take(MAX_REPORTED)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    if violations.len() > MAX_REPORTED {
        out.push_str(&format!(" (and {} more)", violations.len() - MAX_REPORTED));
    }
    out
}

/// A compiled JSON Schema, cheap to clone and share between partitions.
#[derive(Clone)]
pub struct JsonSchema {
    inner: Arc<Inner>,
}

struct Inner {
    text: String,
    title: Option<String>,
    validator: jsonschema::Validator,
}

impl fmt::Debug for JsonSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonSchema")
            .field("title", &self.inner.title)
            .finish_non_exhaustive()
    }
}

impl JsonSchema {
    /// Compiles a schema from its JSON text. Fails on text that is not JSON, or not a valid
    /// schema (an unknown type, a `$ref` that does not resolve inside the document).
    pub fn parse(text: &str) -> Result<Self, SchemaError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| SchemaError::Schema(format!("JSON Schema is not JSON: {e}")))?;
        Self::compile(text.to_owned(), &value)
    }

    /// Compiles a schema given as a JSON value.
    pub fn from_value(schema: &Value) -> Result<Self, SchemaError> {
        Self::compile(schema.to_string(), schema)
    }

    /// Reads and compiles a schema file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, SchemaError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            SchemaError::Schema(format!("cannot read JSON Schema {}: {e}", path.display()))
        })?;
        Self::parse(&text)
            .map_err(|e| SchemaError::Schema(format!("{}: {}", path.display(), e.reason())))
    }

    fn compile(text: String, value: &Value) -> Result<Self, SchemaError> {
        // Formats (`date-time`, `email`, `uuid`...) are checked, not just annotations: a
        // timestamp that does not parse is as bad as a missing field.
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(value)
            .map_err(|e| SchemaError::Schema(format!("invalid JSON Schema: {e}")))?;
        let title = value
            .get("title")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(Self {
            inner: Arc::new(Inner {
                text,
                title,
                validator,
            }),
        })
    }

    /// The schema's text, as registered with a Schema Registry.
    pub fn text(&self) -> &str {
        &self.inner.text
    }

    /// Its `title`: the record name for the record subject name strategies.
    pub fn title(&self) -> Option<&str> {
        self.inner.title.as_deref()
    }

    /// Every way `value` breaks the schema; empty when it is valid.
    pub fn violations(&self, value: &Value) -> Vec<Violation> {
        self.inner
            .validator
            .iter_errors(value)
            .map(|e| {
                let path = e.instance_path().to_string();
                Violation {
                    path: if path.is_empty() { "/".into() } else { path },
                    reason: e.to_string(),
                }
            })
            .collect()
    }

    /// `Ok` when `value` is valid, else every violation.
    pub fn validate(&self, value: &Value) -> Result<(), SchemaError> {
        let violations = self.violations(value);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(SchemaError::Invalid(violations))
        }
    }
}

/// Decodes JSON text into `T`, validating it first when a schema is given. A value that does
/// not fit `T` is reported with the path of the field (`items[0].quantity`).
pub fn decode<T: DeserializeOwned>(
    bytes: &[u8],
    schema: Option<&JsonSchema>,
) -> Result<T, SchemaError> {
    let Some(schema) = schema else {
        // Straight from the bytes: no intermediate `Value` (four times faster, see
        // BENCHMARKS.md), the path tracked all the same.
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = path_of(e.path());
            let inner = e.into_inner();
            if inner.is_data() {
                SchemaError::Decode {
                    type_name: std::any::type_name::<T>(),
                    path,
                    reason: inner.to_string(),
                }
            } else {
                syntax::<T>(inner)
            }
        })?;
        de.end().map_err(syntax::<T>)?;
        return Ok(value);
    };
    let value: Value = serde_json::from_slice(bytes).map_err(syntax::<T>)?;
    schema.validate(&value)?;
    from_value(value)
}

fn syntax<T>(e: serde_json::Error) -> SchemaError {
    SchemaError::Decode {
        type_name: std::any::type_name::<T>(),
        path: String::new(),
        reason: format!("not JSON: {e}"),
    }
}

/// Turns a JSON value into `T`, naming the field that does not fit.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, SchemaError> {
    serde_path_to_error::deserialize(value).map_err(|e| SchemaError::Decode {
        type_name: std::any::type_name::<T>(),
        path: path_of(e.path()),
        reason: e.into_inner().to_string(),
    })
}

/// Encodes `value` as JSON text, refusing it when it breaks `schema`: outputs are checked
/// before they are produced, so a bug never reaches consumers.
pub fn encode<T: Serialize>(
    value: &T,
    schema: Option<&JsonSchema>,
) -> Result<Vec<u8>, SchemaError> {
    let json = serde_json::to_value(value).map_err(|e| SchemaError::Encode(e.to_string()))?;
    if let Some(schema) = schema {
        schema.validate(&json)?;
    }
    serde_json::to_vec(&json).map_err(|e| SchemaError::Encode(e.to_string()))
}

fn path_of(path: &serde_path_to_error::Path) -> String {
    let p = path.to_string();
    if p == "." {
        String::new()
    } else {
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Line {
        sku: String,
        quantity: u32,
    }

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Order {
        order_id: String,
        items: Vec<Line>,
    }

    fn schema() -> JsonSchema {
        JsonSchema::from_value(&json!({
            "title": "Order",
            "type": "object",
            "required": ["order_id", "items"],
            "properties": {
                "order_id": {"type": "string", "minLength": 1},
                "items": {"type": "array", "minItems": 1, "items": {
                    "type": "object",
                    "required": ["sku", "quantity"],
                    "properties": {
                        "sku": {"type": "string"},
                        "quantity": {"type": "integer", "minimum": 1}
                    }
                }}
            }
        }))
        .unwrap()
    }

    #[test]
    fn valid_values_decode() {
        let order: Order = decode(
            br#"{"order_id":"o1","items":[{"sku":"a","quantity":2}]}"#,
            Some(&schema()),
        )
        .unwrap();
        assert_eq!(order.items[0].quantity, 2);
        assert_eq!(schema().title(), Some("Order"));
    }

    #[test]
    fn violations_name_the_field() {
        let err = decode::<Order>(
            br#"{"order_id":"","items":[{"sku":"a","quantity":0}]}"#,
            Some(&schema()),
        )
        .unwrap_err();
        let SchemaError::Invalid(v) = &err else {
            panic!("{err:?}")
        };
        let paths: Vec<_> = v.iter().map(|v| v.path.as_str()).collect();
        assert_eq!(paths.len(), 2, "{v:?}");
        assert!(paths.contains(&"/order_id"), "{paths:?}");
        assert!(paths.contains(&"/items/0/quantity"), "{paths:?}");
        let text = err.to_string();
        assert!(
            text.contains("at /items/0/quantity: 0 is less than the minimum of 1"),
            "{text}"
        );
    }

    #[test]
    fn type_mismatch_without_schema_names_the_field() {
        let err = decode::<Order>(
            br#"{"order_id":"o1","items":[{"sku":"a","quantity":"two"}]}"#,
            None,
        )
        .unwrap_err();
        let SchemaError::Decode { path, reason, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(path, "items[0].quantity");
        assert!(reason.contains("invalid type: string \"two\""), "{reason}");
        assert!(
            err.to_string().contains("field `items[0].quantity`"),
            "{err}"
        );
        let err = decode::<Order>(b"{not json", None).unwrap_err().to_string();
        assert!(err.contains("not JSON"), "{err}");
        let err = decode::<Order>(br#"{"order_id":"o","items":[]} x"#, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not JSON") && err.contains("trailing"),
            "{err}"
        );
    }

    #[test]
    fn outputs_are_checked_before_encoding() {
        let bad = Order {
            order_id: "o1".into(),
            items: vec![],
        };
        let err = encode(&bad, Some(&schema())).unwrap_err().to_string();
        assert!(err.contains("at /items"), "{err}");
        let good = Order {
            order_id: "o1".into(),
            items: vec![Line {
                sku: "a".into(),
                quantity: 1,
            }],
        };
        let bytes = encode(&good, Some(&schema())).unwrap();
        assert_eq!(decode::<Order>(&bytes, Some(&schema())).unwrap(), good);
    }

    #[test]
    fn bad_schemas_are_refused() {
        let err = JsonSchema::parse(r#"{"type": "no-such-type"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid JSON Schema"), "{err}");
        assert!(JsonSchema::parse("{").is_err());
        let err = JsonSchema::from_file("/no/such/schema.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/no/such/schema.json"), "{err}");
    }

    #[test]
    fn formats_are_checked() {
        let s = JsonSchema::parse(r#"{"type":"string","format":"date-time"}"#).unwrap();
        assert!(s.validate(&json!("2026-12-03T19:00:00Z")).is_ok());
        let err = s.validate(&json!("yesterday")).unwrap_err().to_string();
        assert!(err.contains("date-time"), "{err}");
    }

    #[test]
    fn reports_are_bounded() {
        let many: Vec<Violation> = (0..8)
            .map(|i| Violation {
                path: format!("/{i}"),
                reason: "bad".into(),
            })
            .collect();
        let text = describe(&many);
        assert!(text.ends_with("(and 3 more)"), "{text}");
    }
}
