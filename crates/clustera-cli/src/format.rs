//! How `clustera consume` prints a record: `text`, `json`, or a format string with kcat's
//! tokens, rendered byte for byte as `kcat -C -f` renders it (kcat 1.7, without `-Z`).

use std::io::Write;

use base64::Engine as _;
use serde_json::{Map, Value};

/// One record as the formats see it.
pub struct Record<'a> {
    /// Its topic.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Milliseconds since the epoch, when the record has a timestamp.
    pub timestamp: Option<i64>,
    /// Its key; `None` is a null key.
    pub key: Option<&'a [u8]>,
    /// Its value; `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    /// Its headers in order; a `None` value is a null header.
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
}

/// An output format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// `KEY<TAB>VALUE<LF>`, raw bytes: kcat's `-f '%k\t%s\n'`.
    Text,
    /// One JSON object per line.
    Json,
    /// A kcat format string, parsed.
    Kcat(Vec<Piece>),
}

/// A part of a kcat format string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal bytes (escapes already converted).
    Literal(Vec<u8>),
    /// `%t`
    Topic,
    /// `%p`
    Partition,
    /// `%o`
    Offset,
    /// `%k`
    Key,
    /// `%K`: the key's length, -1 for a null key.
    KeyLength,
    /// `%s`
    Value,
    /// `%S`: the value's length, -1 for a tombstone.
    ValueLength,
    /// `%R`: the value's length as a big-endian 32-bit integer, -1 for a tombstone.
    ValueLengthBinary,
    /// `%T`: milliseconds since the epoch, -1 without a timestamp.
    Timestamp,
    /// `%h`: `name=value` pairs separated by commas.
    Headers,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            // A string without a token or an escape is more likely a misspelt format name
            // than a constant line per record.
            _ if !s.contains(['%', '\\']) => Err(format!(
                "{s:?} is not a format: use text, json, or a kcat format string such as '%k\\t%s\\n' \
                 (tokens %t %p %o %k %K %s %S %R %T %h %%, escapes \\n \\r \\t \\xHH)"
            )),
            _ => parse_kcat(s).map(Self::Kcat),
        }
    }
}

/// Parses a kcat format string: text up to each `%`, then the token after it.
pub fn parse_kcat(s: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find('%') {
        if at > 0 {
            pieces.push(Piece::Literal(unescape(&rest.as_bytes()[..at])));
        }
        let mut after = rest[at + 1..].chars();
        let piece = match after.next() {
            Some('t') => Piece::Topic,
            Some('p') => Piece::Partition,
            Some('o') => Piece::Offset,
            Some('k') => Piece::Key,
            Some('K') => Piece::KeyLength,
            Some('s') => Piece::Value,
            Some('S') => Piece::ValueLength,
            Some('R') => Piece::ValueLengthBinary,
            Some('T') => Piece::Timestamp,
            Some('h') => Piece::Headers,
            Some('%') => Piece::Literal(b"%".to_vec()),
            None => return Err(format!("format {s:?} ends with a lone %")),
            Some(c) => {
                return Err(format!(
                    "format {s:?}: %{c} is not a token (tokens: %t %p %o %k %K %s %S %R %T %h %%)"
                ))
            }
        };
        pieces.push(piece);
        rest = after.as_str();
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(unescape(rest.as_bytes())));
    }
    Ok(pieces)
}

/// Converts kcat's escapes in one literal run: `\n \r \t`, `\xHH` (hexadecimal), `\NNN` (C's
/// `strtoul` with base 0: decimal, `0`-prefixed octal or `0x`-prefixed hexadecimal), and any
/// other escaped character as itself. kcat keeps each run as a C string, so a run ends at the
/// first NUL it produces.
fn unescape(run: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(run.len());
    let mut i = 0;
    while i < run.len() {
        let c = run[i];
        // A backslash that ends the run is kept as it is.
        if c != b'\\' || i + 1 == run.len() {
            out.push(c);
            i += 1;
            continue;
        }
        i += 1;
        let byte = match run[i] {
            b't' => b'\t',
            b'n' => b'\n',
            b'r' => b'\r',
            b'x' => {
                i += 1;
                match run.get(i) {
                    // kcat only reads a number when a decimal digit follows, so `\xff` is
                    // "ff": the `x` is dropped and the letters stay.
                    Some(d) if d.is_ascii_digit() => {
                        let (value, used) = strtoul(&run[i..], 16);
                        i += used - 1;
                        value
                    }
                    Some(other) => *other,
                    None => 0,
                }
            }
            d if d.is_ascii_digit() => {
                let (value, used) = strtoul(&run[i..], 0);
                i += used - 1;
                value
            }
            other => other,
        };
        if byte == 0 {
            break;
        }
        out.push(byte);
        i += 1;
    }
    out
}

