//! Byte sources: where a video's bytes come from.
//!
//! Demuxers read through [`Source::read_at`] with explicit offsets and lengths, so a
//! box that claims to be 2 GB is checked against the source length before anything is
//! allocated, and sample payloads are only read when a decoder asks for them.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::{Error, Result};

/// A random-access, immutable byte source: a file on disk or bytes in memory.
#[derive(Clone, Debug)]
pub struct Source {
    inner: Arc<Inner>,
}

#[derive(Debug)]
enum Inner {
    File { file: File, len: u64 },
    Memory(Vec<u8>),
}

impl Source {
    /// Opens a file for positioned reads.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let open_err = |source| Error::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        if !meta.is_file() {
            return Err(open_err(std::io::Error::other("not a regular file")));
        }
        Ok(Self {
            inner: Arc::new(Inner::File {
                file,
                len: meta.len(),
            }),
        })
    }

    /// Wraps bytes already in memory (inline uploads, tests).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self {
            inner: Arc::new(Inner::Memory(bytes)),
        }
    }

    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        match &*self.inner {
            Inner::File { len, .. } => *len,
            Inner::Memory(bytes) => bytes.len() as u64,
        }
    }

    /// True when the source holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fills `buf` from `offset`; fails if the range runs past the end.
    pub fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.len()) {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "read of {} bytes at offset {offset} past the end ({} bytes)",
                    buf.len(),
                    self.len()
                ),
            )));
        }
        match &*self.inner {
            Inner::File { file, .. } => file.read_exact_at(buf, offset)?,
            Inner::Memory(bytes) => {
                let start = offset as usize;
                buf.copy_from_slice(&bytes[start..start + buf.len()]);
            }
        }
        Ok(())
    }

    /// Reads `len` bytes at `offset` into a new buffer, after checking the range
    /// against the source length (so corrupt sizes cannot trigger huge allocations).
    pub fn read_vec(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        if offset.checked_add(len).is_none_or(|end| end > self.len()) {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "range {offset}+{len} runs past the end ({} bytes)",
                    self.len()
                ),
            )));
        }
        let mut buf = vec![0; len as usize];
        self.read_exact_at(offset, &mut buf)?;
        Ok(buf)
    }

    /// Reads up to `max` bytes at `offset` (fewer at the end of the source).
    pub fn read_up_to(&self, offset: u64, max: usize) -> Result<Vec<u8>> {
        let len = self.len().saturating_sub(offset).min(max as u64);
        self.read_vec(offset, len)
    }
}
