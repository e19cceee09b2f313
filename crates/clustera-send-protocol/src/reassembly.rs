//! Putting a body back together. Chunks may come twice or out of order; each is written at
//! its offset into a [`Sink`] as it arrives, so memory stays bounded whatever the body's size
//! when the sink is a file. The whole body's SHA-256 is computed over the chunks in order:
//! directly while they arrive in order, reading back from the sink what arrived early.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::envelope::{BodyInfo, Chunk, ProtocolError};

/// Where a body's bytes go: positional writes, and reads of what was written.
pub trait Sink {
    /// The sink's failure (for a file: I/O).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Writes `data` at `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), Self::Error>;

    /// Fills `buf` from `offset`; only ranges already written are read.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error>;
}

/// A body in memory.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemorySink(pub Vec<u8>);

impl Sink for MemorySink {
    type Error = std::convert::Infallible;

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), Self::Error> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(data.len());
        if self.0.len() < end {
            self.0.resize(end, 0);
        }
        self.0[start..end].copy_from_slice(data);
        Ok(())
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let end = start.saturating_add(buf.len()).min(self.0.len());
        buf[..end - start].copy_from_slice(&self.0[start..end]);
        Ok(())
    }
}

/// What one chunk did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Stored; the body is not complete yet.
    Accepted {
        /// Distinct chunks so far.
        received: u32,
        /// Chunks in the body.
        total: u32,
    },
    /// The same chunk again (same checksum): ignored.
    Duplicate,
    /// The last missing chunk: the body is complete and matches its SHA-256.
    Complete,
}

/// Why a body cannot be reassembled.
#[derive(Debug, thiserror::Error)]
pub enum ReassemblyError<E> {
    /// The chunks break the protocol (inconsistent totals or sizes, checksum mismatch).
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    /// The sink failed.
    #[error("storing the body: {0}")]
    Sink(E),
}

/// One body being reassembled.
#[derive(Debug, Clone)]
pub struct Reassembly {
    body: BodyInfo,
    expected: [u8; 32],
    /// The checksum of each chunk received, by sequence: it grows with the chunks that
    /// arrive, never with the count a head declares.
    chunks: BTreeMap<u32, u32>,
    received: u32,
    hasher: Sha256,
    /// Chunks `0..hashed` are in `hasher`.
    hashed: u32,
}

impl Reassembly {
    /// Starts reassembling the body `body` describes; chunks may be at most `max_chunk_size`
    /// bytes and the body at most `max_size` (checked before anything is allocated for it).
    pub fn new(body: BodyInfo, max_chunk_size: u32, max_size: u64) -> Result<Self, ProtocolError> {
        if body.size > max_size {
            return Err(ProtocolError::TooLarge(format!(
                "the body has {} bytes; at most {max_size} are accepted",
                body.size
            )));
        }
        body.validate(max_chunk_size)?;
        let mut expected = [0u8; 32];
        hex::decode_to_slice(&body.sha256, &mut expected)
            .map_err(|e| ProtocolError::Invalid(format!("sha256: {e}")))?;
        let this = Self {
            chunks: BTreeMap::new(),
            body,
            expected,
            received: 0,
            hasher: Sha256::new(),
            hashed: 0,
        };
        if this.body.total_chunks == 0 && this.hasher.clone().finalize()[..] != expected[..] {
            return Err(ProtocolError::ChecksumMismatch(
                "an empty body does not match its sha256".to_owned(),
            ));
        }
        Ok(this)
    }

    /// The body being reassembled.
    pub fn body(&self) -> &BodyInfo {
        &self.body
    }

    /// Whether every chunk has arrived (an empty body is complete at once).
    pub fn is_complete(&self) -> bool {
        self.received == self.body.total_chunks
    }

    /// Distinct chunks received.
    pub fn received(&self) -> u32 {
        self.received
    }

