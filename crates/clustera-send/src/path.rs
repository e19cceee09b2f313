//! Canonical endpoints: what a client names is decoded, validated segment by segment, and
//! re-encoded in one canonical form, which is both what the allow-list matches and exactly
//! what goes on the request line. The REST API can then never see a path other than the one
//! the policy judged.
//!
//! Why not leave this to the `url` crate: it normalizes by the WHATWG URL standard, which keeps
//! `;`, `%c0%ae`, `*` and doubled slashes as they are, while servers behind the API (Tomcat,
//! Jetty, Spring, IIS) give them meanings of their own (`/..;/`, overlong UTF-8 dots, matrix
//! parameters, trailing dots). The only safe form is one in which nothing is left to
//! interpret: every segment decoded, checked against a small character set, and written back
//! with no escapes at all (ASCII) or escapes of its UTF-8 bytes only (non-ASCII, when
//! allowed). Decoding and encoding use the `percent-encoding` crate; normalization checks use
//! `unicode-normalization` and `unicode-properties`.
//!
//! Rules for the path (see PROTOCOL.md, "Validation"):
//! - it starts with a single `/`, is at most [`PathRules::max_len`] bytes, and has no empty
//!   segment (a doubled or trailing slash), except the bare `/`;
//! - every escape is `%` and two hex digits, and a segment's decoded bytes are UTF-8 (so
//!   overlong forms such as `%c0%ae` are refused);
//! - a decoded segment holds only unreserved characters (`A-Z a-z 0-9 - . _ ~`) and the
//!   sub-delimiters `! ' ( ) + , =`: never `;`, `*`, `$`, `&`, `:`, `@`, `%`, `/`, `\`, `?`,
//!   `#`, whitespace or a control character;
//! - no segment is made only of dots or ends with a dot (`..`, `.`, `admin.`);
//! - non-ASCII characters are refused unless [`PathRules::allow_non_ascii`]
//!   (`PORTAL_ALLOW_NON_ASCII_PATHS`); then they must be letters, marks or digits, and the
//!   segment must be in NFKC form, so no look-alike (fullwidth `．．`, ligatures) stands for
//!   something else after a server normalizes it.
//!
//! The query is split into `name=value` pairs on `&`, each decoded (`+` is a space, as form
//! decoders read it) and re-encoded with everything but unreserved characters escaped.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use unicode_normalization::UnicodeNormalization as _;
use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory as _};

/// The longest endpoint accepted unless configured otherwise (`PORTAL_MAX_ENDPOINT_BYTES`).
pub const DEFAULT_MAX_LEN: usize = 2048;

/// ASCII characters a decoded path segment may hold besides letters and digits.
const SEGMENT_PUNCTUATION: &[u8] = b"-._~!'()+,=";

/// Everything but unreserved characters is escaped in query names and values.
const QUERY_ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// What the portal accepts in endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRules {
    /// Accept non-ASCII letters, marks and digits (in NFKC form) in segments and query.
    pub allow_non_ascii: bool,
    /// The longest endpoint, in bytes, as the client wrote it.
    pub max_len: usize,
}

impl Default for PathRules {
    fn default() -> Self {
        Self {
            allow_non_ascii: false,
            max_len: DEFAULT_MAX_LEN,
        }
    }
}

/// Why an endpoint is not accepted. The messages quote what the client wrote (cut short), so
/// they can be returned to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Longer than allowed.
    #[error("the endpoint has {len} bytes; at most {max} are accepted")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a path: an absolute or scheme-relative URL, or no leading slash.
    #[error("endpoint {0} is not a path starting with a single '/'")]
    NotAPath(String),
    /// `%` not followed by two hex digits.
    #[error("endpoint {0} has a malformed percent escape")]
    MalformedEscape(String),
    /// A doubled or trailing slash.
    #[error("endpoint {0} has an empty segment (a doubled or trailing slash)")]
    EmptySegment(String),
    /// A segment whose decoded bytes are not UTF-8 (overlong forms among them).
    #[error("endpoint {0} encodes bytes that are not UTF-8 (an overlong form?)")]
    NotUtf8(String),
    /// `.`, `..`, or any segment of dots only.
    #[error("endpoint {0} has a dot segment")]
    DotSegment(String),
    /// A segment ending in a dot, which some servers drop.
    #[error("endpoint {0} has a segment ending with a dot")]
    TrailingDot(String),
    /// A character outside the accepted set.
    #[error("endpoint {endpoint} contains {what}")]
    Character {
        /// The endpoint.
        endpoint: String,
        /// What was found.
        what: String,
    },
    /// A fragment (`#`).
    #[error("endpoint {0} has a fragment")]
    Fragment(String),
}

