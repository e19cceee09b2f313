//! Bodies in memory up to a threshold, in an unlinked temporary file above it, so a portal's
//! memory does not grow with the size of what passes through it.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use clustera_send_protocol::Sink;

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
    /// crash), and its length.
    File(File, u64),
}

impl Spool {
    /// A spool for a body of `size` bytes (0 if not known yet).
    pub fn for_size(size: u64, config: &SpoolConfig) -> io::Result<Self> {
        if size > config.threshold {
            Ok(Self::File(tempfile::tempfile_in(&config.dir)?, 0))
        } else {
            Ok(Self::Memory(Vec::with_capacity(
                usize::try_from(size).unwrap_or(0),
            )))
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
                *self = Self::File(file, v.len() as u64);
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

    /// The body as an HTTP request body, streamed from the file when spooled.
    pub fn http_body(&self) -> io::Result<reqwest::Body> {
        match self {
            Self::Memory(v) => Ok(reqwest::Body::from(v.clone())),
            Self::File(f, size) => {
                // Positional reads and writes never use the cursor, so the clone's shared
                // cursor is free to rewind for this one sequential read.
                let mut file = f.try_clone()?;
                std::io::Seek::seek(&mut file, io::SeekFrom::Start(0))?;
                let reader = tokio::io::AsyncReadExt::take(tokio::fs::File::from_std(file), *size);
                Ok(reqwest::Body::wrap_stream(
                    tokio_util::io::ReaderStream::with_capacity(reader, 256 * 1024),
                ))
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
