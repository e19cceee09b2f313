//! What a client may ask for: allowed methods, endpoints (glob patterns) and headers, and what
//! happens to a request that asks for more (strict: refused; permissive: trimmed).

use globset::{GlobSet, GlobSetBuilder};

/// Headers never forwarded, even if listed: credentials are the portal's business, so is the
/// `Idempotency-Key` it sets on every call (the job's id), and framing headers belong to the
/// portal's own HTTP connection.
pub const NEVER_FORWARDED: &[&str] = &[
    "authorization",
    "idempotency-key",
    "cookie",
    "proxy-authorization",
    "x-forwarded-for",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
];

/// Methods a job may use.
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
    /// A header that is not allowed (strict mode).
    #[error("header {0:?} is not allowed")]
    Header(String),
}

/// The allow-lists and the mode.
#[derive(Debug, Clone)]
pub struct Policy {
    endpoints: Option<GlobSet>,
    headers: Vec<String>,
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
    /// A policy from glob patterns (`*` stays within one path segment, `**` crosses them) and
    /// header names (case-insensitive). An empty endpoint list allows every endpoint; callers
    /// refuse that in strict mode.
    pub fn new(endpoints: &[String], headers: &[String], strict: bool) -> Result<Self, String> {
        let endpoints = if endpoints.is_empty() {
            None
        } else {
            let mut set = GlobSetBuilder::new();
            for pattern in endpoints {
                if !pattern.starts_with('/') {
                    return Err(format!("endpoint pattern {pattern:?} must start with '/'"));
                }
                let glob = globset::GlobBuilder::new(pattern)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| format!("endpoint pattern {pattern:?}: {e}"))?;
                set.add(glob);
            }
            Some(set.build().map_err(|e| e.to_string())?)
        };
        Ok(Self {
            endpoints,
            headers: headers
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            strict,
        })
    }

    /// Whether violations refuse the request (rather than trimming it).
    pub fn strict(&self) -> bool {
        self.strict
    }

    /// Checks the method and the endpoint's path (normalized, under the base path).
    pub fn check_target(&self, method: &str, path: &str) -> Result<(), Violation> {
        if !METHODS.contains(&method) {
            return Err(Violation::Method(method.to_owned()));
        }
        match &self.endpoints {
            Some(set) if !set.is_match(path) => Err(Violation::Endpoint(path.to_owned())),
            _ => Ok(()),
        }
    }

    /// The headers to forward. In strict mode any header that would not be forwarded refuses
    /// the request; in permissive mode it is dropped and named in [`Filtered::dropped`].
    pub fn filter_headers(&self, headers: &[(String, String)]) -> Result<Filtered, Violation> {
        let mut out = Filtered::default();
        for (name, value) in headers {
            let lower = name.trim().to_ascii_lowercase();
            let allowed = !NEVER_FORWARDED.contains(&lower.as_str())
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn policy(strict: bool) -> Policy {
        Policy::new(
            &strings(&["/api/v1/upload", "/api/v1/documents/*", "/api/v2/**"]),
            &strings(&["Content-Type", "X-Request-ID", "Authorization", "Cookie"]),
            strict,
        )
        .unwrap()
    }

    #[test]
    fn endpoints_match_globs_within_segments() {
        let p = policy(true);
        for ok in ["/api/v1/upload", "/api/v1/documents/42", "/api/v2/a/b/c"] {
            p.check_target("POST", ok).unwrap();
        }
        for bad in [
            "/api/v1/uploads",
            "/api/v1/documents/42/secret",
            "/admin",
            "/api/v1",
        ] {
            assert_eq!(
                p.check_target("POST", bad),
                Err(Violation::Endpoint(bad.to_owned()))
            );
        }
        assert!(matches!(
            p.check_target("TRACE", "/api/v1/upload"),
            Err(Violation::Method(_))
        ));
    }

    #[test]
    fn credentials_are_never_forwarded_even_if_listed() {
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
        for name in ["Cookie", "Proxy-Authorization", "X-Forwarded-For", "Host"] {
            let h = vec![(name.to_owned(), "x".to_owned())];
            assert!(policy(true).filter_headers(&h).is_err(), "{name}");
        }
    }

    #[test]
    fn an_empty_header_list_forwards_nothing() {
        let p = Policy::new(&strings(&["/x"]), &[], false).unwrap();
        let f = p
            .filter_headers(&[("Content-Type".into(), "a/b".into())])
            .unwrap();
        assert!(f.forward.is_empty());
        let everything = Policy::new(&[], &[], false).unwrap();
        everything.check_target("GET", "/anything/at/all").unwrap();
        assert!(Policy::new(&strings(&["no-slash"]), &[], true).is_err());
    }
}
