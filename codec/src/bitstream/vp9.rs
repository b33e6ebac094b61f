//! VP9: the uncompressed frame header (key-frame info) and superframe indexes.

use super::bits::{BitReader, EndOfData};
use crate::stream::Chroma;
use crate::{Error, Result};

const CODEC: &str = "VP9";

/// What a VP9 key frame header says about the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFrameInfo {
    pub profile: u32,
    pub bit_depth: u32,
    /// VP9 color_space: 0 unknown, 1 BT.601, 2 BT.709, 3 SMPTE-170, 4 SMPTE-240,
    /// 5 BT.2020, 7 sRGB.
    pub color_space: u32,
    pub full_range: bool,
    pub chroma: Chroma,
    pub width: u32,
    pub height: u32,
}

impl KeyFrameInfo {
    /// H.273 matrix coefficients for the VP9 colour space, if specified.
    pub fn h273_matrix(&self) -> Option<u32> {
        match self.color_space {
            1 | 3 => Some(6),
            2 => Some(1),
            4 => Some(7),
            5 => Some(9),
            7 => Some(0),
            _ => None,
        }
    }
}

/// The frames packed into one VP9 packet: a superframe holds several (typically a
/// hidden alt-ref frame and a shown frame); any other packet is one frame.
pub fn superframe_frames(packet: &[u8]) -> Vec<&[u8]> {
    let Some(&marker) = packet.last() else {
        return Vec::new();
    };
    if marker & 0xe0 == 0xc0 {
        let count = usize::from(marker & 7) + 1;
        let size_bytes = usize::from((marker >> 3) & 3) + 1;
        let index_len = 2 + size_bytes * count;
        if packet.len() >= index_len && packet[packet.len() - index_len] == marker {
            let mut sizes = packet[packet.len() - index_len + 1..packet.len() - 1]
                .chunks_exact(size_bytes)
                .map(|c| {
                    c.iter()
                        .rev()
                        .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
                });
            let mut frames = Vec::with_capacity(count);
            let mut pos = 0;
            let data_end = packet.len() - index_len;
            for size in sizes.by_ref() {
                if size > data_end - pos {
                    return vec![packet];
                }
                frames.push(&packet[pos..pos + size]);
                pos += size;
            }
            return frames;
        }
    }
    vec![packet]
}

/// Parses a key frame's uncompressed header. `Ok(None)` for frames that are not key frames.
pub fn parse_key_frame(frame: &[u8]) -> Result<Option<KeyFrameInfo>> {
    let mut r = BitReader::new(frame);
    let early = |EndOfData| Error::bitstream(CODEC, "frame header ends early");
    let parse = |r: &mut BitReader| -> Result<Result<Option<KeyFrameInfo>>, EndOfData> {
        if r.bits(2)? != 2 {
            return Ok(Err(Error::bitstream(CODEC, "bad frame marker")));
        }
        let low = r.bit()?;
        let high = r.bit()?;
        let profile = (high << 1) | low;
        if profile == 3 {
            r.skip(1)?;
        }
        if r.flag()? {
            return Ok(Ok(None)); // show_existing_frame
        }
        let key_frame = r.bit()? == 0;
        if !key_frame {
            return Ok(Ok(None));
        }
        r.skip(2)?; // show_frame, error_resilient_mode
        if r.bits(24)? != 0x49_83_42 {
            return Ok(Err(Error::bitstream(CODEC, "bad key frame sync code")));
        }
        let bit_depth = if profile >= 2 {
            if r.flag()? {
                12
            } else {
                10
            }
        } else {
            8
        };
        let color_space = r.bits(3)?;
        let (full_range, chroma);
        if color_space != 7 {
            full_range = r.flag()?;
            chroma = if profile == 1 || profile == 3 {
                let ss_x = r.bit()?;
                let ss_y = r.bit()?;
                r.skip(1)?;
                match (ss_x, ss_y) {
                    (1, 1) => Chroma::Yuv420,
                    (1, 0) => Chroma::Yuv422,
                    (0, 0) => Chroma::Yuv444,
                    _ => return Ok(Err(Error::bitstream(CODEC, "4:4:0 subsampling"))),
                }
            } else {
                Chroma::Yuv420
            };
        } else {
            full_range = true;
            chroma = Chroma::Yuv444;
            if profile == 1 || profile == 3 {
                r.skip(1)?;
            }
        }
        let width = r.bits(16)? + 1;
        let height = r.bits(16)? + 1;
        Ok(Ok(Some(KeyFrameInfo {
            profile,
            bit_depth,
            color_space,
            full_range,
            chroma,
            width,
            height,
        })))
    };
    parse(&mut r).map_err(early)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_superframes() {
        // Two frames of 3 and 2 bytes, 1-byte sizes: marker 0b110_00_001.
        let packet = [1, 2, 3, 4, 5, 0xc1, 3, 2, 0xc1];
        assert_eq!(superframe_frames(&packet), [&[1, 2, 3][..], &[4, 5]]);
        // Not a superframe: returned whole.
        assert_eq!(superframe_frames(&[1, 2, 3]), [&[1, 2, 3][..]]);
        // Sizes that overrun: treated as one frame, never out of bounds.
        assert_eq!(superframe_frames(&[1, 0xc1, 9, 9, 0xc1]).len(), 1);
    }

    #[test]
    fn parses_a_profile_0_key_frame() {
        let mut w = crate::bitstream::test_util::BitWriter::default();
        w.bits(2, 2); // frame marker
        w.bits(0, 2); // profile 0
        w.bits(0, 1); // show_existing_frame
        w.bits(0, 1); // key frame
        w.bits(1, 1); // show_frame
        w.bits(0, 1); // error resilient
        w.bits(0x49_83_42, 24);
        w.bits(2, 3); // BT.709
        w.bits(0, 1); // limited range
        w.bits(319, 16);
        w.bits(239, 16);
        let info = parse_key_frame(&w.finish()).unwrap().unwrap();
        assert_eq!((info.width, info.height, info.bit_depth), (320, 240, 8));
        assert_eq!(info.h273_matrix(), Some(1));
        assert_eq!(info.chroma, Chroma::Yuv420);
    }
}
