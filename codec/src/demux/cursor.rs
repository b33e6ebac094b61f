//! A bounds-checked big-endian reader over an in-memory box or element.

use crate::{Error, Result};

/// Reads fields from a byte slice; every read past the end is a [`Error::Malformed`].
pub(crate) struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    container: &'static str,
    what: &'static str,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8], container: &'static str, what: &'static str) -> Self {
        Self {
            data,
            pos: 0,
            container,
            what,
        }
    }

    fn short(&self, need: usize) -> Error {
        Error::malformed(
            self.container,
            format!(
                "{} is too short ({} bytes, needed {} more at byte {})",
                self.what,
                self.data.len(),
                need,
                self.pos
            ),
        )
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.remaining() < n {
            return Err(self.short(n));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn skip(&mut self, n: usize) -> Result<()> {
        self.bytes(n).map(|_| ())
    }

    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u24(&mut self) -> Result<u32> {
        let b = self.bytes(3)?;
        Ok(u32::from_be_bytes([0, b[0], b[1], b[2]]))
    }

    pub fn u32(&mut self) -> Result<u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64> {
        let b = self.bytes(8)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    pub fn i32(&mut self) -> Result<i32> {
        Ok(self.u32()? as i32)
    }

    /// The rest of the data.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.data[self.pos..];
        self.pos = self.data.len();
        out
    }

    /// Fails unless `count` entries of `entry_size` bytes remain: table sizes are
    /// checked before anything is allocated for them.
    pub fn expect_entries(&self, count: u64, entry_size: usize) -> Result<usize> {
        let need = count.saturating_mul(entry_size as u64);
        if need > self.remaining() as u64 {
            return Err(Error::malformed(
                self.container,
                format!(
                    "{} claims {count} entries but holds only {} bytes",
                    self.what,
                    self.remaining()
                ),
            ));
        }
        Ok(count as usize)
    }
}
