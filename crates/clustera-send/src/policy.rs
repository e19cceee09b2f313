//! What a client may ask for and what it gets back: allowed methods per endpoint, endpoints
//! (glob patterns over canonical paths, see [`crate::path`]), query parameter names, request
//! headers; what happens to a request that asks for more (strict: refused; permissive:
//! trimmed); and which response headers go back to the client.
//!
//! An allow-list entry is `[METHODS] PATTERN[?NAMES]`:
//! - `METHODS`: `GET`, or several joined by `|` (`GET|HEAD`); without it, every method of
//!   [`METHODS`];
//! - `PATTERN`: a glob over the canonical path under the base path (`*` stays within one
//!   segment, `**` crosses segments);
//! - `?NAMES`: the query parameter names allowed, joined by `&` (`?fields&limit`); `?` alone
//!   allows no query; without it, any.

use globset::{GlobBuilder, GlobMatcher};

/// Headers never forwarded, even if listed: credentials are the portal's business, so is the
/// `Idempotency-Key` it sets on every call (the job's id); framing and hop-by-hop headers
/// belong to the portal's own connection; and headers that proxies and frameworks trust to
/// say who the caller is, which URL it asked for, or which method it meant, would let a
/// client speak for the portal.
pub const NEVER_FORWARDED: &[&str] = &[
    "authorization",
    "idempotency-key",
    "cookie",
    "proxy-authorization",
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-original-url",
    "x-rewrite-url",
    "x-original-uri",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "expect",
];

/// Prefixes of header names never forwarded (`X-Forwarded-For`, `-Host`, `-Proto`, …).
pub const NEVER_FORWARDED_PREFIXES: &[&str] = &["x-forwarded-"];

/// Response headers about the portal's connection to the API, never passed back.
pub const RESPONSE_FRAMING: &[&str] = &[
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

/// Response headers that carry credentials: passed back only when listed by name in
/// `PORTAL_ALLOWED_RESPONSE_HEADERS` (never through `*`).
pub const RESPONSE_CREDENTIALS: &[&str] = &[
    "set-cookie",
    "set-cookie2",
    "www-authenticate",
    "proxy-authenticate",
    "authentication-info",
    "proxy-authentication-info",
    "authorization",
];

/// The response headers passed back unless `PORTAL_ALLOWED_RESPONSE_HEADERS` says otherwise.
pub const DEFAULT_RESPONSE_HEADERS: &[&str] = &[
    "content-type",
    "content-disposition",
    "content-encoding",
    "content-language",
    "content-range",
    "accept-ranges",
    "cache-control",
    "etag",
    "expires",
    "last-modified",
    "location",
    "retry-after",
    "x-request-id",
];

/// The only methods a job may use.
pub const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// A request the policy refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The method is not one of [`METHODS`].
    #[error("method {0:?} is not allowed")]
    Method(String),
    /// No allow-list pattern matches the endpoint.
    #[error("endpoint {0:?} is not on the allow-list")]
    Endpoint(String),
    /// The endpoint is allowed, but not with this method.
    #[error("method {method} is not allowed for endpoint {path:?}")]
    MethodForEndpoint {
        /// The method.
        method: String,
        /// The canonical path.
        path: String,
    },
    /// A query parameter the endpoint's entries do not list.
    #[error("query parameter {name:?} is not allowed for endpoint {path:?}")]
    Query {
        /// The parameter's name.
        name: String,
        /// The canonical path.
        path: String,
    },
    /// A header that is not allowed (strict mode).
    #[error("header {0:?} is not allowed")]
    Header(String),
    /// A header that is malformed in any mode: a repeated name, or CR, LF or NUL in a value.
    #[error("header {name:?} {why}")]
    MalformedHeader {
        /// The header's name.
        name: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// One allow-list entry.
#[derive(Debug, Clone)]
struct Rule {
    /// `None`: every method of [`METHODS`].
    methods: Option<Vec<&'static str>>,
    path: GlobMatcher,
    /// `None`: any query parameter.
    query: Option<Vec<String>>,
}

impl Rule {
    fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        let (methods, pattern) = match entry.split_once(char::is_whitespace) {
            Some((m, p)) => {
                let mut methods = Vec::new();
                for m in m.split('|') {
                    let upper = m.trim().to_ascii_uppercase();
                    let known = METHODS.iter().find(|k| **k == upper).ok_or_else(|| {
                        format!(
                            "entry {entry:?}: {m:?} is not one of {}",
                            METHODS.join(", ")
                        )
                    })?;
                    methods.push(*known);
                }
                (Some(methods), p.trim())
            }
            None => (None, entry),
        };
        let (glob, query) = match pattern.split_once('?') {
            Some((g, q)) => (
                g,
                Some(
                    q.split('&')
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned)
                        .collect(),
                ),
            ),
            None => (pattern, None),
        };
        if !glob.starts_with('/') {
            return Err(format!("endpoint pattern {glob:?} must start with '/'"));
        }
        let path = GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("endpoint pattern {glob:?}: {e}"))?
            .compile_matcher();
        Ok(Self {
            methods,
            path,
            query,
        })
    }

    fn allows_method(&self, method: &str) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(&method))
    }

    /// The first name this entry does not allow, if any.
    fn refused_name<'a>(&self, mut names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
        let allowed = self.query.as_ref()?;
        names.find(|n| !allowed.iter().any(|a| a == n))
    }
}

