//! A big-endian bit reader for RBSP payloads, with Exp-Golomb codes.

/// Reading past the end of the data. Parsers turn it into a bitstream error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndOfData;

/// Reads bits most-significant first from a byte slice.
pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// Bits left to read.
    pub fn remaining(&self) -> usize {
        (self.data.len() * 8).saturating_sub(self.pos)
    }

    pub fn bit(&mut self) -> Result<u32, EndOfData> {
        let byte = *self.data.get(self.pos / 8).ok_or(EndOfData)?;
        let bit = (byte >> (7 - self.pos % 8)) & 1;
        self.pos += 1;
        Ok(u32::from(bit))
    }

    pub fn flag(&mut self) -> Result<bool, EndOfData> {
        Ok(self.bit()? == 1)
    }

    /// Reads `n` ≤ 32 bits as an unsigned integer.
    pub fn bits(&mut self, n: u32) -> Result<u32, EndOfData> {
        debug_assert!(n <= 32);
        if self.remaining() < n as usize {
            return Err(EndOfData);
        }
        let mut value: u64 = 0;
        for _ in 0..n {
            value = (value << 1) | u64::from(self.bit()?);
        }
        Ok(value as u32)
    }

    pub fn skip(&mut self, n: usize) -> Result<(), EndOfData> {
        if self.remaining() < n {
            return Err(EndOfData);
        }
        self.pos += n;
        Ok(())
    }

    /// Unsigned Exp-Golomb code, ue(v). Values above 2^32 - 2 are rejected.
    pub fn ue(&mut self) -> Result<u32, EndOfData> {
        let mut zeros = 0;
        while self.bit()? == 0 {
            zeros += 1;
            if zeros > 31 {
                return Err(EndOfData);
            }
        }
        let rest = self.bits(zeros)?;
        Ok(((1u64 << zeros) - 1 + u64::from(rest)) as u32)
    }

    /// Signed Exp-Golomb code, se(v).
    pub fn se(&mut self) -> Result<i32, EndOfData> {
        let k = self.ue()?;
        let magnitude = k.div_ceil(2) as i32;
        Ok(if k % 2 == 1 { magnitude } else { -magnitude })
    }
}

/// Strips emulation-prevention bytes (00 00 03 → 00 00) from a NAL unit payload.
pub fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        zeros = if b == 0 { zeros + 1 } else { 0 };
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb_codes() {
        // 1 | 010 | 011 | 00100 | 00101 → ue 0, 1, 2, 3, 4
        let data = [0b1010_0110, 0b0100_0010, 0b1000_0000];
        let mut r = BitReader::new(&data);
        let got: Vec<u32> = (0..5).map(|_| r.ue().unwrap()).collect();
        assert_eq!(got, [0, 1, 2, 3, 4]);
        // se: 1→0, 010→1, 011→-1
        let mut r = BitReader::new(&[0b1010_0110]);
        assert_eq!(
            [r.se().unwrap(), r.se().unwrap(), r.se().unwrap()],
            [0, 1, -1]
        );
    }

    #[test]
    fn reading_past_the_end_fails() {
        let mut r = BitReader::new(&[0xff]);
        assert_eq!(r.bits(8), Ok(0xff));
        assert_eq!(r.bit(), Err(EndOfData));
        // 32 zero bits: an Exp-Golomb prefix that never ends.
        assert_eq!(BitReader::new(&[0; 5]).ue(), Err(EndOfData));
    }

    #[test]
    fn emulation_prevention_is_removed() {
        assert_eq!(
            unescape(&[0, 0, 3, 1, 0, 0, 3, 0, 3]),
            [0, 0, 1, 0, 0, 0, 3]
        );
    }
}