/// C's `strtoul` on input that starts with a decimal digit, for base 16 or 0, truncated to a
/// byte as kcat's `(char)` cast does: the byte and how many input bytes were read (at least 1).
fn strtoul(s: &[u8], base: u32) -> (u8, usize) {
    let hex_prefix =
        s.len() > 2 && s[0] == b'0' && (s[1] == b'x' || s[1] == b'X') && s[2].is_ascii_hexdigit();
    let (radix, start) = match base {
        16 if hex_prefix => (16, 2),
        16 => (16, 0),
        _ if hex_prefix => (16, 2),
        _ if s[0] == b'0' => (8, 0),
        _ => (10, 0),
    };
    let mut value: u64 = 0;
    let mut end = start;
    while let Some(d) = s.get(end).and_then(|c| (*c as char).to_digit(radix)) {
        // strtoul saturates at ULONG_MAX on overflow.
        value = value
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(u64::from(d)))
            .unwrap_or(u64::MAX);
        end += 1;
    }
    ((value & 0xff) as u8, end.max(1))
}

/// Writes `record` in `format`.
pub fn write(out: &mut impl Write, format: &Format, record: &Record<'_>) -> std::io::Result<()> {
    match format {
        Format::Text => {
            out.write_all(record.key.unwrap_or_default())?;
            out.write_all(b"\t")?;
            out.write_all(record.value.unwrap_or_default())?;
            out.write_all(b"\n")
        }
        Format::Json => {
            serde_json::to_writer(&mut *out, &json(record))?;
            out.write_all(b"\n")
        }
        Format::Kcat(pieces) => {
            for piece in pieces {
                write_piece(out, piece, record)?;
            }
            Ok(())
        }
    }
}

fn write_piece(out: &mut impl Write, piece: &Piece, r: &Record<'_>) -> std::io::Result<()> {
    let length = |b: Option<&[u8]>| b.map_or(-1, |b| i64::try_from(b.len()).unwrap_or(i64::MAX));
    match piece {
        Piece::Literal(bytes) => out.write_all(bytes),
        Piece::Topic => out.write_all(r.topic.as_bytes()),
        Piece::Partition => write!(out, "{}", r.partition),
        Piece::Offset => write!(out, "{}", r.offset),
        // kcat prints nothing for a null key or value (it would print "NULL" with -Z).
        Piece::Key => out.write_all(r.key.unwrap_or_default()),
        Piece::KeyLength => write!(out, "{}", length(r.key)),
        Piece::Value => out.write_all(r.value.unwrap_or_default()),
        Piece::ValueLength => write!(out, "{}", length(r.value)),
        Piece::ValueLengthBinary => {
            // kcat casts the length to a 32-bit integer: -1 becomes ff ff ff ff.
            let n = length(r.value) as i32;
            out.write_all(&n.to_be_bytes())
        }
        Piece::Timestamp => write!(out, "{}", r.timestamp.unwrap_or(-1)),
        Piece::Headers => {
            for (i, (name, value)) in r.headers.iter().enumerate() {
                if i > 0 {
                    out.write_all(b",")?;
                }
                // kcat prints names and values with printf's %s, which stops at a NUL.
                out.write_all(until_nul(name.as_bytes()))?;
                out.write_all(b"=")?;
                match value {
                    Some(v) => out.write_all(until_nul(v))?,
                    None => out.write_all(b"NULL")?,
                }
            }
            Ok(())
        }
    }
}

fn until_nul(b: &[u8]) -> &[u8] {
    b.split(|c| *c == 0).next().unwrap_or_default()
}

