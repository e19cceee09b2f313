//! Seed 002's four examples, in Rust, against `clustera dev` (or any Kafka broker).
//!
//! | Example | Run it | What it shows |
//! |---|---|---|
//! | 1. basic producer and consumer | `cargo run -p clustera-examples --bin basic-producer`, then `--bin basic-consumer` | rdkafka by hand: delivery reports, flush, a poll loop with error handling and manual commits. Everything a Clustera kernel does not make you write. |
//! | 2. event schemas | `cargo run -p clustera-schema --example event_schemas` | typed, validated events and their evolution (in the schema crate) |
//! | 3. consumer groups | `cargo run -p clustera-examples --bin consumer-groups` | members joining and leaving one group, the assignment and every rebalance printed as it happens, nothing lost or read twice |
//! | 4. order processing | `clustera demo orders` | five kernels on the Clustera runtime ([`orders`]): idempotent handlers, retries, a dead-letter topic, a replay, and a summary |
//!
//! Examples 1 and 3 take the broker from `--brokers` or `KAFKA_BOOTSTRAP_SERVERS` (default
//! `127.0.0.1:9092`, where `clustera dev` listens).

pub mod orders;

/// The default bootstrap address: `clustera dev`'s.
pub const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