/// A validated endpoint: its decoded segments and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    segments: Vec<String>,
    query: Vec<(String, Option<String>)>,
}

/// At most this much of an endpoint is quoted in messages.
const QUOTED: usize = 120;

fn quote(raw: &str) -> String {
    let cut: String = raw.chars().take(QUOTED).collect();
    if cut.len() < raw.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

impl Endpoint {
    /// Parses and validates what a client wrote.
    pub fn parse(raw: &str, rules: &PathRules) -> Result<Self, PathError> {
        let q = || quote(raw);
        if raw.len() > rules.max_len {
            return Err(PathError::TooLong {
                len: raw.len(),
                max: rules.max_len,
            });
        }
        if !raw.starts_with('/') || raw.starts_with("//") {
            return Err(PathError::NotAPath(q()));
        }
        if raw.contains('#') {
            return Err(PathError::Fragment(q()));
        }
        check_escapes(raw).map_err(|()| PathError::MalformedEscape(q()))?;
        let (path, query) = match raw.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (raw, None),
        };
        let mut segments = Vec::new();
        if path != "/" {
            for raw_segment in path[1..].split('/') {
                segments.push(segment(raw_segment, rules).map_err(|e| e.at(raw))?);
            }
        }
        let mut pairs = Vec::new();
        for pair in query.unwrap_or_default().split('&') {
            if pair.is_empty() {
                continue;
            }
            let (name, value) = match pair.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (pair, None),
            };
            let name = query_part(name, rules).map_err(|e| e.at(raw))?;
            if name.is_empty() {
                return Err(PathError::Character {
                    endpoint: q(),
                    what: "a query parameter without a name".to_owned(),
                });
            }
            let value = value
                .map(|v| query_part(v, rules))
                .transpose()
                .map_err(|e| e.at(raw))?;
            pairs.push((name, value));
        }
        Ok(Self {
            segments,
            query: pairs,
        })
    }

    /// The canonical path: `/` and the segments, escaped only where non-ASCII.
    pub fn path(&self) -> String {
        if self.segments.is_empty() {
            return "/".to_owned();
        }
        let mut out = String::new();
        for s in &self.segments {
            out.push('/');
            // Only non-ASCII bytes need escaping: every ASCII character left is a pchar.
            out.extend(utf8_percent_encode(s, percent_encoding::CONTROLS));
        }
        out
    }

    /// The canonical query, without the `?`; `None` when there is no parameter.
    pub fn query(&self) -> Option<String> {
        if self.query.is_empty() {
            return None;
        }
        let mut out = String::new();
        for (i, (name, value)) in self.query.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            out.extend(utf8_percent_encode(name, QUERY_ESCAPED));
            if let Some(v) = value {
                out.push('=');
                out.extend(utf8_percent_encode(v, QUERY_ESCAPED));
            }
        }
        Some(out)
    }

    /// The decoded names of the query parameters, in order (repeated names repeat).
    pub fn query_names(&self) -> impl Iterator<Item = &str> {
        self.query.iter().map(|(n, _)| n.as_str())
    }
}

/// A segment's or query part's fault, before the endpoint is known to quote.
enum Fault {
    NotUtf8,
    Dots,
    TrailingDot,
    EmptySegment,
    Character(String),
}

impl Fault {
    fn at(self, raw: &str) -> PathError {
        let q = quote(raw);
        match self {
            Self::NotUtf8 => PathError::NotUtf8(q),
            Self::Dots => PathError::DotSegment(q),
            Self::TrailingDot => PathError::TrailingDot(q),
            Self::EmptySegment => PathError::EmptySegment(q),
            Self::Character(what) => PathError::Character { endpoint: q, what },
        }
    }
}

/// Every `%` is followed by two hex digits.
fn check_escapes(raw: &str) -> Result<(), ()> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let ok = bytes.len() > i + 2
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(());
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

