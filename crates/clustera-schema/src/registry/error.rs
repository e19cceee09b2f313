//! What can go wrong talking to a Schema Registry.

use crate::{SchemaError, SchemaId};

/// A failed registry call. [`RegistryError::is_retriable`] tells a registry that is down
/// (worth waiting for) from an answer that will not change.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No URL answered: connection refused, DNS, TLS handshake or timeout.
    #[error("schema registry unreachable at {url}: {reason}")]
    Unreachable {
        /// The last URL tried.
        url: String,
        /// The transport error, with its causes.
        reason: String,
    },
    /// No schema has this id (error code 40403).
    #[error("schema id {0} is unknown to the schema registry")]
    UnknownId(SchemaId),
    /// The subject does not exist, or does not hold this schema (lookup without registering).
    #[error("schema not registered under subject {subject:?}: {message}")]
    NotRegistered {
        /// The subject looked up.
        subject: String,
        /// The registry's explanation.
        message: String,
    },
    /// The schema breaks the subject's compatibility rule (HTTP 409).
    #[error("schema incompatible with subject {subject:?} (registry 409): {message}")]
    Incompatible {
        /// The subject registered to.
        subject: String,
        /// The registry's explanation (which rule, which field).
        message: String,
    },
    /// The registry refused the schema as invalid (HTTP 422).
    #[error("schema registry refused the schema for subject {subject:?} as invalid: {message}")]
    InvalidSchema {
        /// The subject registered to.
        subject: String,
        /// The registry's explanation.
        message: String,
    },
    /// Authentication failed or the principal lacks permission (HTTP 401 or 403).
    #[error("schema registry refused access (HTTP {status}): {message}; check SCHEMA_REGISTRY_USERNAME and SCHEMA_REGISTRY_PASSWORD")]
    Unauthorized {
        /// 401 or 403.
        status: u16,
        /// The registry's explanation.
        message: String,
    },
    /// The registry failed (HTTP 5xx): its backing store or a proxy in front of it.
    #[error("schema registry failed (HTTP {status}): {message}")]
    Server {
        /// The status code.
        status: u16,
        /// The registry's explanation.
        message: String,
    },
    /// Any other answer the API does not specify for the call.
    #[error("schema registry answered HTTP {status} to {call}: {message}")]
    Unexpected {
        /// What was asked.
        call: String,
        /// The status code.
        status: u16,
        /// The body, or its `message`.
        message: String,
    },
    /// A success whose body is not what the API specifies.
    #[error("schema registry answered {call} with an unexpected body: {reason}")]
    BadResponse {
        /// What was asked.
        call: String,
        /// What was wrong with the body.
        reason: String,
    },
    /// The registry's schema cannot be used here (it does not parse, or is Protobuf).
    #[error("schema {id} from the registry: {source}")]
    Schema {
        /// The schema's id.
        id: SchemaId,
        /// Why it cannot be used.
        #[source]
        source: SchemaError,
    },
}

impl RegistryError {
    /// Whether the same call may succeed later without anyone changing anything: the registry
    /// is unreachable, or failed on its side.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Server { .. })
    }
}
