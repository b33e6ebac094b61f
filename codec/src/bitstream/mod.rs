//! Elementary-stream parsing: the parts of H.264, HEVC, VP9 and AV1 headers reel
//! needs for stream info, picture boundaries and decoder configuration.

pub mod av1;
pub mod bits;
pub mod h264;
pub mod hevc;
pub mod nal;
pub mod vp9;

use crate::stream::ColorInfo;
use bits::{BitReader, EndOfData};

/// Colour fields of an H.264/HEVC VUI (`video_signal_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Vui {
    pub full_range: Option<bool>,
    pub primaries: Option<u32>,
    pub transfer: Option<u32>,
    pub matrix: Option<u32>,
    /// chroma_sample_loc_type_top_field.
    pub chroma_location: Option<u32>,
}

impl Vui {
    /// Reads video_format … matrix_coefficients, after video_signal_type_present_flag.
    fn parse_video_signal_type(&mut self, r: &mut BitReader) -> Result<(), EndOfData> {
        r.skip(3)?; // video_format
        self.full_range = Some(r.flag()?);
        if r.flag()? {
            self.primaries = Some(r.bits(8)?);
            self.transfer = Some(r.bits(8)?);
            self.matrix = Some(r.bits(8)?);
        }
        Ok(())
    }

    /// As a container-independent colour description.
    pub fn color(&self) -> ColorInfo {
        ColorInfo {
            matrix: self.matrix,
            primaries: self.primaries,
            transfer: self.transfer,
            full_range: self.full_range,
            chroma_location: self.chroma_location,
        }
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    /// Writes bits MSB-first, for building parameter sets in tests.
    #[derive(Default)]
    pub struct BitWriter {
        bytes: Vec<u8>,
        nbits: usize,
    }

    impl BitWriter {
        pub fn bits(&mut self, value: u64, n: u32) {
            for i in (0..n).rev() {
                if self.nbits % 8 == 0 {
                    self.bytes.push(0);
                }
                let bit = ((value >> i) & 1) as u8;
                *self.bytes.last_mut().unwrap() |= bit << (7 - self.nbits % 8);
                self.nbits += 1;
            }
        }

        pub fn ue(&mut self, value: u32) {
            let v = u64::from(value) + 1;
            let len = 64 - v.leading_zeros();
            self.bits(0, len - 1);
            self.bits(v, len);
        }

        /// Adds the RBSP stop bit and returns the bytes.
        pub fn finish(mut self) -> Vec<u8> {
            self.bits(1, 1);
            self.bytes
        }
    }
}
