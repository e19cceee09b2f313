//! Safety of the console: optional token authentication (`CLUSTERA_CONSOLE_TOKEN`), read-only
//! mode, CSRF checks on every mutating request, and headers that keep a value that slipped
//! past escaping from running (a Content-Security-Policy without inline scripts).

use std::sync::Arc;

use axum::extract::{Request, State as Extract};
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::ConsoleError;
use crate::State;

/// The cookie that carries the token once logged in.
pub const TOKEN_COOKIE: &str = "clustera_console_token";

/// Equality that takes as long whatever the first differing byte.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A fresh random token (for CSRF), 32 hex digits.
pub fn random_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token a request presents: `Authorization: Bearer`, or the login cookie.
fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return Some(bearer.trim().to_owned());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == TOKEN_COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// Authentication, read-only mode and security headers, around every route.
pub async fn guard(Extract(state): Extract<Arc<State>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let open = path == "/login" || path.starts_with("/assets/");
    if let (Some(token), false) = (&state.options.token, open) {
        let ok = presented(request.headers()).is_some_and(|t| same(&t, token));
        if !ok {
            return with_headers(if request.method() == Method::GET {
                Redirect::to("/login").into_response()
            } else {
                ConsoleError::Unauthorized(
                    "this console needs its token (CLUSTERA_CONSOLE_TOKEN): log in at /login or \
                     send Authorization: Bearer TOKEN"
                        .into(),
                )
                .into_response()
            });
        }
    }
    if state.options.read_only && request.method() != Method::GET && path != "/login" {
        return with_headers(
            ConsoleError::Forbidden(
                "this console is read-only (--read-only): it changes nothing".into(),
            )
            .into_response(),
        );
    }
    with_headers(next.run(request).await)
}

fn with_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Refuses a mutating request that does not carry the console's CSRF token or that a browser
/// says comes from another site.
pub fn check_csrf(state: &State, headers: &HeaderMap, form: &Form) -> Result<(), ConsoleError> {
    let refuse = |why: &str| Err(ConsoleError::Forbidden(format!("CSRF check failed: {why}")));
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
    {
        return refuse("the request comes from another site");
    }
    if let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        let origin_host = origin.split_once("://").map_or(origin, |(_, h)| h);
        if origin != "null" && origin_host != host {
            return refuse("the Origin header names another site");
        }
    }
    match form.get("csrf") {
        Some(t) if same(t, &state.csrf) => Ok(()),
        Some(_) => refuse("the form's token is stale (reload the page and try again)"),
        None => refuse("the form carries no token"),
    }
}

/// A submitted form: every field in order, repeated names kept (checkbox selections).
#[derive(Debug, Default, Clone)]
pub struct Form(pub Vec<(String, String)>);

impl Form {
    /// Parses an `application/x-www-form-urlencoded` body.
    pub fn parse(body: &[u8]) -> Self {
        Self(form_urlencoded::parse(body).into_owned().collect())
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_and_forms_keep_repeated_fields() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
        assert_eq!(random_token().len(), 32);
        assert_ne!(random_token(), random_token());
        let f = Form::parse(b"csrf=x&sel=0%3A5&sel=1%3A7&note=a+b");
        assert_eq!(f.get("csrf"), Some("x"));
        assert_eq!(f.all("sel"), vec!["0:5", "1:7"]);
        assert_eq!(f.get("note"), Some("a b"));
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; clustera_console_token=t0k"),
        );
        assert_eq!(presented(&h), Some("t0k".into()));
    }
}