/// Which response headers go back to the client.
#[derive(Debug, Clone)]
struct ResponseHeaders {
    /// `*`: every header but framing and credentials.
    all: bool,
    /// Listed names, lowercase.
    names: Vec<String>,
}

/// The allow-lists and the mode.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `None`: every endpoint (permissive mode only).
    endpoints: Option<Vec<Rule>>,
    headers: Vec<String>,
    response: ResponseHeaders,
    strict: bool,
}

/// What the policy made of a request's headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filtered {
    /// Headers to forward.
    pub forward: Vec<(String, String)>,
    /// Header names dropped (permissive mode).
    pub dropped: Vec<String>,
}

impl Policy {
    /// A policy from allow-list entries (see the module docs) and header names
    /// (case-insensitive). An empty endpoint list allows every endpoint; callers refuse that
    /// in strict mode. Response headers are the defaults ([`DEFAULT_RESPONSE_HEADERS`]).
    pub fn new(endpoints: &[String], headers: &[String], strict: bool) -> Result<Self, String> {
        let endpoints = if endpoints.is_empty() {
            None
        } else {
            Some(
                endpoints
                    .iter()
                    .map(|e| Rule::parse(e))
                    .collect::<Result<Vec<_>, _>>()?,
            )
        };
        Ok(Self {
            endpoints,
            headers: headers
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            response: ResponseHeaders {
                all: false,
                names: DEFAULT_RESPONSE_HEADERS
                    .iter()
                    .map(|h| (*h).to_owned())
                    .collect(),
            },
            strict,
        })
    }

    /// The same policy passing back these response headers (`*`: all but framing and
    /// credentials; credentials only when named).
    pub fn with_response_headers(mut self, names: &[String]) -> Self {
        self.response = ResponseHeaders {
            all: names.iter().any(|n| n.trim() == "*"),
            names: names
                .iter()
                .map(|n| n.trim().to_ascii_lowercase())
                .filter(|n| n != "*")
                .collect(),
        };
        self
    }

    /// Whether violations refuse the request (rather than trimming it).
    pub fn strict(&self) -> bool {
        self.strict
    }

