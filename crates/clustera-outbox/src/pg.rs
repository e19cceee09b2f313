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
//!
//! # TLS
//!
//! `DATABASE_URL` may carry libpq's `sslmode` and `sslrootcert` ([`Target::parse`]); TLS is
//! OpenSSL's, the library librdkafka already links. As with libpq:
//!
//! | `sslmode` | TLS | certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | if the server offers it | only if `sslrootcert` is set (chain) |
//! | `require` | always | only if `sslrootcert` is set (chain) |
//! | `verify-ca` | always | chain, against `sslrootcert` or the system's store |
//! | `verify-full` | always | chain and host name |
//!
//! The relay's SQL connections (through `postgres-openssl`) and its walsender session
//! ([`crate::relay`]) both follow it.

use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::BytesMut;
use clustera::ErrorKind;
use openssl::ssl::{ConnectConfiguration, SslConnector, SslMethod, SslVerifyMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::config::Host;
use tokio_postgres::Client;

use crate::relay::walsender::{Io, WalsenderError};

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

/// `sslmode`, as libpq reads it (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it.
    Prefer,
    /// Always TLS.
    Require,
    /// Always TLS, with the certificate chain checked.
    VerifyCa,
    /// Always TLS, with the chain and the host name checked.
    VerifyFull,
}

/// A `DATABASE_URL` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// An `sslmode` libpq does not know.
    #[error(
        "DATABASE_URL: sslmode={0:?} is not disable, prefer, require, verify-ca or verify-full"
    )]
    SslMode(String),
    /// Anything `tokio-postgres` refuses.
    #[error("DATABASE_URL: {0}")]
    Invalid(#[from] tokio_postgres::Error),
    /// The TLS settings cannot be loaded (say, an unreadable `sslrootcert`).
    #[error("DATABASE_URL TLS settings: {0}")]
    Tls(#[from] openssl::error::ErrorStack),
}

/// Where PostgreSQL is and how to talk to it: a parsed `DATABASE_URL`.
#[derive(Clone)]
pub struct Target {
    /// Everything but the TLS settings.
    pub config: tokio_postgres::Config,
    /// `sslmode`.
    pub ssl_mode: SslMode,
    /// `sslrootcert`: a PEM file of the certificate authorities to trust.
    pub ssl_root_cert: Option<PathBuf>,
    /// OpenSSL's settings for both kinds of connection, loaded once.
    connector: SslConnector,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // tokio-postgres' Config prints its password as redacted.
        f.debug_struct("Target")
            .field("config", &self.config)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .finish_non_exhaustive()
    }
}

/// Takes `sslmode` and `sslrootcert` out of a connection string (URL or `key=value` form),
/// since `tokio-postgres` knows neither `verify-ca`, `verify-full` nor `sslrootcert`.
fn split_tls(url: &str) -> (String, Option<String>, Option<String>) {
    let (mut mode, mut root) = (None, None);
    let mut take = |key: &str, value: &str| match key {
        "sslmode" => {
            mode = Some(value.to_owned());
            true
        }
        "sslrootcert" => {
            root = Some(value.to_owned());
            true
        }
        _ => false,
    };
    let rest = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((base, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|pair| {
                        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                        !take(k, &percent_decode(v))
                    })
                    .collect();
                if kept.is_empty() {
                    base.to_owned()
                } else {
                    format!("{base}?{}", kept.join("&"))
                }
            }
        }
    } else {
        url.split_whitespace()
            .filter(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                !take(k.trim(), v.trim().trim_matches('\''))
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    (rest, mode, root)
}

/// Decodes `%XX` escapes (a path in a URL's query may carry them).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Target {
    /// Parses `DATABASE_URL` (either form libpq accepts) and loads its TLS settings.
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let (rest, mode, root) = split_tls(url);
        let ssl_mode = match mode.as_deref() {
            None | Some("prefer") => SslMode::Prefer,
            Some("disable") => SslMode::Disable,
            Some("require") => SslMode::Require,
            Some("verify-ca") => SslMode::VerifyCa,
            Some("verify-full") => SslMode::VerifyFull,
            Some(other) => return Err(TargetError::SslMode(other.to_owned())),
        };
        let mut config: tokio_postgres::Config = rest.parse()?;
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let ssl_root_cert = root.map(PathBuf::from);
        let mut builder = SslConnector::builder(SslMethod::tls_client())?;
        if let Some(ca) = &ssl_root_cert {
            builder.set_ca_file(ca)?;
        }
        // libpq checks nothing in these modes unless it is given a CA.
        if matches!(ssl_mode, SslMode::Prefer | SslMode::Require) && ssl_root_cert.is_none() {
            builder.set_verify(SslVerifyMode::NONE);
        }
        Ok(Self {
            config,
            ssl_mode,
            ssl_root_cert,
            connector: builder.build(),
        })
    }

    fn configure(&self, config: &mut ConnectConfiguration) {
        config.set_verify_hostname(self.ssl_mode == SslMode::VerifyFull);
    }

    /// Connects a SQL session; the connection is driven by a task of its own, which ends
    /// with it.
    pub async fn connect(&self) -> Result<Client, tokio_postgres::Error> {
        let mut tls = postgres_openssl::MakeTlsConnector::new(self.connector.clone());
        let verify_host = self.ssl_mode == SslMode::VerifyFull;
        tls.set_callback(move |config, _| {
            config.set_verify_hostname(verify_host);
            Ok(())
        });
        let (client, connection) = self.config.connect(tls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection ended");
            }
        });
        Ok(client)
    }

    /// Opens the byte stream of a session: the first host that answers, over TLS when
    /// `sslmode` says so. The startup is the caller's.
    pub(crate) async fn open_stream(&self) -> Result<Box<dyn Io>, WalsenderError> {
        let ports = self.config.get_ports();
        let timeout = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(Duration::from_secs(30));
        let mut last = WalsenderError::Config("no host".into());
        for (i, host) in self.config.get_hosts().iter().enumerate() {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match tokio::time::timeout(timeout, self.open_one(host, port)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => last = e,
                Err(_) => {
                    last = WalsenderError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no connection within {timeout:?}"),
                    ))
                }
            }
        }
        Err(last)
    }

    async fn open_one(&self, host: &Host, port: u16) -> Result<Box<dyn Io>, WalsenderError> {
        let name = match host {
            Host::Unix(dir) => {
                let path = dir.join(format!(".s.PGSQL.{port}"));
                return Ok(Box::new(tokio::net::UnixStream::connect(path).await?));
            }
            Host::Tcp(name) => name,
        };
        let mut tcp = tokio::net::TcpStream::connect((name.as_str(), port)).await?;
        tcp.set_nodelay(true)?;
        if self.ssl_mode == SslMode::Disable {
            return Ok(Box::new(tcp));
        }
        let mut request = BytesMut::new();
        postgres_protocol::message::frontend::ssl_request(&mut request);
        tcp.write_all(&request).await?;
        let mut answer = [0u8];
        tcp.read_exact(&mut answer).await?;
        match answer[0] {
            b'S' => {}
            b'N' if self.ssl_mode == SslMode::Prefer => return Ok(Box::new(tcp)),
            b'N' => {
                return Err(WalsenderError::Tls(format!(
                    "sslmode is {:?} but the server does not offer TLS",
                    self.ssl_mode
                )))
            }
            other => {
                return Err(WalsenderError::Protocol(format!(
                    "unexpected answer {other:#04x} to SSLRequest"
                )))
            }
        }
        let tls = |e: openssl::error::ErrorStack| WalsenderError::Tls(e.to_string());
        let mut config = self.connector.configure().map_err(tls)?;
        self.configure(&mut config);
        let ssl = config.into_ssl(name).map_err(tls)?;
        let mut stream = tokio_openssl::SslStream::new(ssl, tcp).map_err(tls)?;
        Pin::new(&mut stream)
            .connect()
            .await
            .map_err(|e| WalsenderError::Tls(e.to_string()))?;
        Ok(Box::new(stream))
    }
}