fn decode(raw: &str) -> Result<String, Fault> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| Fault::NotUtf8)
}

/// What an ASCII character is, for a message.
fn describe(c: char) -> String {
    match c {
        '/' => "an encoded slash".to_owned(),
        '\\' => "a backslash".to_owned(),
        ';' => "a semicolon (path parameters are not accepted)".to_owned(),
        '%' => "a percent sign (double encoding)".to_owned(),
        '*' => "an asterisk".to_owned(),
        '?' | '#' => "an encoded URL delimiter".to_owned(),
        c if c.is_control() => format!("a control character (U+{:04X})", u32::from(c)),
        c if c.is_whitespace() => "whitespace".to_owned(),
        c if c.is_ascii() => format!("the character {c:?}"),
        c => format!("the non-ASCII character U+{:04X}", u32::from(c)),
    }
}

/// Whether a non-ASCII character may appear when non-ASCII is allowed: letters, marks and
/// digits only (no spaces, format characters such as zero-width joiners, or punctuation that
/// could pass for a separator).
fn acceptable_non_ascii(c: char) -> bool {
    matches!(
        c.general_category_group(),
        GeneralCategoryGroup::Letter | GeneralCategoryGroup::Mark | GeneralCategoryGroup::Number
    )
}

/// Non-ASCII text: allowed at all, acceptable characters, and stable under NFKC.
fn check_non_ascii(text: &str, rules: &PathRules) -> Result<(), Fault> {
    if text.is_ascii() {
        return Ok(());
    }
    if let Some(c) = text.chars().find(|c| !c.is_ascii()) {
        if !rules.allow_non_ascii {
            return Err(Fault::Character(format!(
                "{} (set PORTAL_ALLOW_NON_ASCII_PATHS to accept letters and digits)",
                describe(c)
            )));
        }
    }
    if let Some(c) = text
        .chars()
        .find(|c| !c.is_ascii() && !acceptable_non_ascii(*c))
    {
        return Err(Fault::Character(describe(c)));
    }
    let normalized: String = text.nfkc().collect();
    if normalized != text {
        return Err(Fault::Character(format!(
            "text that is not in NFKC form (it could stand for {normalized:?})"
        )));
    }
    Ok(())
}

fn segment(raw: &str, rules: &PathRules) -> Result<String, Fault> {
    if raw.is_empty() {
        return Err(Fault::EmptySegment);
    }
    let decoded = decode(raw)?;
    if let Some(c) = decoded.chars().find(|c| {
        c.is_ascii() && !c.is_ascii_alphanumeric() && !SEGMENT_PUNCTUATION.contains(&(*c as u8))
    }) {
        return Err(Fault::Character(describe(c)));
    }
    check_non_ascii(&decoded, rules)?;
    if decoded.chars().all(|c| c == '.') {
        return Err(Fault::Dots);
    }
    if decoded.ends_with('.') {
        return Err(Fault::TrailingDot);
    }
    Ok(decoded)
}

