//! KafkaSend on Clustera: HTTP requests, and files of any size, carried over Kafka as jobs.
//!
//! - [`portal`]: the consumer that reassembles requests, validates them ([`policy`],
//!   [`ssrf`]), calls the REST API with a token it manages ([`oauth`]), and sends the
//!   response back in chunks.
//! - [`client`]: sends jobs and waits for their responses; `clustera send` is built on it.
//! - [`spool`]: bodies in memory or, above a threshold, in temporary files.
//! - [`path`], [`target`]: endpoints made canonical, then judged: the one way from a
//!   request head to a URL.
//!
//! The wire format is `clustera-send-protocol`'s, described in `PROTOCOL.md`.

pub mod client;
pub mod config;
pub mod oauth;
pub mod path;
pub mod policy;
pub mod portal;
pub mod spool;
pub mod ssrf;
pub mod target;
pub mod transport;