/// Connects to `url` (see [`Target`]); the connection is driven by a task of its own,
/// which ends with it. A `DATABASE_URL` that cannot be parsed is an error.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    match Target::parse(url) {
        Ok(target) => target.connect().await,
        // Let tokio-postgres say what it refuses. Nothing connects without the TLS asked
        // for: every string `Target::parse` refuses is refused by tokio-postgres too (a bad
        // sslmode, or an sslrootcert, an option it does not know).
        Err(_) => tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .map(|(client, connection)| {
                tokio::spawn(connection);
                client
            }),
    }
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
    match Target::parse(url) {
        Ok(target) => reconnect_to(&target, what).await,
        // tokio-postgres refuses it too (see `connect`), with its own words.
        Err(_) => connect(url).await,
    }
}

/// [`reconnect`] to a parsed target.
pub async fn reconnect_to(target: &Target, what: &str) -> Result<Client, tokio_postgres::Error> {
    let started = std::time::Instant::now();
    let mut delays = backoff();
    loop {
        match target.connect().await {
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
    fn tls_settings_are_taken_out_of_either_form_of_database_url() {
        let (rest, mode, root) = split_tls(
            "postgres://u:p@h:5/db?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem",
        );
        assert_eq!(rest, "postgres://u:p@h:5/db?application_name=x");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(root.as_deref(), Some("/etc/ca.pem"));
        let (rest, mode, root) = split_tls("postgres://u@h/db?sslmode=require");
        assert_eq!(
            (rest.as_str(), mode.as_deref(), root),
            ("postgres://u@h/db", Some("require"), None)
        );
        let (rest, mode, root) =
            split_tls("host=h dbname=db sslmode=verify-ca sslrootcert='/tmp/ca.pem' user=u");
        assert_eq!(rest, "host=h dbname=db user=u");
        assert_eq!(mode.as_deref(), Some("verify-ca"));
        assert_eq!(root.as_deref(), Some("/tmp/ca.pem"));

        let t = Target::parse("postgres://u@h/db?sslmode=verify-full").unwrap();
        assert_eq!(t.ssl_mode, SslMode::VerifyFull);
        assert_eq!(
            t.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(
            Target::parse("postgres://u@h/db").unwrap().ssl_mode,
            SslMode::Prefer
        );
        let e = Target::parse("postgres://u@h/db?sslmode=allow-maybe").unwrap_err();
        assert!(e.to_string().contains("allow-maybe"), "{e}");
        let e = Target::parse("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent")
            .unwrap_err();
        assert!(matches!(e, TargetError::Tls(_)), "{e}");
        // The password stays out of the debug output.
        let t = Target::parse("postgres://u:hunter2@h/db").unwrap();
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn reconnection_delays_grow_and_stay_capped() {
        let delays: Vec<Duration> = backoff().take(12).collect();
        assert!(delays[0] >= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= MAX_BACKOFF));
        assert!(delays[11] >= MAX_BACKOFF / 2);
    }
}
