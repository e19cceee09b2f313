//! The REST call of a complete job: the token, the filtered headers, the body streamed from
//! its spool; the response body streamed into a spool of its own.

use futures::StreamExt;
use sha2::{Digest, Sha256};

use clustera_send_protocol::ErrorCode;

use super::jobs::Complete;
use super::Shared;
use crate::spool::Spool;

/// The REST API's answer.
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Response headers (framing headers removed).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Spool,
    /// Its SHA-256.
    pub sha256: [u8; 32],
}

/// A failed call, with the code the client will see.
pub struct Failure {
    /// The code.
    pub code: ErrorCode,
    /// What happened.
    pub message: String,
}

impl Failure {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// What a client is told when the API cannot be reached: the kind of failure, never the
/// address or the lower layers' text.
fn unreachable_message(e: &reqwest::Error, chain: &str) -> &'static str {
    if chain.contains("certificate") {
        "the API could not be reached: its TLS certificate was not accepted"
    } else if e.is_timeout() {
        "the API could not be reached: the connection timed out"
    } else if e.is_connect() {
        "the API could not be reached: the connection failed"
    } else {
        "the API could not be reached"
    }
}

/// Response bytes hashed and spooled per blocking task.
const STORE_BATCH: usize = 256 * 1024;

/// The header naming a job to the API (IETF httpapi, "The Idempotency-Key HTTP Header Field").
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// The `Idempotency-Key` value of a job: its id as a structured-field string (quoted), as
/// the draft specifies.
pub fn idempotency_key(job: clustera_send_protocol::JobId) -> String {
    format!("\"{job}\"")
}

/// Calls the API for `job`; on a 401, calls once more with the next token (see
/// [`crate::oauth`] for when a 401 refreshes the token).
pub async fn call(shared: &Shared, job: &Complete, generation: u64) -> Result<Answer, Failure> {
    let method = reqwest::Method::from_bytes(job.head.method.as_bytes())
        .map_err(|e| Failure::new(ErrorCode::InvalidRequest, format!("method: {e}")))?;
    let mut retry = false;
    loop {
        let token = shared.tokens.token().await.map_err(|e| {
            tracing::warn!(job_id = %job.head.job_id, error = %e, "no OAuth2 token");
            Failure::new(ErrorCode::Upstream, e.public_message())
        })?;
        // Each attempt streams the body from its own start: a spooled body is read by
        // position, never through a shared file cursor.
        let body = job.spool.http_body().map_err(|e| {
            tracing::error!(job_id = %job.head.job_id, error = %e, "cannot read the spooled body");
            Failure::new(ErrorCode::Internal, "the portal could not read the body")
        })?;
        let mut request = shared
            .http
            .request(method.clone(), job.url.clone())
            .body(body);
        for (name, value) in &job.headers {
            request = request.header(name, value);
        }
        // The same for every run of the job, so the API can recognise a repeat (see the
        // module docs of `portal`). The policy never forwards a client's own.
        request = request.header(IDEMPOTENCY_KEY, idempotency_key(job.head.job_id));
        if let Some(t) = &token {
            request = request.bearer_auth(&t.value);
        }
        let response = request.send().await.map_err(|e| {
            // The error names the API's URL: logged, and only its kind returned.
            let chain = clustera::infra::error_chain(&e);
            tracing::warn!(job_id = %job.head.job_id, error = %chain, "calling the API failed");
            Failure::new(ErrorCode::Upstream, unreachable_message(&e, &chain))
        })?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED {
            if let Some(t) = &token {
                if shared.tokens.unauthorized(t, retry).await {
                    tracing::info!(job_id = %job.head.job_id, generation = t.generation,
                        "the API refused the token; calling again with the next one");
                    retry = true;
                    continue;
                }
            }
        }
        return read_answer(shared, job.head.job_id, generation, response).await;
    }
}

/// Reads the API's response into a spool, counting its bytes against the portal's limits as
/// they arrive (the job holds them until the response is sent).
async fn read_answer(
    shared: &Shared,
    job_id: clustera_send_protocol::JobId,
    generation: u64,
    response: reqwest::Response,
) -> Result<Answer, Failure> {
    let status = response.status().as_u16();
    let policy = &shared.config.policy;
    let headers = response
        .headers()
        .iter()
        .filter(|(name, _)| policy.returns_response_header(name.as_str()))
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let spool_failed = |e: std::io::Error| {
        tracing::error!(%job_id, error = %e, "cannot spool the response");
        Failure::new(
            ErrorCode::Internal,
            "the portal could not store the response",
        )
    };
    let mut store = Some((
        Spool::for_size(0, &shared.config.spool).map_err(spool_failed)?,
        Sha256::new(),
    ));
    let mut pending: Vec<u8> = Vec::new();
    let mut total = 0u64;
    let mut stream = response.bytes_stream();
    loop {
        let piece = stream.next().await.transpose().map_err(|e| {
            tracing::warn!(%job_id, error = %clustera::infra::error_chain(&e), "reading the response failed");
            Failure::new(ErrorCode::Upstream, "the API's response broke off")
        })?;
        if let Some(piece) = &piece {
            total += piece.len() as u64;
            if total > shared.config.max_body_bytes {
                return Err(Failure::new(
                    ErrorCode::TooLarge,
                    format!(
                        "the response is larger than {} bytes",
                        shared.config.max_body_bytes
                    ),
                ));
            }
            shared
                .reserve(job_id, generation, piece.len() as u64)
                .map_err(|m| {
                    Failure::new(
                        ErrorCode::Busy,
                        format!("the response does not fit the portal's limits: {m}"),
                    )
                })?;
            pending.extend_from_slice(piece);
        }
        // Hashing and writing run off the async threads, a batch at a time.
        if pending.len() >= STORE_BATCH || (piece.is_none() && !pending.is_empty()) {
            let batch = std::mem::take(&mut pending);
            let (mut spool, mut hasher) = store.take().ok_or_else(|| {
                Failure::new(
                    ErrorCode::Internal,
                    "the portal could not store the response",
                )
            })?;
            let config = shared.config.spool.clone();
            let stored = tokio::task::spawn_blocking(move || {
                hasher.update(&batch);
                spool.append(&batch, &config).map(|()| (spool, hasher))
            })
            .await
            .map_err(|e| spool_failed(std::io::Error::other(e.to_string())))?
            .map_err(spool_failed)?;
            store = Some(stored);
        }
        if piece.is_none() {
            break;
        }
    }
    let (body, hasher) = store.ok_or_else(|| {
        Failure::new(
            ErrorCode::Internal,
            "the portal could not store the response",
        )
    })?;
    Ok(Answer {
        status,
        headers,
        body,
        sha256: hasher.finalize().into(),
    })
}
