//! What can be wrong with a message.

/// A message that is not a valid Debezium change or outbox event. Permanent: the same bytes
/// never decode, so a consumer dead-letters them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all.
    #[error("not JSON: {0}")]
    Json(String),
    /// JSON, but not an object where one is required.
    #[error("{0} is not a JSON object")]
    NotAnObject(&'static str),
    /// A required field is absent or null.
    #[error("missing field `{0}`")]
    Missing(String),
    /// A field has the wrong type or an impossible value.
    #[error("field `{field}`: {problem}")]
    Invalid {
        /// The field, as a path (`payload.source.snapshot`).
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// An `op` this decoder does not know.
    #[error("unknown op {0:?} (expected c, u, d, r, t or m)")]
    UnknownOp(String),
    /// A change event for another table than the outbox.
    #[error("change event for {0}, not an outbox table")]
    NotOutbox(String),
}

impl DecodeError {
    pub(crate) fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}
