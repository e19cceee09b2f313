//! Bodies in memory up to a threshold, in an unlinked temporary file above it, so a portal's
//! memory does not grow with the size of what passes through it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clustera_send_protocol::Sink;

/// Bytes read from a spool file per piece of an HTTP body.
const HTTP_PIECE: u64 = 256 * 1024;

/// Where bodies go and when they leave memory.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Bodies larger than this go to a file.
    pub threshold: u64,
    /// The directory of those files (the system's temporary directory by default).
    pub dir: PathBuf,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            threshold: 4 * 1024 * 1024,
            dir: std::env::temp_dir(),
        }
    }
}

/// One body.
#[derive(Debug)]
pub enum Spool {
    /// Small: in memory.
    Memory(Vec<u8>),
    /// Large: in an unlinked temporary file (removed by the system when closed, even after a
    /// crash), and its length. Shared only for positional reads (HTTP bodies), which never
    /// use the file's cursor.
    File(Arc<File>, u64),
}

impl Spool {
    /// A spool for a body of `size` bytes (0 if not known yet). Nothing is allocated for the
    /// size: a spool grows with what is written to it.
    pub fn for_size(size: u64, config: &SpoolConfig) -> io::Result<Self> {
        if size > config.threshold {
            Ok(Self::File(Arc::new(tempfile::tempfile_in(&config.dir)?), 0))
        } else {
            Ok(Self::Memory(Vec::new()))
        }
    }

    /// Bytes held.
    pub fn len(&self) -> u64 {
        match self {
            Self::Memory(v) => v.len() as u64,
            Self::File(_, len) => *len,
        }
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `data`, moving to a file in `config.dir` once past `config.threshold`.
    pub fn append(&mut self, data: &[u8], config: &SpoolConfig) -> io::Result<()> {
        if let Self::Memory(v) = self {
            if (v.len() + data.len()) as u64 > config.threshold {
                let file = tempfile::tempfile_in(&config.dir)?;
                file.write_all_at(v, 0)?;
                *self = Self::File(Arc::new(file), v.len() as u64);
            }
        }
        let at = self.len();
        self.write_at(at, data)
    }

    /// `len` bytes from `offset`.
    pub fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        match self {
            Self::Memory(v) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(v.len());
                let end = start.saturating_add(len).min(v.len());
                Ok(v[start..end].to_vec())
            }
            Self::File(f, size) => {
                let len = len.min(usize::try_from(size.saturating_sub(offset)).unwrap_or(0));
                let mut buf = vec![0; len];
                f.read_exact_at(&mut buf, offset)?;
                Ok(buf)
            }
        }
    }

    /// The body as an HTTP request body, streamed from the file when spooled. Every body
    /// made this way reads the file by position from its own start, off the async threads, so
    /// two of them (a call and its retry after a 401) never disturb each other, even while the
    /// first is still being sent.
    pub fn http_body(&self) -> io::Result<reqwest::Body> {
        match self {
            Self::Memory(v) => Ok(reqwest::Body::from(v.clone())),
            Self::File(f, size) => {
                let (file, size) = (f.clone(), *size);
                let pieces = futures::stream::try_unfold(0u64, move |offset| {
                    let file = file.clone();
                    async move {
                        if offset >= size {
                            return Ok(None);
                        }
                        let len = usize::try_from((size - offset).min(HTTP_PIECE)).unwrap_or(0);
                        let piece = tokio::task::spawn_blocking(move || {
                            let mut buf = vec![0; len];
                            file.read_exact_at(&mut buf, offset).map(|()| buf)
                        })
                        .await
                        .map_err(io::Error::other)??;
                        Ok::<_, io::Error>(Some((bytes::Bytes::from(piece), offset + len as u64)))
                    }
                });
                Ok(reqwest::Body::wrap_stream(pieces))
            }
        }
    }

    /// The directory spool files go to, checked writable.
    pub fn check_dir(dir: &Path) -> io::Result<()> {
        tempfile::tempfile_in(dir).map(drop)
    }
}

impl Sink for Spool {
    type Error = io::Error;

    fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        match self {
            Self::Memory(v) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                let end = start.saturating_add(data.len());
                if v.len() < end {
                    v.resize(end, 0);
                }
                v[start..end].copy_from_slice(data);
            }
            Self::File(f, len) => {
                f.write_all_at(data, offset)?;
                *len = (*len).max(offset + data.len() as u64);
            }
        }
        Ok(())
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        match self {
            Self::Memory(v) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(v.len());
                let end = start.saturating_add(buf.len()).min(v.len());
                buf[..end - start].copy_from_slice(&v[start..end]);
                Ok(())
            }
            Self::File(f, _) => f.read_exact_at(buf, offset),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_bodies_move_to_a_file_and_read_back() {
        let config = SpoolConfig {
            threshold: 10,
            dir: std::env::temp_dir(),
        };
        let mut s = Spool::for_size(0, &config).unwrap();
        s.append(b"hello", &config).unwrap();
        assert!(matches!(s, Spool::Memory(_)));
        s.append(b" world, this is long", &config).unwrap();
        assert!(matches!(s, Spool::File(..)));
        assert_eq!(s.len(), 25);
        assert_eq!(s.read(6, 5).unwrap(), b"world");
        assert_eq!(s.read(20, 100).unwrap(), b" long");
        let mut positional = Spool::for_size(100, &config).unwrap();
        positional.write_at(50, &[2; 50]).unwrap();
        positional.write_at(0, &[1; 50]).unwrap();
        let mut buf = [0u8; 2];
        positional.read_at(49, &mut buf).unwrap();
        assert_eq!(buf, [1, 2]);
    }
}
