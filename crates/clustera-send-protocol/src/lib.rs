//! KafkaSend's wire protocol, free of I/O so it can be unit-tested and fuzzed.
//!
//! A job is one HTTP request carried over Kafka from a client to a portal, and its response
//! carried back. Every message of a job is keyed by its `job_id`, so one portal instance sees
//! them all, in order. A request or response is a head (what the body is: size, SHA-256,
//! chunk count) followed by its body in chunks; an error replaces the response. See
//! `PROTOCOL.md` at the repository root for the wire format.
//!
//! - [`envelope`]: the messages and their JSON encoding, with validation on decode.
//! - [`chunking`]: splitting a body into chunk messages and checking that a chunk size fits
//!   the largest Kafka message.
//! - [`reassembly`]: putting a body back together from chunks that may be duplicated or out
//!   of order, into any positional [`reassembly::Sink`] (memory or a spool file), verifying
//!   every chunk's checksum and the whole body's SHA-256.

pub mod chunking;
pub mod envelope;
pub mod reassembly;

pub use chunking::{chunk_count, encoded_chunk_limit, Chunker, DEFAULT_CHUNK_SIZE};
pub use envelope::{
    BodyInfo, Chunk, Envelope, ErrorCode, ErrorResponse, JobId, ProtocolError, RequestHead,
    ResponseHead,
};
pub use reassembly::{MemorySink, Progress, Reassembly, ReassemblyError, Sink};