    /// Stores `chunk`, whose verified bytes (from [`Chunk::bytes`]) are `data`.
    pub fn accept<S: Sink>(
        &mut self,
        chunk: &Chunk,
        data: &[u8],
        sink: &mut S,
    ) -> Result<Progress, ReassemblyError<S::Error>> {
        let seq = chunk.sequence;
        if chunk.total_chunks != self.body.total_chunks || seq >= self.body.total_chunks {
            return Err(ProtocolError::Inconsistent(format!(
                "chunk {seq} of {} for a body of {} chunks",
                chunk.total_chunks, self.body.total_chunks
            ))
            .into());
        }
        if data.len() as u64 != self.body.chunk_len(seq) {
            return Err(ProtocolError::Inconsistent(format!(
                "chunk {seq} has {} bytes, expected {}",
                data.len(),
                self.body.chunk_len(seq)
            ))
            .into());
        }
        let crc = chunk.crc32;
        match self.chunks.get(&seq) {
            Some(seen) if *seen == crc => return Ok(Progress::Duplicate),
            Some(_) => {
                return Err(ProtocolError::ChecksumMismatch(format!(
                    "chunk {seq} arrived twice with different contents"
                ))
                .into())
            }
            None => {}
        }
        let offset = u64::from(seq) * u64::from(self.body.chunk_size);
        sink.write_at(offset, data).map_err(ReassemblyError::Sink)?;
        self.chunks.insert(seq, crc);
        self.received += 1;
        if seq == self.hashed {
            self.hasher.update(data);
            self.hashed += 1;
            self.hash_stored(sink)?;
        }
        if !self.is_complete() {
            return Ok(Progress::Accepted {
                received: self.received,
                total: self.body.total_chunks,
            });
        }
        if self.hasher.clone().finalize()[..] != self.expected[..] {
            return Err(ProtocolError::ChecksumMismatch(
                "the reassembled body does not match its sha256".to_owned(),
            )
            .into());
        }
        Ok(Progress::Complete)
    }

