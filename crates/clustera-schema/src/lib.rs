//! # Typed events and schemas for Clustera kernels
//!
//! A kernel declares the serde types it reads and writes and gets every message decoded and
//! validated; a message that does not fit is a poison pill, dead-lettered with the field path
//! and the reason, never a panic.
//!
//! - [`json`]: JSON Schema validation (the `jsonschema` crate) of inputs and of outputs before
//!   they are produced, with schemas from a file, from code, or from a Schema Registry.
//! - [`avro`]: Avro binary datums (`apache-avro`) with schema resolution, so a reader with a
//!   newer schema reads older records.
//! - [`wire`]: the Confluent wire format (magic byte 0, 4-byte schema id, payload).
//! - [`subject`]: the subject naming strategies (topic, record, topic-record).
//!
//! These four are pure (no I/O) and are all that is built without the default `client`
//! feature, which adds:
//!
//! - [`registry`]: a Schema Registry client with a cache, basic auth and TLS, configured by
//!   `SCHEMA_REGISTRY_URL` and friends; it speaks the REST API of Confluent Schema Registry,
//!   Karapace, Redpanda's built-in registry and Apicurio's Confluent-compatible API;
//! - [`typed`]: [`EventCodec`] and the [`EventKernel`] adapter that plug all this into a
//!   [`clustera::Kernel`], mapping each failure onto the runtime's retry rules.
//!
//! ```no_run
//! use clustera::{Context, KernelError, Message, Outcome};
//! use clustera_schema::{EventCodec, EventKernel, JsonSchema, Typed};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct OrderPlaced { order_id: String, amount_cents: u64 }
//!
//! struct Orders { events: EventCodec<OrderPlaced> }
//!
//! impl EventKernel for Orders {
//!     type Event = OrderPlaced;
//!     fn name(&self) -> &str { "orders" }
//!     fn default_topics(&self) -> Vec<String> { vec!["orders".into()] }
//!     fn events(&self) -> &EventCodec<OrderPlaced> { &self.events }
//!     async fn handle(&self, order: OrderPlaced, _msg: &Message, _ctx: &mut Context)
//!         -> Result<Outcome, KernelError> {
//!         println!("{} for {} cents", order.order_id, order.amount_cents);
//!         Ok(Outcome::Ack)
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let schema = JsonSchema::from_file("order_placed.schema.json").unwrap();
//!     clustera::run(Typed(Orders { events: EventCodec::json_validated(schema) }))
//! }
//! ```

pub mod avro;
pub mod json;
#[cfg(feature = "client")]
pub mod registry;
pub mod subject;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "client")]
pub mod typed;
pub mod wire;

pub use avro::AvroSchema;
pub use json::{JsonSchema, Violation};
#[cfg(feature = "client")]
pub use registry::{RegistryClient, RegistryError, RegistrySettings, SchemaType};
pub use subject::SubjectNameStrategy;
#[cfg(feature = "client")]
pub use typed::{EventCodec, EventKernel, Typed};
pub use wire::SchemaId;

/// Why a value could not be encoded, decoded or validated, or a schema not used. Everything
/// here is about the data or the schema itself, so retrying never helps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The bytes are not in the Confluent wire format.
    #[error("not a Schema Registry record: {0}")]
    Frame(String),
    /// A schema that cannot be parsed or compiled, or cannot be used as asked.
    #[error("{0}")]
    Schema(String),
    /// The value breaks its JSON Schema.
    #[error("does not match its JSON Schema: {}", json::describe(.0))]
    Invalid(Vec<Violation>),
    /// The value does not fit the Rust type.
    #[error("{} for {type_name}: {reason}", if path.is_empty() { "invalid value".to_owned() } else { format!("field `{path}`") })]
    Decode {
        /// The Rust type asked for.
        type_name: &'static str,
        /// The field that did not fit (`items[0].quantity`); empty for the whole value.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
    /// An Avro datum that cannot be read with its schema (truncated, corrupt, unresolvable).
    #[error("{0}")]
    Avro(String),
    /// A value that cannot be encoded with its schema.
    #[error("cannot encode: {0}")]
    Encode(String),
}

impl SchemaError {
    /// The explanation without the variant's prefix.
    pub(crate) fn reason(&self) -> String {
        match self {
            SchemaError::Schema(s) | SchemaError::Avro(s) | SchemaError::Frame(s) => s.clone(),
            other => other.to_string(),
        }
    }
}
