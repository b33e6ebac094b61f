//! AV1: the `av1C` codec configuration record (stream info only; reel decodes AV1 on
//! the CPU where FFmpeg has a decoder, and never on Hopper's NVDEC, which lacks AV1).

use crate::stream::Chroma;
use crate::{Error, Result};

/// Fields of an AV1CodecConfigurationRecord.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigRecord {
    pub profile: u32,
    pub level: u32,
    pub bit_depth: u8,
    pub chroma: Chroma,
}

impl ConfigRecord {
    pub fn parse(data: &[u8]) -> Result<Self> {
        if data.len() < 4 || data[0] & 0x80 == 0 {
            return Err(Error::bitstream("AV1", "bad av1C record"));
        }
        let profile = u32::from(data[1] >> 5);
        let level = u32::from(data[1] & 0x1f);
        let high_bitdepth = data[2] & 0x40 != 0;
        let twelve_bit = data[2] & 0x20 != 0;
        let monochrome = data[2] & 0x10 != 0;
        let (ss_x, ss_y) = (data[2] & 0x08 != 0, data[2] & 0x04 != 0);
        let chroma = match (monochrome, ss_x, ss_y) {
            (true, _, _) => Chroma::Monochrome,
            (false, true, true) => Chroma::Yuv420,
            (false, true, false) => Chroma::Yuv422,
            _ => Chroma::Yuv444,
        };
        let bit_depth = match (high_bitdepth, twelve_bit) {
            (false, _) => 8,
            (true, false) => 10,
            (true, true) => 12,
        };
        Ok(Self {
            profile,
            level,
            bit_depth,
            chroma,
        })
    }
}
