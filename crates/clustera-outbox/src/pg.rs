//! PostgreSQL errors and connections, shared by the relay, the processor's store and the demo.
//!
//! # Which failures are which
//!
//! Every PostgreSQL error is given one of the runtime's [`ErrorKind`]s, by SQLSTATE:
//!
//! | Error | Kind | Why |
//! |---|---|---|
//! | no SQLSTATE: connection refused, reset or closed; in the store, any failure to get a connection from its pool | `Unavailable` | the server cannot be reached |
//! | class `08` (connection exception), `57P01`..`57P03` (admin or crash shutdown, cannot connect now), class `53` (insufficient resources) | `Unavailable` | the server is restarting or full |
//! | `40001` (serialization failure), `40P01` (deadlock), `57014` (statement cancelled) | `Transient` | the same write may succeed next time |
//! | class `23` (integrity constraint violation), class `22` (data exception) | `Permanent` | the write itself is wrong |
//! | anything else | `Transient` | unknown: retried up to `CLUSTERA_MAX_ATTEMPTS` |
//!
//! A dependency being down never dead-letters anything: `Unavailable` is retried for as long
//! as it lasts.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use clustera::ErrorKind;
use tokio_postgres::{Client, NoTls};

/// The kind of a PostgreSQL error (see the module documentation).
pub fn error_kind(e: &tokio_postgres::Error) -> ErrorKind {
    match e.code() {
        Some(code) => sqlstate_kind(code.code()),
        // No SQLSTATE: the client's own failure to talk to the server (I/O, closed
        // connection, connect timeout, protocol).
        None => ErrorKind::Unavailable,
    }
}

/// The kind of a SQLSTATE (see the module documentation).
pub fn sqlstate_kind(code: &str) -> ErrorKind {
    match code {
        "57P01" | "57P02" | "57P03" => ErrorKind::Unavailable,
        "40001" | "40P01" | "57014" => ErrorKind::Transient,
        _ => match code.get(..2) {
            Some("08" | "53") => ErrorKind::Unavailable,
            Some("22" | "23") => ErrorKind::Permanent,
            _ => ErrorKind::Transient,
        },
    }
}

/// Whether the error means the server cannot be reached right now.
pub fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    error_kind(e) == ErrorKind::Unavailable
}

/// Connects to `url`; the connection is driven by a task of its own, which ends with it.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "postgres connection ended");
        }
    });
    Ok(client)
}

/// The longest wait between two reconnection attempts: a restarted server is found at most
/// this long after it accepts connections again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The delays between reconnection attempts: from 100 ms, doubling with jitter, at most
/// [`MAX_BACKOFF`], never running out.
pub fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(MAX_BACKOFF)
        .with_jitter()
        .without_max_times()
        .build()
        // Jitter is added on top of the capped delay; keep the cap a cap.
        .map(|d| d.min(MAX_BACKOFF))
}

/// Connects to `url`, retrying with [`backoff`] for as long as the server is unavailable
/// (logged as `what`). Any other error (a wrong password, a missing database) is returned.
pub async fn reconnect(url: &str, what: &str) -> Result<Client, tokio_postgres::Error> {
    let started = std::time::Instant::now();
    let mut delays = backoff();
    loop {
        match connect(url).await {
            Ok(client) => {
                tracing::info!(
                    what,
                    after_ms = started.elapsed().as_millis() as u64,
                    "reconnected to postgres"
                );
                return Ok(client);
            }
            Err(e) if is_unavailable(&e) => {
                let delay = delays.next().unwrap_or(MAX_BACKOFF);
                tracing::warn!(what, error = %e, delay_ms = delay.as_millis() as u64,
                    "postgres unavailable; reconnecting");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_are_classified_by_the_documented_rule() {
        let cases = [
            ("57P01", ErrorKind::Unavailable),
            ("57P02", ErrorKind::Unavailable),
            ("57P03", ErrorKind::Unavailable),
            ("08006", ErrorKind::Unavailable),
            ("08001", ErrorKind::Unavailable),
            ("53300", ErrorKind::Unavailable),
            ("40001", ErrorKind::Transient),
            ("40P01", ErrorKind::Transient),
            ("57014", ErrorKind::Transient),
            ("23505", ErrorKind::Permanent),
            ("23514", ErrorKind::Permanent),
            ("22P02", ErrorKind::Permanent),
            ("22003", ErrorKind::Permanent),
            ("42P01", ErrorKind::Transient),
            ("XX000", ErrorKind::Transient),
        ];
        for (code, kind) in cases {
            assert_eq!(sqlstate_kind(code), kind, "{code}");
        }
    }

    #[test]
    fn reconnection_delays_grow_and_stay_capped() {
        let delays: Vec<Duration> = backoff().take(12).collect();
        assert!(delays[0] >= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= MAX_BACKOFF));
        assert!(delays[11] >= MAX_BACKOFF / 2);
    }
}
