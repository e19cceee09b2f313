//! Logging: `tracing` everywhere, librdkafka's own logs included.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once: level from `RUST_LOG` (default `info`), format from
/// `CLUSTERA_LOG_FORMAT` (`json` or `pretty`; default pretty on a terminal, JSON otherwise).
/// Calling it again does nothing.
pub fn init_logging() {
    init_logging_with_default("info");
}

/// Like [`init_logging`], with `default_filter` when `RUST_LOG` is not set.
pub fn init_logging_with_default(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = match std::env::var("CLUSTERA_LOG_FORMAT").ok().as_deref() {
        Some("json") => true,
        Some("pretty") | Some("text") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