    /// Hashes the chunks that arrived early and are now next in order.
    fn hash_stored<S: Sink>(&mut self, sink: &mut S) -> Result<(), ReassemblyError<S::Error>> {
        let mut buf = Vec::new();
        while self.hashed < self.body.total_chunks && self.chunks.contains_key(&self.hashed) {
            let len = usize::try_from(self.body.chunk_len(self.hashed)).unwrap_or(0);
            buf.resize(len, 0);
            let offset = u64::from(self.hashed) * u64::from(self.body.chunk_size);
            sink.read_at(offset, &mut buf)
                .map_err(ReassemblyError::Sink)?;
            self.hasher.update(&buf);
            self.hashed += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::chunking::Chunker;
    use crate::envelope::{Envelope, JobId};

    fn chunks(body: &[u8], chunk_size: u32) -> (BodyInfo, Vec<Chunk>) {
        let id = JobId::new();
        let info = BodyInfo::of(body, chunk_size);
        let chunks = Chunker::new(id)
            .encode_all(body, chunk_size)
            .map(|m| match Envelope::decode(&m).unwrap() {
                Envelope::Chunk(c) => c,
                _ => unreachable!(),
            })
            .collect();
        (info, chunks)
    }

    fn feed(
        info: &BodyInfo,
        order: impl IntoIterator<Item = Chunk>,
    ) -> (Result<Vec<Progress>, String>, MemorySink) {
        let mut r = Reassembly::new(info.clone(), 1 << 20, 1 << 30).unwrap();
        let mut sink = MemorySink::default();
        let mut progress = Vec::new();
        for c in order {
            let data = match c.bytes() {
                Ok(d) => d,
                Err(e) => return (Err(e.to_string()), sink),
            };
            match r.accept(&c, &data, &mut sink) {
                Ok(p) => progress.push(p),
                Err(e) => return (Err(e.to_string()), sink),
            }
        }
        (Ok(progress), sink)
    }

    proptest! {
        #[test]
        fn any_order_with_duplicates_gives_back_the_body(
            body in prop::collection::vec(any::<u8>(), 0..3000),
            chunk_size in 1u32..700,
            seed in any::<u64>(),
        ) {
            let (info, chunks) = chunks(&body, chunk_size);
            // A shuffled order with every chunk once, then some repeated.
            let mut order: Vec<Chunk> = chunks.clone();
            let n = order.len();
            let mut s = seed;
            for i in (1..n).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            let repeats: Vec<Chunk> = order.iter().step_by(3).cloned().collect();
            let mid = n / 2;
            let mut all = order[..mid].to_vec();
            all.extend(repeats);
            all.extend(order[mid..].iter().cloned());
            let (progress, sink) = feed(&info, all);
            let progress = progress.unwrap();
            if body.is_empty() {
                prop_assert!(progress.is_empty());
            } else {
                prop_assert_eq!(progress.iter().filter(|p| **p == Progress::Complete).count(), 1);
                prop_assert_eq!(sink.0, body);
            }
        }
    }

    #[test]
    fn a_missing_chunk_never_completes() {
        let body = vec![1u8; 1000];
        let (info, chunks) = chunks(&body, 100);
        let (progress, _) = feed(&info, chunks.into_iter().filter(|c| c.sequence != 4));
        assert!(!progress.unwrap().contains(&Progress::Complete));
    }

    #[test]
    fn a_chunk_with_recomputed_checksum_fails_the_whole_body() {
        let body = vec![1u8; 1000];
        let (info, mut chunks) = chunks(&body, 100);
        // Tampered consistently (its own checksum matches), so only the body's SHA-256 catches it.
        let forged = Chunker::new(chunks[3].job_id).encode(3, 10, &[2u8; 100]);
        let Envelope::Chunk(forged) = Envelope::decode(&forged).unwrap() else {
            unreachable!()
        };
        chunks[3] = forged;
        let (progress, _) = feed(&info, chunks);
        assert!(progress.unwrap_err().contains("does not match its sha256"));
    }

    #[test]
    fn inconsistent_chunks_are_named() {
        let body = vec![1u8; 1000];
        let (info, chunks) = chunks(&body, 100);
        let mut wrong_total = chunks[0].clone();
        wrong_total.total_chunks = 11;
        let (progress, _) = feed(&info, [wrong_total]);
        assert!(progress.unwrap_err().contains("for a body of 10 chunks"));

        let (other, _) = self::chunks(&[9u8; 1000], 100);
        let (_, other_chunks) = self::chunks(&[9u8; 1000], 100);
        assert_eq!(other.total_chunks, 10);
        let (progress, _) = feed(&info, [chunks[0].clone(), other_chunks[0].clone()]);
        assert!(progress
            .unwrap_err()
            .contains("twice with different contents"));

        let short = Chunker::new(chunks[0].job_id).encode(2, 10, &[1u8; 50]);
        let Envelope::Chunk(short) = Envelope::decode(&short).unwrap() else {
            unreachable!()
        };
        let (progress, _) = feed(&info, [short]);
        assert!(progress.unwrap_err().contains("has 50 bytes, expected 100"));
    }

    #[test]
    fn a_huge_declared_body_allocates_nothing_before_its_chunks() {
        // 4 GiB in one-byte chunks: a per-chunk table sized by the head would take 32 GB
        // before a single byte arrived. Nothing is set aside (the portal also refuses chunks
        // this small, PORTAL_MIN_CHUNK_BYTES).
        let size = u64::from(u32::MAX);
        let info = BodyInfo {
            size,
            sha256: "00".repeat(32),
            total_chunks: crate::chunking::chunk_count(size, 1),
            chunk_size: 1,
        };
        let r = Reassembly::new(info, 1 << 20, u64::MAX).unwrap();
        assert_eq!((r.received(), r.is_complete()), (0, false));
    }

    #[test]
    fn an_empty_body_is_complete_at_once() {
        let info = BodyInfo::of(b"", 100);
        let r = Reassembly::new(info.clone(), 100, 1000).unwrap();
        assert!(r.is_complete());
        let mut wrong = info;
        wrong.sha256 = "00".repeat(32);
        assert!(Reassembly::new(wrong, 100, 1000).is_err());
        let huge = BodyInfo::of(&[0; 10], 100);
        assert!(matches!(
            Reassembly::new(huge, 100, 5),
            Err(ProtocolError::TooLarge(_))
        ));
    }
}
