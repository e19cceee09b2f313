//! What every process of the workspace shares, in one place: kernels, the KafkaSend portal and
//! client, the outbox relay and the command-line tools.
//!
//! - [`env`]: environment variables → typed values, and the one error type, [`ConfigError`],
//!   that names the variable and what is wrong with it;
//! - [`error_chain`]: an error and its causes on one line;
//! - [`health`] and [`http`]: liveness and readiness, and the listener serving them with the
//!   metrics (`CLUSTERA_HTTP_ADDR`);
//! - [`producer`]: the idempotent producer's configuration, from the same `KAFKA_*` settings as
//!   every kernel;
//! - [`counter`]: counters shared between threads.
//!
//! Layering: `env`, `error_chain`, `counter` and `health` depend on nothing else in the crate;
//! `http` on `env` and `health`; [`crate::config`] builds on `env`; `producer` on
//! [`crate::config`]. The runtime and the telemetry build on all of them, never the reverse.

pub mod counter;
pub mod env;
mod error_chain;
pub mod health;
pub mod http;
pub mod producer;

pub use counter::bump;
pub use env::ConfigError;
pub use error_chain::error_chain;
pub use health::{Health, HealthReport};
pub use http::{serve, HttpServer, Observed};
pub use producer::idempotent_producer_config;
