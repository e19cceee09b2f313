//! Logging: `tracing` everywhere, librdkafka's own logs included, with optional OTLP export.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::otel;

/// Keeps the OpenTelemetry exporter alive; dropping it flushes and shuts the exporter down.
#[must_use = "dropping the guard stops span export"]
#[derive(Debug, Default)]
pub struct LoggingGuard {
    #[cfg(feature = "otlp")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

#[cfg(feature = "otlp")]
impl Drop for LoggingGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber once: level from `RUST_LOG` (default `info`), format from
/// `CLUSTERA_LOG_FORMAT` (`json` or `pretty`; default pretty on a terminal, JSON otherwise).
/// Calling it again does nothing. No spans are exported.
pub fn init_logging() -> LoggingGuard {
    init("info", None).unwrap_or_default()
}

/// Like [`init_logging`], with `default_filter` when `RUST_LOG` is not set.
pub fn init_logging_with_default(default_filter: &str) -> LoggingGuard {
    init(default_filter, None).unwrap_or_default()
}

/// Like [`init_logging`], and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, exports spans over
/// OTLP/HTTP as service `service`. Fails only if that exporter cannot be built.
pub fn init_kernel_logging(service: &str) -> Result<LoggingGuard, String> {
    init("info", Some(service))
}

fn init(default_filter: &str, service: Option<&str>) -> Result<LoggingGuard, String> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = match std::env::var("CLUSTERA_LOG_FORMAT").ok().as_deref() {
        Some("json") => true,
        Some("pretty") | Some("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().flatten_event(true).boxed()
    } else {
        fmt.boxed()
    };
    #[cfg(feature = "otlp")]
    {
        let provider = match service {
            Some(name) if otel::configured() => Some(otel::provider(name)?),
            _ => None,
        };
        let otel_layer = provider.as_ref().map(otel::layer);
        let _ = tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .with(otel_layer)
            .try_init();
        Ok(LoggingGuard { provider })
    }
    #[cfg(not(feature = "otlp"))]
    {
        if service.is_some() && otel::configured() {
            return Err(
                "OTEL_EXPORTER_OTLP_ENDPOINT is set, but this kernel was built without \
                        clustera's `otlp` feature: enable it, or unset the variable"
                    .to_owned(),
            );
        }
        let _ = tracing_subscriber::registry()
            .with(fmt.with_filter(filter))
            .try_init();
        Ok(LoggingGuard {})
    }
}

/// Removes secrets from librdkafka's log lines before they reach the subscriber: PEM blocks
/// (librdkafka's `debug=conf` prints `ssl.certificate.pem`) and the configured secret values.
#[derive(Debug, Default, Clone)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    /// Redacts every PEM block, and each of `secrets` (values under 4 characters are ignored:
    /// replacing them would garble ordinary words).
    pub(crate) fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 4).collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self { secrets }
    }

    pub(crate) fn redact<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        if !text.contains("-----BEGIN") && !self.secrets.iter().any(|s| text.contains(s.as_str())) {
            return std::borrow::Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("-----BEGIN") {
            out.push_str(&rest[..start]);
            out.push_str("[PEM redacted]");
            // Skip to the end of the matching END line, or drop the rest if it is cut off.
            rest = match rest[start..].find("-----END") {
                Some(end) => {
                    let after_end = &rest[start + end + "-----END".len()..];
                    match after_end.find("-----") {
                        Some(close) => &after_end[close + "-----".len()..],
                        None => "",
                    }
                }
                None => "",
            };
        }
        out.push_str(rest);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        std::borrow::Cow::Owned(out)
    }

    /// Forwards one librdkafka log line to `tracing`, redacted.
    pub(crate) fn log(
        &self,
        level: rdkafka::config::RDKafkaLogLevel,
        facility: &str,
        message: &str,
    ) {
        use rdkafka::config::RDKafkaLogLevel as L;
        let message = self.redact(message);
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", facility, "{message}")
            }
            L::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
            L::Notice | L::Info => tracing::info!(target: "librdkafka", facility, "{message}"),
            L::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Redactor;

    #[test]
    fn pem_blocks_and_secrets_are_redacted() {
        let r = Redactor::new(["hunter22".to_owned(), "ab".to_owned()]);
        let line = "ssl.ca.pem = -----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE----- pw=hunter22 ab";
        assert_eq!(r.redact(line), "ssl.ca.pem = [PEM redacted] pw=*** ab");
        assert_eq!(
            r.redact("cut -----BEGIN KEY-----\nMII"),
            "cut [PEM redacted]"
        );
        assert!(matches!(
            r.redact("plain"),
            std::borrow::Cow::Borrowed("plain")
        ));
    }
}
