//! The messages of a job and their JSON encoding.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A job's id: a UUID v4, also the Kafka key of every message of the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(uuid::Uuid);

impl JobId {
    /// A new random id.
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The id as the Kafka key.
    pub fn key(&self) -> String {
        self.0.to_string()
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for JobId {
    type Err = ProtocolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let id = uuid::Uuid::parse_str(s)
            .map_err(|_| ProtocolError::Invalid(format!("job_id {s:?} is not a UUID")))?;
        if id.get_version_num() != 4 {
            return Err(ProtocolError::Invalid(format!(
                "job_id {s:?} is not a version 4 UUID"
            )));
        }
        Ok(Self(id))
    }
}

impl TryFrom<String> for JobId {
    type Error = ProtocolError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> Self {
        id.0.to_string()
    }
}

/// What a body is, sent in its head before any chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BodyInfo {
    /// Bytes in the whole body.
    pub size: u64,
    /// SHA-256 of the whole body, lowercase hex.
    pub sha256: String,
    /// Chunks that follow the head (0 for an empty body).
    pub total_chunks: u32,
    /// Bytes per chunk before base64, except the last.
    pub chunk_size: u32,
}

impl BodyInfo {
    /// The description of `body` cut into `chunk_size` pieces.
    pub fn of(body: &[u8], chunk_size: u32) -> Self {
        Self::hashed(body.len() as u64, &Sha256::digest(body), chunk_size)
    }

    /// The description of a body of `size` bytes whose SHA-256 is `sha256` (hashed as it was
    /// read or written), cut into `chunk_size` pieces.
    pub fn hashed(size: u64, sha256: &[u8], chunk_size: u32) -> Self {
        Self {
            size,
            sha256: hex::encode(sha256),
            total_chunks: crate::chunking::chunk_count(size, chunk_size),
            chunk_size,
        }
    }

    /// Checks that the fields agree with each other and that chunks are at most
    /// `max_chunk_size` bytes.
    pub fn validate(&self, max_chunk_size: u32) -> Result<(), ProtocolError> {
        if self.chunk_size == 0 || self.chunk_size > max_chunk_size {
            return Err(ProtocolError::Invalid(format!(
                "chunk_size {} is not between 1 and {max_chunk_size}",
                self.chunk_size
            )));
        }
        let expected = crate::chunking::chunk_count(self.size, self.chunk_size);
        if self.total_chunks != expected {
            return Err(ProtocolError::Inconsistent(format!(
                "total_chunks {} for {} bytes in chunks of {} (expected {expected})",
                self.total_chunks, self.size, self.chunk_size
            )));
        }
        if self.sha256.len() != 64 || hex::decode(&self.sha256).is_err() {
            return Err(ProtocolError::Invalid(
                "sha256 is not 64 hex digits".to_owned(),
            ));
        }
        Ok(())
    }

    /// Bytes in chunk `sequence`.
    pub fn chunk_len(&self, sequence: u32) -> u64 {
        let start = u64::from(sequence) * u64::from(self.chunk_size);
        self.size
            .saturating_sub(start)
            .min(u64::from(self.chunk_size))
    }
}

/// A request from a client: the HTTP call the portal should make.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHead {
    /// The job.
    pub job_id: JobId,
    /// HTTP method.
    pub method: String,
    /// Path (and query) under the portal's configured API base URL.
    pub endpoint: String,
    /// Headers the client asks for; the portal filters them.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The body that follows in chunks.
    pub body: BodyInfo,
    /// When the client sent it, milliseconds since the Unix epoch.
    pub sent_at_ms: i64,
    /// Who sends it, for the portal's fair sharing (version 2; a head without one belongs
    /// to the one anonymous client of version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The topic to answer on (version 2), if not the portal's response topic; the portal
    /// accepts only topics its `PORTAL_REPLY_TOPICS` allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
}

/// The REST API's response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseHead {
    /// The job.
    pub job_id: JobId,
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The body that follows in chunks.
    pub body: BodyInfo,
}

