//! The URL a job calls: its endpoint made canonical and kept under the API by the [`Guard`],
//! then judged by the [`Policy`] on the canonical path under the base path
//! ([`Guard::relative_path`]) and the query's parameter names. This is the one way from a
//! request head to a URL: the portal uses it, and so do the corpus tests, so what they prove
//! holds for production.

use clustera_send_protocol::ErrorCode;
use url::Url;

use crate::policy::{Policy, Violation};
use crate::ssrf::Guard;

/// A request refused, with the code and message the client is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The error code.
    pub code: ErrorCode,
    /// What was wrong, without anything internal.
    pub message: String,
}

impl Refusal {
    /// A refusal with this code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<Violation> for Refusal {
    fn from(v: Violation) -> Self {
        let code = match v {
            Violation::Method(_) | Violation::MalformedHeader { .. } => ErrorCode::InvalidRequest,
            Violation::Endpoint(_)
            | Violation::MethodForEndpoint { .. }
            | Violation::Query { .. } => ErrorCode::ForbiddenEndpoint,
            Violation::Header(_) => ErrorCode::ForbiddenHeader,
        };
        Self::new(code, v.to_string())
    }
}

/// The URL `method endpoint` calls, or why it may not be called.
pub fn target(
    guard: &Guard,
    policy: &Policy,
    method: &str,
    endpoint: &str,
) -> Result<Url, Refusal> {
    let url = guard
        .endpoint_url(endpoint)
        .map_err(|e| Refusal::new(ErrorCode::SsrfBlocked, e.to_string()))?;
    let names: Vec<String> = url.query_pairs().map(|(n, _)| n.into_owned()).collect();
    policy.check_target(
        method,
        guard.relative_path(&url),
        names.iter().map(String::as_str),
    )?;
    Ok(url)
}
