//! What can go wrong serving a page or an action, and the HTTP status each maps to.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rdkafka::error::KafkaError;

/// An error shown to the operator as a page with its cause.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// A Kafka request failed.
    #[error("{what}: {source}")]
    Kafka {
        /// What the console was doing.
        what: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// A topic, group or record that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A request the console cannot act on: says what was wrong.
    #[error("{0}")]
    BadRequest(String),
    /// Refused: read-only mode, a missing token or a failed CSRF check.
    #[error("{0}")]
    Forbidden(String),
    /// Authentication needed.
    #[error("{0}")]
    Unauthorized(String),
    /// Something else broke (a task panicked, a record could not be encoded).
    #[error("{0}")]
    Internal(String),
}

impl ConsoleError {
    /// A Kafka error with what the console was doing.
    pub fn kafka(what: impl Into<String>, source: KafkaError) -> Self {
        Self::Kafka {
            what: what.into(),
            source,
        }
    }

    /// The HTTP status it maps to.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Kafka { .. } => StatusCode::BAD_GATEWAY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = crate::pages::layout::error_page(status, &self.to_string());
        (status, body).into_response()
    }
}

/// Runs blocking Kafka work off the async workers.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ConsoleError> + Send + 'static,
) -> Result<T, ConsoleError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ConsoleError::Internal(format!("background task failed: {e}")))?
}