/// Why a job failed, in place of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed.
    InvalidRequest,
    /// The endpoint is not on the allow-list.
    ForbiddenEndpoint,
    /// A header is not allowed (strict mode).
    ForbiddenHeader,
    /// The request tried to reach somewhere other than the configured API.
    SsrfBlocked,
    /// Chunks stopped arriving before the body was complete.
    Incomplete,
    /// Chunks disagree with each other or with the head.
    Inconsistent,
    /// A chunk or the whole body does not match its checksum.
    ChecksumMismatch,
    /// The body or the job is larger than the portal accepts.
    TooLarge,
    /// The portal is at its limit of concurrent jobs or in-flight bytes.
    Busy,
    /// The REST API did not answer within the job timeout.
    Timeout,
    /// The job was older than the portal's maximum age.
    Expired,
    /// The REST API could not be reached, or the token endpoint failed.
    Upstream,
    /// Anything else on the portal's side.
    Internal,
}

impl ErrorCode {
    /// The code as on the wire (`forbidden_endpoint`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::ForbiddenEndpoint => "forbidden_endpoint",
            Self::ForbiddenHeader => "forbidden_header",
            Self::SsrfBlocked => "ssrf_blocked",
            Self::Incomplete => "incomplete",
            Self::Inconsistent => "inconsistent",
            Self::ChecksumMismatch => "checksum_mismatch",
            Self::TooLarge => "too_large",
            Self::Busy => "busy",
            Self::Timeout => "timeout",
            Self::Expired => "expired",
            Self::Upstream => "upstream",
            Self::Internal => "internal",
        }
    }
}

/// An error answer to a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// The job.
    pub job_id: JobId,
    /// What kind of failure.
    pub code: ErrorCode,
    /// What happened, for people.
    pub message: String,
}

/// One piece of a body, as carried on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chunk {
    /// The job.
    pub job_id: JobId,
    /// 0-based position.
    pub sequence: u32,
    /// Chunks in the body (repeated in every chunk, as in the seed's envelope).
    pub total_chunks: u32,
    /// CRC-32 (IEEE) of this chunk's bytes: finds a damaged chunk at once and cheaply; the
    /// body's SHA-256 protects the whole.
    pub crc32: u32,
    /// The bytes, standard base64.
    pub data: String,
}

impl Chunk {
    /// The chunk's bytes, checked against its checksum.
    pub fn bytes(&self) -> Result<Vec<u8>, ProtocolError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.data)
            .map_err(|e| {
                ProtocolError::Invalid(format!("chunk {}: data is not base64: {e}", self.sequence))
            })?;
        if crc32fast::hash(&bytes) != self.crc32 {
            return Err(ProtocolError::ChecksumMismatch(format!(
                "chunk {} does not match its crc32",
                self.sequence
            )));
        }
        Ok(bytes)
    }
}

/// Every message of the protocol, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Envelope {
    /// A request head (client → portal).
    Request(RequestHead),
    /// A response head (portal → client).
    Response(ResponseHead),
    /// A failed job (portal → client).
    Error(ErrorResponse),
    /// A piece of the body that follows a head (both directions).
    Chunk(Chunk),
}

impl Envelope {
    /// The job the message belongs to.
    pub fn job_id(&self) -> JobId {
        match self {
            Self::Request(h) => h.job_id,
            Self::Response(h) => h.job_id,
            Self::Error(e) => e.job_id,
            Self::Chunk(c) => c.job_id,
        }
    }

    /// Decodes a Kafka record's value; checks field formats and, for a chunk, that its
    /// sequence is within its total.
    pub fn decode(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let envelope: Self = serde_json::from_slice(bytes)
            .map_err(|e| ProtocolError::Invalid(format!("not a KafkaSend message: {e}")))?;
        if let Self::Chunk(c) = &envelope {
            if c.sequence >= c.total_chunks {
                return Err(ProtocolError::Inconsistent(format!(
                    "chunk sequence {} is not below its total_chunks {}",
                    c.sequence, c.total_chunks
                )));
            }
        }
        Ok(envelope)
    }

    /// The JSON bytes of the message.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these types cannot fail: every field is a string, a number or a list.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A message that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// Malformed: not JSON, a missing field, a bad id, bad base64.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// Fields that contradict each other or the head.
    #[error("inconsistent message: {0}")]
    Inconsistent(String),
    /// Bytes that do not match their checksum.
    #[error("checksum mismatch: {0}")]
    ChecksumMismatch(String),
    /// A body larger than the receiver accepts.
    #[error("too large: {0}")]
    TooLarge(String),
}