    /// Checks the method, the canonical path under the base path, and the query parameter
    /// names against the allow-list.
    pub fn check_target<'a>(
        &self,
        method: &str,
        path: &str,
        query_names: impl Iterator<Item = &'a str> + Clone,
    ) -> Result<(), Violation> {
        let Some(method) = METHODS.iter().find(|m| **m == method) else {
            return Err(Violation::Method(method.to_owned()));
        };
        let Some(rules) = &self.endpoints else {
            return Ok(());
        };
        let matching: Vec<&Rule> = rules.iter().filter(|r| r.path.is_match(path)).collect();
        if matching.is_empty() {
            return Err(Violation::Endpoint(path.to_owned()));
        }
        let with_method: Vec<&Rule> = matching
            .into_iter()
            .filter(|r| r.allows_method(method))
            .collect();
        if with_method.is_empty() {
            return Err(Violation::MethodForEndpoint {
                method: (*method).to_owned(),
                path: path.to_owned(),
            });
        }
        let mut refused = None;
        for rule in with_method {
            match rule.refused_name(query_names.clone()) {
                None => return Ok(()),
                Some(name) => refused = refused.or(Some(name)),
            }
        }
        Err(Violation::Query {
            name: refused.unwrap_or_default().to_owned(),
            path: path.to_owned(),
        })
    }

    /// The headers to forward. A repeated name or a value with CR, LF or NUL refuses the
    /// request in any mode. Otherwise, in strict mode, any header that would not be
    /// forwarded refuses the request; in permissive mode it is dropped and named in
    /// [`Filtered::dropped`].
    pub fn filter_headers(&self, headers: &[(String, String)]) -> Result<Filtered, Violation> {
        let mut seen: Vec<String> = Vec::with_capacity(headers.len());
        for (name, value) in headers {
            let lower = name.trim().to_ascii_lowercase();
            if seen.contains(&lower) {
                return Err(Violation::MalformedHeader {
                    name: name.clone(),
                    why: "is repeated",
                });
            }
            if value.contains(['\r', '\n', '\0']) {
                return Err(Violation::MalformedHeader {
                    name: name.clone(),
                    why: "has CR, LF or NUL in its value",
                });
            }
            seen.push(lower);
        }
        let mut out = Filtered::default();
        for (name, value) in headers {
            let lower = name.trim().to_ascii_lowercase();
            let allowed = !never_forwarded(&lower)
                && self.headers.contains(&lower)
                && reqwest::header::HeaderName::from_bytes(lower.as_bytes()).is_ok()
                && reqwest::header::HeaderValue::from_str(value).is_ok();
            if allowed {
                out.forward.push((name.trim().to_owned(), value.clone()));
            } else if self.strict {
                return Err(Violation::Header(name.clone()));
            } else {
                out.dropped.push(name.clone());
            }
        }
        Ok(out)
    }

    /// Whether the API's response header `name` goes back to the client.
    pub fn returns_response_header(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        if RESPONSE_FRAMING.contains(&lower.as_str()) {
            return false;
        }
        let listed = self.response.names.contains(&lower);
        if RESPONSE_CREDENTIALS.contains(&lower.as_str()) {
            return listed;
        }
        listed || self.response.all
    }
}

