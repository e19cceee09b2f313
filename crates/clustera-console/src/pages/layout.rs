//! The frame every page shares (navigation, read-only badge, flash messages), the error and
//! login pages, and the embedded assets.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State as Extract;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup, DOCTYPE};

use crate::security::{same, Form, TOKEN_COOKIE};
use crate::State;

/// The pages of the navigation bar.
const NAV: [(&str, &str); 5] = [
    ("/", "Overview"),
    ("/topics", "Topics"),
    ("/groups", "Consumer groups"),
    ("/kernels", "Kernels"),
    ("/dlq", "Dead letters"),
];

/// Options of one page.
#[derive(Default)]
pub struct Frame<'a> {
    /// The tab to highlight.
    pub nav: &'a str,
    /// Reload every this many seconds while "live" is ticked.
    pub refresh: Option<u32>,
    /// A message to show on top (the outcome of an action).
    pub flash: Option<(bool, String)>,
}

/// A whole page.
pub fn page(state: &State, title: &str, frame: Frame<'_>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Clustera Console" }
                link rel="stylesheet" href="/assets/app.css";
                script src="/assets/app.js" defer {}
            }
            body data-refresh=[frame.refresh] {
                header {
                    span.brand { "Clustera Console" }
                    nav {
                        @for (href, label) in NAV {
                            a href=(href) class=[(frame.nav == href).then_some("active")] { (label) }
                        }
                    }
                    @if frame.refresh.is_some() {
                        label.mode { input #live type="checkbox"; " live" }
                    }
                    span.mode { @if state.options.read_only { "read-only" } @else { "read-write" } }
                }
                main {
                    @if let Some((ok, text)) = &frame.flash {
                        div.flash.error[!ok] { (text) }
                    }
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden field every mutating form carries.
pub fn csrf(state: &State) -> Markup {
    html! { input type="hidden" name="csrf" value=(state.csrf); }
}

/// An error as a page of its own.
pub fn error_page(status: StatusCode, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Error · Clustera Console" } link rel="stylesheet" href="/assets/app.css"; }
            body {
                header { span.brand { "Clustera Console" } nav { a href="/" { "Overview" } } }
                main {
                    h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                    div.flash.error #error { (message) }
                }
            }
        }
    }
}

/// `GET /login`.
pub async fn login_page() -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Log in · Clustera Console" } link rel="stylesheet" href="/assets/app.css"; }
            body { main {
                h1 { "Clustera Console" }
                form.bar method="post" action="/login" {
                    label { "Token (CLUSTERA_CONSOLE_TOKEN)" input type="password" name="token" autofocus; }
                    button type="submit" { "Log in" }
                }
            } }
        }
    }
}

/// `POST /login`: sets the token cookie when the token is right.
pub async fn login(Extract(state): Extract<Arc<State>>, body: Bytes) -> Response {
    let form = Form::parse(&body);
    let given = form.get("token").unwrap_or_default();
    match &state.options.token {
        Some(token) if same(given, token) => {
            let mut r = Redirect::to("/").into_response();
            let cookie = format!("{TOKEN_COOKIE}={given}; HttpOnly; SameSite=Strict; Path=/");
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Some(_) => crate::ConsoleError::Unauthorized("wrong token".into()).into_response(),
        None => Redirect::to("/").into_response(),
    }
}

/// The stylesheet.
pub async fn css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../assets/app.css"),
    )
}

/// The script.
pub async fn js() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../assets/app.js"),
    )
}

/// A shown value: its kind, then JSON, text or a hex dump in a `pre`.
pub fn value(bytes: Option<&[u8]>) -> Markup {
    let shown = crate::value::show(bytes);
    html! {
        @match &shown {
            crate::value::Shown::Null => span.muted { "null" },
            crate::value::Shown::Json(t) => { span.kind { "json" } pre { (t) } },
            crate::value::Shown::Text(t) => pre { (t) },
            crate::value::Shown::Binary { dump, len } => { span.kind { "binary, " (len) " bytes" } pre { (dump) } },
        }
    }
}
