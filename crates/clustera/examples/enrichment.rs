//! Enrichment kernel: looks up each event's user over HTTP (with a timeout) and forwards the
//! event with the user's details attached.
//!
//! Input: JSON with a `user_id`. Output on `OUTPUT_TOPIC` (default `template-output`): the
//! input plus `user`. An unknown user (404) is skipped; timeouts, connection errors and 5xx are
//! transient (retried with backoff); an input without `user_id` is dead-lettered.
//!
//! Environment: `ENRICHMENT_URL` (default `http://127.0.0.1:8081`, requests go to
//! `{ENRICHMENT_URL}/users/{user_id}`), `ENRICHMENT_TIMEOUT_MS` (default 2000), `KAFKA_TOPIC`
//! (default `template-input`), `OUTPUT_TOPIC`, and the runtime's variables.
//!
//! `cargo run --release -p clustera --example enrichment`

use std::process::ExitCode;
use std::time::Duration;

use clustera::{Context, Kernel, KernelError, Message, Outcome, Record, ResultExt};
use serde_json::{Map, Value};

struct Enrichment {
    http: reqwest::Client,
    base_url: String,
    output_topic: String,
}

impl Kernel for Enrichment {
    fn name(&self) -> &str {
        "enrichment"
    }

    fn default_topics(&self) -> Vec<String> {
        vec!["template-input".into()]
    }

    async fn process(&self, msg: &Message, ctx: &mut Context) -> Result<Outcome, KernelError> {
        let mut event: Map<String, Value> = msg.json()?;
        let user_id = match event.get("user_id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Ok(Outcome::dead_letter("event has no user_id")),
        };
        let url = format!("{}/users/{}", self.base_url, urlencode(&user_id));
        let response = self.http.get(&url).send().await.transient()?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Outcome::skip(format!("user {user_id} not found")));
        }
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(KernelError::transient(format!(
                "user service answered {status}"
            )));
        }
        if !status.is_success() {
            return Ok(Outcome::dead_letter(format!(
                "user service answered {status}"
            )));
        }
        let user: Value = response.json().await.transient()?;
        event.insert("user".into(), user);
        let record = Record::to(&self.output_topic)
            .maybe_key(msg.key_bytes())
            .json(&event)
            .permanent()?;
        ctx.send(record);
        Ok(Outcome::Ack)
    }
}

/// Percent-encodes a path segment so an id cannot change the request's path.
fn urlencode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn main() -> ExitCode {
    if let Err(e) = clustera::config::load_dotenv() {
        eprintln!("enrichment: configuration error: {e}");
        return ExitCode::from(clustera::EXIT_CONFIG);
    }
    let base_url = std::env::var("ENRICHMENT_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:8081".into())
        .trim_end_matches('/')
        .to_owned();
    let timeout_ms = match std::env::var("ENRICHMENT_TIMEOUT_MS").map(|v| v.parse::<u64>()) {
        Err(_) => 2000,
        Ok(Ok(ms)) => ms,
        Ok(Err(e)) => {
            eprintln!(
                "enrichment: configuration error: ENRICHMENT_TIMEOUT_MS: not a whole number ({e})"
            );
            return ExitCode::from(clustera::EXIT_CONFIG);
        }
    };
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_millis(timeout_ms))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("enrichment: cannot build the HTTP client: {e}");
            return ExitCode::FAILURE;
        }
    };
    clustera::run(Enrichment {
        http,
        base_url,
        output_topic: std::env::var("OUTPUT_TOPIC").unwrap_or_else(|_| "template-output".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::urlencode;

    #[test]
    fn ids_cannot_escape_the_path() {
        assert_eq!(urlencode("42"), "42");
        assert_eq!(urlencode("../admin?x=1"), "..%2Fadmin%3Fx%3D1");
    }
}