impl ProtocolError {
    /// The error code to answer the client with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid(_) => ErrorCode::InvalidRequest,
            Self::Inconsistent(_) => ErrorCode::Inconsistent,
            Self::ChecksumMismatch(_) => ErrorCode::ChecksumMismatch,
            Self::TooLarge(_) => ErrorCode::TooLarge,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_named_as_on_the_wire() {
        for code in [
            ErrorCode::InvalidRequest,
            ErrorCode::SsrfBlocked,
            ErrorCode::TooLarge,
        ] {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json.as_str(), Some(code.as_str()));
        }
    }

    #[test]
    fn job_ids_must_be_uuid_v4() {
        assert!("not-a-uuid".parse::<JobId>().is_err());
        // A version 1 UUID.
        assert!("c232ab00-9414-11ec-b3c8-9f6bdeced846"
            .parse::<JobId>()
            .is_err());
        let id = JobId::new();
        assert_eq!(id.key().parse::<JobId>().unwrap(), id);
    }

    #[test]
    fn envelopes_round_trip_and_are_tagged() {
        let head = Envelope::Request(RequestHead {
            job_id: JobId::new(),
            method: "POST".into(),
            endpoint: "/api/v1/upload".into(),
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: BodyInfo::of(b"hello", 650_000),
            sent_at_ms: 1,
            client_id: Some("host-1".into()),
            reply_to: None,
        });
        let bytes = head.encode();
        assert!(String::from_utf8_lossy(&bytes).contains("\"type\":\"request\""));
        assert_eq!(Envelope::decode(&bytes).unwrap(), head);
        assert!(!String::from_utf8_lossy(&bytes).contains("reply_to"));
    }

    #[test]
    fn version_1_heads_decode_without_client_or_reply_topic() {
        let id = JobId::new();
        let v1 = format!(
            r#"{{"type":"request","job_id":"{id}","method":"GET","endpoint":"/x","headers":[],
            "body":{{"size":0,"sha256":"{}","total_chunks":0,"chunk_size":650000}},"sent_at_ms":0}}"#,
            hex::encode(Sha256::digest(b""))
        );
        let Envelope::Request(head) = Envelope::decode(v1.as_bytes()).unwrap() else {
            panic!("not a request")
        };
        assert_eq!((head.client_id, head.reply_to), (None, None));
    }

    #[test]
    fn malformed_messages_are_named() {
        let e = Envelope::decode(b"{\"type\":\"chunk\"}").unwrap_err();
        assert!(matches!(e, ProtocolError::Invalid(_)), "{e}");
        let id = JobId::new();
        let chunk = format!(
            r#"{{"type":"chunk","job_id":"{id}","sequence":3,"total_chunks":3,"crc32":0,"data":""}}"#
        );
        let e = Envelope::decode(chunk.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("not below"), "{e}");
    }

    #[test]
    fn a_corrupted_chunk_fails_its_checksum() {
        let mut c = Chunk {
            job_id: JobId::new(),
            sequence: 0,
            total_chunks: 1,
            crc32: crc32fast::hash(b"abc"),
            data: base64::engine::general_purpose::STANDARD.encode(b"abc"),
        };
        assert_eq!(c.bytes().unwrap(), b"abc");
        c.data = base64::engine::general_purpose::STANDARD.encode(b"abd");
        assert!(matches!(c.bytes(), Err(ProtocolError::ChecksumMismatch(_))));
        c.data = "!!".into();
        assert!(matches!(c.bytes(), Err(ProtocolError::Invalid(_))));
    }

    #[test]
    fn body_info_must_agree_with_itself() {
        let mut info = BodyInfo::of(&[7u8; 1000], 300);
        assert_eq!(info.total_chunks, 4);
        assert_eq!(info.chunk_len(3), 100);
        info.validate(650_000).unwrap();
        info.total_chunks = 5;
        assert!(matches!(
            info.validate(650_000),
            Err(ProtocolError::Inconsistent(_))
        ));
        info.total_chunks = 4;
        assert!(info.validate(200).is_err(), "chunks above the maximum");
    }
}
