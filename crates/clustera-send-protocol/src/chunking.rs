//! Cutting a body into chunk messages.

use crate::envelope::JobId;
use base64::Engine as _;

/// Bytes per chunk before base64: 650 KB, as in the seed. Encoded, a chunk is about 867 KB,
/// under the 1 MB a Kafka message may have by default.
pub const DEFAULT_CHUNK_SIZE: u32 = 650_000;

/// Chunks needed for `size` bytes.
pub fn chunk_count(size: u64, chunk_size: u32) -> u32 {
    if chunk_size == 0 {
        return 0;
    }
    u32::try_from(size.div_ceil(u64::from(chunk_size))).unwrap_or(u32::MAX)
}

/// The largest encoded chunk message for chunks of `chunk_size` bytes: base64 of the bytes
/// plus the envelope with its largest sequence numbers.
pub fn encoded_chunk_limit(chunk_size: u32) -> usize {
    let envelope = Chunker::new(JobId::new()).encode(u32::MAX - 1, u32::MAX, &[]);
    envelope.len() + base64::encoded_len(chunk_size as usize, true).unwrap_or(usize::MAX)
}

/// Checks that chunks of `chunk_size` bytes, encoded, fit in messages of `max_message_bytes`.
pub fn check_chunk_size(chunk_size: u32, max_message_bytes: usize) -> Result<(), String> {
    if chunk_size == 0 {
        return Err("the chunk size must be at least 1 byte".to_owned());
    }
    let limit = encoded_chunk_limit(chunk_size);
    if limit > max_message_bytes {
        return Err(format!(
            "chunks of {chunk_size} bytes encode to up to {limit} bytes, more than the maximum \
             message size of {max_message_bytes} bytes"
        ));
    }
    Ok(())
}

/// Encodes the chunk messages of one job.
#[derive(Debug, Clone, Copy)]
pub struct Chunker {
    job_id: JobId,
}

impl Chunker {
    /// A chunker for `job_id`'s messages.
    pub fn new(job_id: JobId) -> Self {
        Self { job_id }
    }

    /// The chunk message (JSON) for `data` at `sequence` of `total_chunks`. Written directly
    /// rather than through serde: every field is plain ASCII, and the base64 text is encoded
    /// straight into the message instead of into a string that is then copied.
    pub fn encode(&self, sequence: u32, total_chunks: u32, data: &[u8]) -> Vec<u8> {
        let crc = crc32fast::hash(data);
        let mut out = String::with_capacity(200 + data.len().div_ceil(3) * 4);
        out.push_str(r#"{"type":"chunk","job_id":""#);
        out.push_str(&self.job_id.key());
        out.push_str(r#"","sequence":"#);
        out.push_str(&sequence.to_string());
        out.push_str(r#","total_chunks":"#);
        out.push_str(&total_chunks.to_string());
        out.push_str(r#","crc32":"#);
        out.push_str(&crc.to_string());
        out.push_str(r#","data":""#);
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut out);
        out.push_str("\"}");
        out.into_bytes()
    }

    /// Every chunk message of `body`, in order.
    pub fn encode_all<'a>(
        &'a self,
        body: &'a [u8],
        chunk_size: u32,
    ) -> impl Iterator<Item = Vec<u8>> + 'a {
        let total = chunk_count(body.len() as u64, chunk_size);
        body.chunks(chunk_size.max(1) as usize)
            .enumerate()
            .map(move |(i, data)| self.encode(u32::try_from(i).unwrap_or(u32::MAX), total, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;

    #[test]
    fn chunk_counts() {
        assert_eq!(chunk_count(0, 10), 0);
        assert_eq!(chunk_count(10, 10), 1);
        assert_eq!(chunk_count(11, 10), 2);
        assert_eq!(chunk_count(50 * 1024 * 1024, DEFAULT_CHUNK_SIZE), 81);
    }

    #[test]
    fn hand_written_chunks_decode_with_serde() {
        let id = JobId::new();
        let body: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let messages: Vec<_> = Chunker::new(id).encode_all(&body, 300).collect();
        assert_eq!(messages.len(), 4);
        let mut joined = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            let Envelope::Chunk(c) = Envelope::decode(m).unwrap() else {
                panic!("not a chunk")
            };
            assert_eq!((c.job_id, c.sequence, c.total_chunks), (id, i as u32, 4));
            joined.extend(c.bytes().unwrap());
        }
        assert_eq!(joined, body);
    }

    #[test]
    fn the_default_chunk_size_fits_a_default_kafka_message() {
        check_chunk_size(DEFAULT_CHUNK_SIZE, 1_000_000).unwrap();
        let limit = encoded_chunk_limit(DEFAULT_CHUNK_SIZE);
        let real = Chunker::new(JobId::new()).encode(80, 81, &vec![0xff; 650_000]);
        assert!(real.len() <= limit, "{} > {limit}", real.len());
        let e = check_chunk_size(800_000, 1_000_000).unwrap_err();
        assert!(e.contains("more than the maximum message size"), "{e}");
    }
}
