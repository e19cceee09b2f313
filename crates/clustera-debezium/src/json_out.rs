//! Ordered JSON output, written the way Kafka Connect's `JsonConverter` (Jackson) writes it:
//! compact, object fields in schema order, doubles as Java's `Double.toString` prints them,
//! NaN and infinities as strings. `serde_json::Map` sorts its keys unless the workspace turns on
//! `preserve_order` for every crate, so the encoders build this small tree instead.

use std::fmt::Write as _;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value whose objects keep their fields in insertion order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Int(i64),
    /// Any integer JSON text (a payload's numbers, kept as written).
    Number(String),
    /// A Kafka Connect FLOAT64.
    Double(f64),
    /// A Kafka Connect FLOAT32.
    Float(f32),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    pub(crate) fn str(s: impl Into<String>) -> Self {
        Json::Str(s.into())
    }

    /// An object from `(name, value)` pairs.
    pub(crate) fn object<const N: usize>(fields: [(&str, Json); N]) -> Self {
        Json::Object(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// Compact JSON text.
    pub(crate) fn to_text(&self) -> String {
        let mut out = String::new();
        self.write(&mut out);
        out
    }

    /// Appends the compact JSON text to `out`.
    pub(crate) fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Json::Number(n) => out.push_str(n),
            Json::Double(d) => write_java_float(out, *d, java_double_digits(*d)),
            Json::Float(f) => write_java_float(out, f64::from(*f), java_float_digits(*f)),
            Json::Str(s) => write_string(out, s),
            Json::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Json::Object(fields) => {
                out.push('{');
                for (i, (name, value)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(out, name);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }

    /// Parses JSON text keeping the order of object fields and the text of numbers.
    pub(crate) fn parse(text: &str) -> Result<Json, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Appends `s` as a JSON string.
pub(crate) fn write_string(out: &mut String, s: &str) {
    // Most strings need no escaping: copy them as they are.
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
        return;
    }
    // serde_json's escaping: `"`, `\` and control characters, nothing else (as Jackson).
    match serde_json::to_string(s) {
        Ok(quoted) => out.push_str(&quoted),
        // Serializing a &str cannot fail; keep the output valid JSON regardless.
        Err(_) => out.push_str("\"\""),
    }
}

/// Shortest round-trip digits and decimal exponent of a finite, non-zero double, as
/// `(digits, exponent)` with the value `0.d1d2d3… × 10^exponent`.
fn shortest_digits(scientific: &str) -> (String, i32) {
    // `{:e}` prints the shortest round-trip digits: `1.2345e-7`, `5e0`.
    let unsigned = scientific.trim_start_matches('-');
    let (mantissa, exp) = unsigned.split_once('e').unwrap_or((unsigned, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exp: i32 = exp.parse().unwrap_or(0);
    (digits, exp + 1)
}

fn java_double_digits(d: f64) -> (String, i32) {
    shortest_digits(&format!("{d:e}"))
}

fn java_float_digits(f: f32) -> (String, i32) {
    shortest_digits(&format!("{f:e}"))
}

/// Java's `Double.toString`/`Float.toString` (shortest digits since JDK 19): plain notation with
/// at least one fractional digit for 10^-3 <= |x| < 10^7, else `d.dddE±n`. Jackson writes NaN
/// and the infinities as strings by default (`WRITE_NAN_AS_STRINGS`).
fn write_java_float(out: &mut String, value: f64, (digits, exp): (String, i32)) {
    if value.is_nan() {
        return write_string(out, "NaN");
    }
    if value.is_infinite() {
        return write_string(out, if value > 0.0 { "Infinity" } else { "-Infinity" });
    }
    if value.is_sign_negative() {
        out.push('-');
    }
    if value == 0.0 {
        out.push_str("0.0");
        return;
    }
    let abs = value.abs();
    if (1e-3..1e7).contains(&abs) {
        if exp <= 0 {
            out.push_str("0.");
            for _ in 0..-exp {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let exp = exp as usize;
            if digits.len() <= exp {
                out.push_str(&digits);
                for _ in digits.len()..exp {
                    out.push('0');
                }
                out.push_str(".0");
            } else {
                out.push_str(&digits[..exp]);
                out.push('.');
                out.push_str(&digits[exp..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        out.push('.');
        if digits.len() > 1 {
            out.push_str(&digits[1..]);
        } else {
            out.push('0');
        }
        let _ = write!(out, "E{}", exp - 1);
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.to_string()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Json, E> {
        // Past a Java long, Jackson reads a BigInteger, which Debezium's JSON expansion types
        // as a double.
        Ok(match i64::try_from(v) {
            Ok(_) => Json::Number(v.to_string()),
            Err(_) => Json::Double(v as f64),
        })
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        Ok(Json::Double(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Json, E> {
        Ok(Json::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Json, E> {
        Ok(Json::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut fields = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            fields.push((k, v));
        }
        Ok(Json::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(x: f64) -> String {
        Json::Double(x).to_text()
    }

    #[test]
    fn doubles_as_java_prints_them() {
        assert_eq!(d(1.0), "1.0");
        assert_eq!(d(-1.5), "-1.5");
        assert_eq!(d(39.98), "39.98");
        assert_eq!(d(0.001), "0.001");
        assert_eq!(d(0.0001), "1.0E-4");
        assert_eq!(d(1234567.0), "1234567.0");
        assert_eq!(d(1.0e7), "1.0E7");
        assert_eq!(d(1.2345e10), "1.2345E10");
        assert_eq!(d(100.0), "100.0");
        assert_eq!(d(0.0), "0.0");
        assert_eq!(d(-0.0), "-0.0");
        assert_eq!(d(f64::NAN), "\"NaN\"");
        assert_eq!(d(f64::INFINITY), "\"Infinity\"");
        assert_eq!(d(f64::NEG_INFINITY), "\"-Infinity\"");
        assert_eq!(Json::Float(1.1).to_text(), "1.1");
        assert_eq!(Json::Float(3.4e38).to_text(), "3.4E38");
    }

    #[test]
    fn objects_keep_their_order_and_strings_are_escaped() {
        let parsed = Json::parse(r#"{"b": 1, "a": [true, null, "x\"y"], "c": 2.5}"#).unwrap();
        assert_eq!(
            parsed.to_text(),
            r#"{"b":1,"a":[true,null,"x\"y"],"c":2.5}"#
        );
        // Past a Java long, a double, written as Java prints it.
        assert_eq!(
            Json::parse("18446744073709551615").unwrap().to_text(),
            "1.8446744073709552E19"
        );
        assert_eq!(
            Json::parse("9223372036854775807").unwrap().to_text(),
            "9223372036854775807"
        );
        assert_eq!(
            Json::parse("123456789012345678901234567890")
                .unwrap()
                .to_text(),
            "1.2345678901234568E29"
        );
    }
}