fn query_part(raw: &str, rules: &PathRules) -> Result<String, Fault> {
    let decoded = decode(&raw.replace('+', " "))?;
    if let Some(c) = decoded.chars().find(|c| c.is_control()) {
        return Err(Fault::Character(describe(c)));
    }
    check_non_ascii(&decoded, rules)?;
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Pieces hostile endpoints are made of.
    const PIECES: &[&str] = &[
        "/", "a", "Z9", ".", "..", ";", "%2e", "%2E", "%2f", "%5c", "%25", "%c0%ae", "%41", "%00",
        "%20", "*", "%2A", "\\", "?", "&", "=", "+", "#", "\u{ff0e}", "\u{200b}", "\u{e9}",
        "e\u{301}", ":", "@", "$", "~", "-", "%", "%g", "%C3%A9",
    ];

    proptest! {
        #[test]
        fn canonical_forms_are_safe_fixed_points(
            picks in prop::collection::vec(0..PIECES.len(), 1..12),
            non_ascii in any::<bool>(),
        ) {
            let raw: String = std::iter::once("/")
                .chain(picks.iter().map(|i| PIECES[*i]))
                .collect();
            let rules = PathRules { allow_non_ascii: non_ascii, ..PathRules::default() };
            if let Ok(e) = Endpoint::parse(&raw, &rules) {
                let path = e.path();
                let again = match e.query() {
                    Some(q) => format!("{path}?{q}"),
                    None => path.clone(),
                };
                let reparsed = Endpoint::parse(&again, &rules);
                prop_assert_eq!(reparsed.as_ref(), Ok(&e), "{} -> {}", raw, again);
                prop_assert!(!path.contains("//") && !path.contains(';') && !path.contains('*'));
                prop_assert!(!path.contains('\\') && !path.contains('?') && !path.contains('#'));
                prop_assert!(path == "/" || path.split('/').skip(1).all(|seg| {
                    !seg.is_empty() && !seg.ends_with('.')
                }), "{}", path);
                prop_assert!(path.is_ascii());
            }
        }
    }

    fn canonical(raw: &str) -> Result<String, PathError> {
        let e = Endpoint::parse(raw, &PathRules::default())?;
        Ok(match e.query() {
            Some(q) => format!("{}?{q}", e.path()),
            None => e.path(),
        })
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_queries_re_encoded() {
        for (raw, expected) in [
            ("/v1/upload", "/v1/upload"),
            ("/v1/%41bc", "/v1/Abc"),
            ("/v1/a-b_c~d.e", "/v1/a-b_c~d.e"),
            ("/v1/things/123!publish", "/v1/things/123!publish"),
            ("/", "/"),
            ("/v1/docs?b=2&a=x+y", "/v1/docs?b=2&a=x%20y"),
            ("/v1/docs?x=%3B;&&flag", "/v1/docs?x=%3B%3B&flag"),
            ("/v1/docs?f[a]=1", "/v1/docs?f%5Ba%5D=1"),
            ("/v1/docs?", "/v1/docs"),
        ] {
            assert_eq!(canonical(raw).unwrap(), expected, "{raw}");
        }
    }

    #[test]
    fn dots_and_separators_are_refused_however_encoded() {
        for raw in [
            "/v1/..",
            "/v1/.",
            "/v1/%2e%2e/admin",
            "/v1/...",
            "/v1/admin.",
            "/v1/%2fadmin",
            "/v1/..;/admin",
            "/v1/a;b",
            "/v1/%3b",
            "/v1/%c0%ae%c0%ae/admin",
            "/v1//admin",
            "/v1/",
            "/v1/*",
            "/v1/%2A",
            "/v1/a%00",
            "/v1/%252e",
            "/v1/x%",
            "/v1/x%g1",
            "/v1/a b",
            "/v1/a\\b",
            "/v1/%40evil",
            "/v1/a:b",
        ] {
            assert!(canonical(raw).is_err(), "{raw} accepted");
        }
    }

    #[test]
    fn non_ascii_needs_the_setting_and_nfkc_form() {
        assert!(canonical("/v1/caf%C3%A9").is_err());
        let rules = PathRules {
            allow_non_ascii: true,
            ..PathRules::default()
        };
        let e = Endpoint::parse("/v1/caf%C3%A9", &rules).unwrap();
        assert_eq!(e.path(), "/v1/caf%C3%A9");
        let e = Endpoint::parse("/v1/café", &rules).unwrap();
        assert_eq!(e.path(), "/v1/caf%C3%A9", "raw and escaped give one form");
        for raw in [
            "/v1/\u{ff0e}\u{ff0e}/admin", // fullwidth dots
            "/v1/a\u{200b}b",             // zero-width space
            "/v1/\u{fb01}le",             // the ligature "fi"
            "/v1/a\u{2215}b",             // division slash
        ] {
            let e = Endpoint::parse(raw, &rules).unwrap_err();
            assert!(matches!(e, PathError::Character { .. }), "{raw}: {e}");
        }
    }

    #[test]
    fn long_endpoints_are_refused_and_quoted_short() {
        let long = format!("/{}", "a".repeat(3000));
        assert!(matches!(
            canonical(&long),
            Err(PathError::TooLong { len: 3001, .. })
        ));
        let rules = PathRules {
            max_len: 10_000,
            ..PathRules::default()
        };
        let e = Endpoint::parse(&format!("{long}/;"), &rules).unwrap_err();
        assert!(e.to_string().len() < 300, "{e}");
    }
}