/// Whether a (lowercase) request header is never forwarded.
fn never_forwarded(lower: &str) -> bool {
    NEVER_FORWARDED.contains(&lower)
        || NEVER_FORWARDED_PREFIXES
            .iter()
            .any(|p| lower.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn policy(strict: bool) -> Policy {
        Policy::new(
            &strings(&[
                "/api/v1/upload",
                "GET|HEAD /api/v1/documents/*?fields&limit",
                "DELETE /api/v1/documents/*?",
                "/api/v2/**",
            ]),
            &strings(&["Content-Type", "X-Request-ID", "Authorization", "Cookie"]),
            strict,
        )
        .unwrap()
    }

    fn none<'a>() -> std::iter::Empty<&'a str> {
        std::iter::empty()
    }

    #[test]
    fn endpoints_match_globs_within_segments() {
        let p = policy(true);
        for ok in ["/api/v1/upload", "/api/v2/a/b/c"] {
            p.check_target("POST", ok, none()).unwrap();
        }
        p.check_target("GET", "/api/v1/documents/42", none())
            .unwrap();
        for bad in [
            "/api/v1/uploads",
            "/api/v1/documents/42/secret",
            "/admin",
            "/api/v1",
        ] {
            assert_eq!(
                p.check_target("POST", bad, none()),
                Err(Violation::Endpoint(bad.to_owned()))
            );
        }
        assert!(matches!(
            p.check_target("TRACE", "/api/v1/upload", none()),
            Err(Violation::Method(_))
        ));
    }

    #[test]
    fn methods_and_query_names_are_per_entry() {
        let p = policy(true);
        let doc = "/api/v1/documents/42";
        assert!(matches!(
            p.check_target("POST", doc, none()),
            Err(Violation::MethodForEndpoint { .. })
        ));
        p.check_target("HEAD", doc, ["fields", "limit", "fields"].into_iter())
            .unwrap();
        assert_eq!(
            p.check_target("GET", doc, ["fields", "debug"].into_iter()),
            Err(Violation::Query {
                name: "debug".into(),
                path: doc.into()
            })
        );
        p.check_target("DELETE", doc, none()).unwrap();
        assert!(p
            .check_target("DELETE", doc, ["fields"].into_iter())
            .is_err());
        // No `?` part: any query.
        p.check_target("PUT", "/api/v2/x", ["anything"].into_iter())
            .unwrap();
        for bad in ["FETCH /x", "GET|TRACE /x", "GET x"] {
            assert!(Policy::new(&strings(&[bad]), &[], true).is_err(), "{bad}");
        }
    }

    #[test]
    fn credentials_and_proxy_headers_are_never_forwarded_even_if_listed() {
        let headers = vec![
            ("content-type".to_owned(), "text/plain".to_owned()),
            ("Authorization".to_owned(), "Bearer stolen".to_owned()),
        ];
        assert_eq!(
            policy(true).filter_headers(&headers),
            Err(Violation::Header("Authorization".into()))
        );
        let filtered = policy(false).filter_headers(&headers).unwrap();
        assert_eq!(
            filtered.forward,
            vec![("content-type".into(), "text/plain".into())]
        );
        assert_eq!(filtered.dropped, vec!["Authorization".to_owned()]);
        let everything = Policy::new(
            &[],
            &strings(&[
                "Forwarded",
                "X-Real-IP",
                "X-Forwarded-Host",
                "X-Original-URL",
                "X-Rewrite-URL",
                "X-HTTP-Method-Override",
                "Connection",
                "Upgrade",
            ]),
            true,
        )
        .unwrap();
        for name in [
            "Cookie",
            "Proxy-Authorization",
            "X-Forwarded-For",
            "X-Forwarded-Host",
            "Host",
            "Forwarded",
            "X-Real-IP",
            "X-Original-URL",
            "X-Rewrite-URL",
            "X-HTTP-Method-Override",
            "Connection",
            "Upgrade",
            "TE",
        ] {
            let h = vec![(name.to_owned(), "x".to_owned())];
            assert!(policy(true).filter_headers(&h).is_err(), "{name}");
            assert!(everything.filter_headers(&h).is_err(), "{name}");
        }
    }

    #[test]
    fn repeated_names_and_line_breaks_are_refused_in_any_mode() {
        for strict in [true, false] {
            let p = policy(strict);
            let repeated = vec![
                ("X-Request-ID".to_owned(), "a".to_owned()),
                ("x-request-id".to_owned(), "b".to_owned()),
            ];
            assert!(matches!(
                p.filter_headers(&repeated),
                Err(Violation::MalformedHeader { .. })
            ));
            for value in ["a\r\nHost: evil", "a\nb", "a\0b"] {
                let h = vec![("X-Request-ID".to_owned(), value.to_owned())];
                assert!(
                    matches!(p.filter_headers(&h), Err(Violation::MalformedHeader { .. })),
                    "{value:?}"
                );
            }
        }
    }

    #[test]
    fn response_headers_pass_their_own_list_and_credentials_only_by_name() {
        let p = policy(true);
        assert!(p.returns_response_header("Content-Type"));
        assert!(!p.returns_response_header("Set-Cookie"));
        assert!(!p.returns_response_header("X-Internal-Host"));
        assert!(!p.returns_response_header("Transfer-Encoding"));
        let all = policy(true).with_response_headers(&strings(&["*"]));
        assert!(all.returns_response_header("X-Internal-Host"));
        assert!(!all.returns_response_header("Set-Cookie"));
        assert!(!all.returns_response_header("WWW-Authenticate"));
        let cookies = policy(true).with_response_headers(&strings(&["*", "Set-Cookie"]));
        assert!(cookies.returns_response_header("set-cookie"));
        assert!(!cookies.returns_response_header("content-length"));
    }

    #[test]
    fn an_empty_header_list_forwards_nothing() {
        let p = Policy::new(&strings(&["/x"]), &[], false).unwrap();
        let f = p
            .filter_headers(&[("Content-Type".into(), "a/b".into())])
            .unwrap();
        assert!(f.forward.is_empty());
        let everything = Policy::new(&[], &[], false).unwrap();
        everything
            .check_target("GET", "/anything/at/all", none())
            .unwrap();
        assert!(Policy::new(&strings(&["no-slash"]), &[], true).is_err());
    }
}