/// The JSON object of a record: `topic`, `partition`, `offset`, `timestamp` (milliseconds or
/// null), `key` and `value` (text, base64 with `key_encoding`/`value_encoding: "base64"`
/// when not UTF-8, null when null), and `headers` (name → value; a repeated name → a list in
/// order; a null header → null; a header that is not UTF-8 → `{"base64": "…"}`).
pub fn json(r: &Record<'_>) -> Value {
    let mut o = Map::new();
    o.insert("topic".into(), r.topic.into());
    o.insert("partition".into(), r.partition.into());
    o.insert("offset".into(), r.offset.into());
    o.insert("timestamp".into(), r.timestamp.into());
    for (field, bytes) in [("key", r.key), ("value", r.value)] {
        let (v, base64) = bytes_value(bytes);
        o.insert(field.into(), v);
        if base64 {
            o.insert(format!("{field}_encoding"), "base64".into());
        }
    }
    let mut headers = Map::new();
    for (name, value) in &r.headers {
        let v = match value {
            None => Value::Null,
            Some(v) => match std::str::from_utf8(v) {
                Ok(s) => s.into(),
                Err(_) => serde_json::json!({ "base64": b64(v) }),
            },
        };
        match headers.get_mut(*name) {
            None => {
                headers.insert((*name).to_owned(), v);
            }
            // A single value is never an array, so an array is the list of a repeated name.
            Some(Value::Array(list)) => list.push(v),
            Some(first) => *first = Value::Array(vec![first.take(), v]),
        }
    }
    o.insert("headers".into(), headers.into());
    o.into()
}

fn bytes_value(bytes: Option<&[u8]>) -> (Value, bool) {
    match bytes {
        None => (Value::Null, false),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => (s.into(), false),
            Err(_) => (b64(b).into(), true),
        },
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(headers: Vec<(&'a str, Option<&'a [u8]>)>) -> Record<'a> {
        Record {
            topic: "t",
            partition: 2,
            offset: 7,
            timestamp: Some(1_700_000_000_123),
            key: Some(b"k"),
            value: Some(b"v"),
            headers,
        }
    }

    fn render(format: &str, r: &Record<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        write(&mut out, &format.parse().unwrap(), r).unwrap();
        out
    }

    #[test]
    fn kcat_tokens_and_escapes() {
        let r = record(vec![("a", Some(b"1")), ("a", Some(b"")), ("b", None)]);
        assert_eq!(
            render("%t|%p|%o|%k|%K|%s|%S|%T|%h|%%\\t\\n", &r),
            b"t|2|7|k|1|v|1|1700000000123|a=1,a=,b=NULL|%\t\n"
        );
        // The escapes as kcat 1.7.1 converts them (checked against it).
        assert_eq!(
            render("\\x41\\x4f|\\65|\\0101|\\q|\\xff%s", &r),
            b"AO|A|A|q|ffv"
        );
        assert_eq!(render("a\\%s", &r), b"a\\v");
        assert_eq!(render("ab\\0cd%s", &r), b"abv", "a NUL ends the run");
        assert_eq!(render("%R", &r), [0, 0, 0, 1]);
    }

    #[test]
    fn null_key_and_tombstone() {
        let r = Record {
            key: None,
            value: None,
            timestamp: None,
            ..record(vec![])
        };
        assert_eq!(render("[%k|%K|%s|%S|%T|%h]", &r), b"[|-1||-1|-1|]");
        assert_eq!(render("%R", &r), [0xff; 4]);
        assert_eq!(render("text", &r), b"\t\n");
    }

    #[test]
    fn bad_formats_are_refused_with_the_reason() {
        assert!("jsno"
            .parse::<Format>()
            .unwrap_err()
            .starts_with("\"jsno\" is not a format"));
        assert_eq!(
            "%s %q".parse::<Format>().unwrap_err(),
            "format \"%s %q\": %q is not a token (tokens: %t %p %o %k %K %s %S %R %T %h %%)"
        );
        assert_eq!(
            "%s%".parse::<Format>().unwrap_err(),
            "format \"%s%\" ends with a lone %"
        );
    }

    #[test]
    fn json_keeps_every_header_and_marks_base64() {
        let r = Record {
            value: Some(&[0xff, 0x00]),
            ..record(vec![
                ("a", Some(b"1")),
                ("b", None),
                ("a", Some(b"2")),
                ("a", Some(b"3")),
                ("c", Some(&[0xfe])),
            ])
        };
        assert_eq!(
            json(&r),
            serde_json::json!({
                "topic": "t", "partition": 2, "offset": 7, "timestamp": 1_700_000_000_123_i64,
                "key": "k", "value": "/wA=", "value_encoding": "base64",
                "headers": {"a": ["1", "2", "3"], "b": null, "c": {"base64": "/g=="}},
            })
        );
        let tombstone = Record {
            key: None,
            value: None,
            timestamp: None,
            ..record(vec![])
        };
        assert_eq!(
            json(&tombstone),
            serde_json::json!({
                "topic": "t", "partition": 2, "offset": 7, "timestamp": null,
                "key": null, "value": null, "headers": {},
            })
        );
    }
}
