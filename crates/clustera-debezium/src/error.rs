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

/// Why a row cannot be encoded as a Debezium event. Permanent for that row and configuration:
/// the relay should stop with it rather than skip the row.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A column's type is not one this encoder maps (and unknown types are not omitted).
    #[error("column `{column}`: type OID {type_oid} is not supported ({why})")]
    UnsupportedType {
        /// The column.
        column: String,
        /// Its type's OID.
        type_oid: u32,
        /// What is missing.
        why: String,
    },
    /// A column's text is not a valid value of its type.
    #[error("column `{column}`: {problem}")]
    InvalidValue {
        /// The column.
        column: String,
        /// What is wrong with the value.
        problem: String,
    },
    /// The row has another number of values than the relation has columns.
    #[error("the row has {values} values for {columns} columns")]
    ColumnCount {
        /// Columns of the relation.
        columns: usize,
        /// Values in the row.
        values: usize,
    },
    /// A column the configuration names is not in the table.
    #[error("{role} column `{column}` is not in {table}")]
    MissingColumn {
        /// What the column is for (`event id`, `route-by`, …).
        role: &'static str,
        /// The configured name.
        column: String,
        /// `schema.table`.
        table: String,
    },
    /// A column the Outbox Event Router needs a value from is null in this row.
    #[error("{role} column `{column}` is null")]
    NullValue {
        /// What the column is for.
        role: &'static str,
        /// The column.
        column: String,
    },
    /// A setting has an impossible value.
    #[error("{setting}: {problem}")]
    Config {
        /// The setting (an environment variable's name when read from the environment).
        setting: String,
        /// What is wrong with it.
        problem: String,
    },
}
