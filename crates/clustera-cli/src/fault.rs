//! `clustera fault`: the client of `clustera dev --control`'s fault-injection API.

use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

/// Arguments of `clustera fault`.
#[derive(Args)]
pub struct FaultArgs {
    /// The control API of `clustera dev --control ADDR` (ADDR or http://ADDR).
    #[arg(long, env = "CLUSTERA_CONTROL", value_name = "ADDR")]
    control: String,
    #[command(subcommand)]
    action: FaultAction,
}

#[derive(Subcommand)]
enum FaultAction {
    /// Take brokers down: connections are closed and new ones refused.
    Down {
        /// Broker id, or all.
        #[arg(long, default_value = "all", value_name = "ID")]
        broker: String,
        /// Bring them back up after this many seconds (default: stay down until `up`).
        #[arg(long = "for", value_name = "SECONDS")]
        for_seconds: Option<u64>,
    },
    /// Bring brokers back up.
    Up {
        /// Broker id, or all.
        #[arg(long, default_value = "all", value_name = "ID")]
        broker: String,
    },
    /// Fail the next COUNT requests of one API with a Kafka error code.
    Errors {
        /// Request type: Produce, Fetch, OffsetCommit, JoinGroup, Heartbeat, … (any case).
        #[arg(long, value_name = "NAME")]
        api: String,
        /// Kafka protocol error code, e.g. 6 (NOT_LEADER_OR_FOLLOWER), 7 (REQUEST_TIMED_OUT).
        #[arg(long, value_name = "N", allow_negative_numbers = true)]
        code: i64,
        /// How many requests fail.
        #[arg(long, value_name = "N", default_value_t = 1)]
        count: u32,
    },
    /// Drop the errors still pending for one API.
    Clear {
        /// Request type, as for `errors`.
        #[arg(long, value_name = "NAME")]
        api: String,
    },
    /// Delay every response of brokers by a round-trip time (0 removes it).
    Rtt {
        /// Broker id, or all.
        #[arg(long, value_name = "ID")]
        broker: String,
        /// Milliseconds.
        #[arg(long, value_name = "N")]
        ms: u64,
    },
    /// Show the brokers' state and the injected errors.
    Status,
}

/// The control API's base URL from `--control`.
fn base_url(control: &str) -> anyhow::Result<String> {
    let text = control.trim();
    let host = match text.split_once("://") {
        Some(("http", rest)) => rest,
        Some(_) => "",
        None => text,
    }
    .trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        bail!("--control {text}: expected ADDR or http://ADDR, e.g. 127.0.0.1:9644");
    }
    Ok(format!("http://{host}"))
}

/// Percent-encodes a path segment typed by the user (broker ids and API names are plain).
fn segment(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Runs one `clustera fault` command.
pub async fn run(args: FaultArgs) -> anyhow::Result<()> {
    let base = base_url(&args.control)?;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let (method, path, body) = match &args.action {
        FaultAction::Down {
            broker,
            for_seconds,
        } => (
            reqwest::Method::POST,
            format!("/brokers/{}/down", segment(broker)),
            match for_seconds {
                Some(s) => json!({ "for_seconds": s }),
                None => json!({}),
            },
        ),
        FaultAction::Up { broker } => (
            reqwest::Method::POST,
            format!("/brokers/{}/up", segment(broker)),
            json!({}),
        ),
        FaultAction::Errors { api, code, count } => (
            reqwest::Method::POST,
            "/errors".to_owned(),
            json!({ "api": api, "code": code, "count": count }),
        ),
        FaultAction::Clear { api } => (
            reqwest::Method::DELETE,
            format!("/errors/{}", segment(api)),
            Value::Null,
        ),
        FaultAction::Rtt { broker, ms } => (
            reqwest::Method::POST,
            format!("/brokers/{}/rtt", segment(broker)),
            json!({ "ms": ms }),
        ),
        FaultAction::Status => (reqwest::Method::GET, "/".to_owned(), Value::Null),
    };
    let mut request = http.request(method, format!("{base}{path}"));
    if !body.is_null() {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the control API at {base}: {}", root(&e)))?;
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("reading the control API's answer ({status})"))?;
    let answer: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        match answer["error"].as_str() {
            Some(error) => bail!("control API refused: {error}"),
            None => bail!("control API answered {status}: {}", text.trim()),
        }
    }
    match &args.action {
        FaultAction::Status => print_status(&answer),
        _ => match answer["message"].as_str() {
            Some(message) => println!("{message}"),
            None => bail!("unexpected answer from the control API: {}", text.trim()),
        },
    }
    Ok(())
}

/// The innermost cause, which says what went wrong ("Connection refused").
fn root(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    let root = current.to_string();
    if root == error.to_string() {
        root
    } else {
        format!("{error}: {root}")
    }
}

fn print_status(cluster: &Value) {
    println!("bootstrap {}", cluster["bootstrap"].as_str().unwrap_or("?"));
    for b in cluster["brokers"].as_array().into_iter().flatten() {
        let mut line = format!("broker {}: {}", b["id"], b["state"].as_str().unwrap_or("?"));
        if let Some(s) = b["up_in_seconds"].as_u64() {
            line.push_str(&format!(" (up again in {s} s)"));
        }
        if let Some(ms) = b["rtt_ms"].as_u64().filter(|ms| *ms > 0) {
            line.push_str(&format!(", rtt {ms} ms"));
        }
        println!("{line}");
    }
    for e in cluster["injected_errors"].as_array().into_iter().flatten() {
        println!(
            "injected so far: {} {} error(s) {} ({})",
            e["count"],
            e["api"].as_str().unwrap_or("?"),
            e["name"].as_str().unwrap_or("?"),
            e["code"]
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn control_addresses_become_base_urls() {
        assert_eq!(base_url("127.0.0.1:9644").unwrap(), "http://127.0.0.1:9644");
        assert_eq!(
            base_url("http://127.0.0.1:9644/").unwrap(),
            "http://127.0.0.1:9644"
        );
        assert!(base_url("https://127.0.0.1:9644").is_err());
        assert!(base_url("http://").is_err());
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(segment("all"), "all");
        assert_eq!(segment("Offset_Commit"), "Offset_Commit");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
