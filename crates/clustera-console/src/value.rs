//! How a key, value or header is shown: JSON pretty-printed, UTF-8 text as it is, anything
//! else as a hex dump, so that binary never garbles a page. Pure. (Escaping is the templates'
//! job: every string here is still raw text.)

/// The most bytes of text or JSON shown for one value.
pub const MAX_TEXT: usize = 64 * 1024;
/// The most bytes of a binary value shown as hex.
pub const MAX_HEX: usize = 1024;

/// A value ready to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    /// No value (a tombstone, or a header without one).
    Null,
    /// A JSON document, pretty-printed.
    Json(String),
    /// UTF-8 text.
    Text(String),
    /// Anything else: a hex dump of the first [`MAX_HEX`] bytes, and the full length.
    Binary {
        /// Offset, hex bytes and printable ASCII, 16 bytes a line.
        dump: String,
        /// The value's length in bytes.
        len: usize,
    },
}

impl Shown {
    /// A short label for the kind of value.
    pub fn kind(&self) -> &'static str {
        match self {
            Shown::Null => "null",
            Shown::Json(_) => "json",
            Shown::Text(_) => "text",
            Shown::Binary { .. } => "binary",
        }
    }
}

/// How to show `bytes`.
pub fn show(bytes: Option<&[u8]>) -> Shown {
    let Some(bytes) = bytes else {
        return Shown::Null;
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Shown::Binary {
            dump: hex_dump(&bytes[..bytes.len().min(MAX_HEX)]),
            len: bytes.len(),
        };
    };
    // Control characters other than whitespace make text unreadable: show it as binary.
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Shown::Binary {
            dump: hex_dump(&bytes[..bytes.len().min(MAX_HEX)]),
            len: bytes.len(),
        };
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(text) {
            if let Ok(pretty) = serde_json::to_string_pretty(&json) {
                return Shown::Json(truncate(pretty));
            }
        }
    }
    Shown::Text(truncate(text.to_owned()))
}

/// At most [`MAX_TEXT`] bytes, cut on a character boundary, saying how much was cut.
fn truncate(mut s: String) -> String {
    if s.len() <= MAX_TEXT {
        return s;
    }
    let total = s.len();
    let mut cut = MAX_TEXT;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    s.push_str(&format!("\n… ({} more bytes)", total - cut));
    s
}

/// `00000000  7b 22 61 ...  {"a...`, 16 bytes a line.
pub fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, line) in bytes.chunks(16).enumerate() {
        out.push_str(&format!("{:08x}  ", i * 16));
        for b in line {
            out.push_str(&format!("{b:02x} "));
        }
        for _ in line.len()..16 {
            out.push_str("   ");
        }
        out.push(' ');
        out.extend(line.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        }));
        out.push('\n');
    }
    out
}

/// Whether a record's key or value contains `needle` (bytes, so that binary values can be
/// searched for their text parts too). An empty needle matches everything.
pub fn matches(needle: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> bool {
    if needle.is_empty() {
        return true;
    }
    let n = needle.as_bytes();
    let has = |h: Option<&[u8]>| h.is_some_and(|h| h.windows(n.len()).any(|w| w == n));
    has(key) || has(value)
}

/// A header value or key as one line of text: UTF-8 as it is, anything else in hex.
pub fn short(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => String::new(),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => s.to_owned(),
            Err(_) => format!(
                "0x{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_pretty_printed_text_kept_and_binary_dumped() {
        assert_eq!(show(None), Shown::Null);
        assert_eq!(
            show(Some(br#"{"a":1,"b":[true]}"#)),
            Shown::Json("{\n  \"a\": 1,\n  \"b\": [\n    true\n  ]\n}".into())
        );
        assert_eq!(
            show(Some(b"<script>alert(1)</script>")),
            Shown::Text("<script>alert(1)</script>".into())
        );
        assert_eq!(show(Some(b"{not json")), Shown::Text("{not json".into()));
        let Shown::Binary { dump, len } = show(Some(&[0xff, 0x00, b'A'])) else {
            panic!("binary expected");
        };
        assert_eq!(len, 3);
        assert_eq!(
            dump,
            format!("00000000  ff 00 41 {} ..A\n", "   ".repeat(13))
        );
        assert_eq!(show(Some(b"a\x01b")).kind(), "binary");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_TEXT);
        let Shown::Text(t) = show(Some(long.as_bytes())) else {
            panic!("text expected");
        };
        assert!(t.ends_with(&format!("({} more bytes)", MAX_TEXT)));
        assert!(t.len() < MAX_TEXT + 40);
    }

    #[test]
    fn filters_search_keys_and_values_as_bytes() {
        assert!(matches("", None, None));
        assert!(matches("ord", Some(b"order-1"), None));
        assert!(matches("42", None, Some(&[0xff, b'4', b'2'])));
        assert!(!matches("x", Some(b"a"), Some(b"b")));
        assert!(!matches("x", None, None));
        assert_eq!(short(Some(&[0xff, 0x01])), "0xff01");
        assert_eq!(short(Some(b"orders")), "orders");
    }
}
