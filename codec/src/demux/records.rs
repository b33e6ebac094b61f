//! ISO/IEC 14496-15 decoder configuration records (avcC, hvcC), shared by MP4 and
//! Matroska, and the parameter sets they carry.

use super::cursor::Cursor;
use crate::bitstream::{h264, hevc, nal};
use crate::stream::{Chroma, Codec, StreamInfo};
use crate::{Error, Result};

const NAME: &str = "codec configuration record";

/// avcC: NAL length size and the SPS/PPS it carries.
pub(crate) fn avcc(record: &[u8]) -> Result<(usize, ParameterSets)> {
    let mut c = Cursor::new(record, NAME, "avcC");
    c.skip(4)?; // version, profile, compatibility, level
    let length_size = usize::from(c.u8()? & 3) + 1;
    let mut sets = ParameterSets::default();
    let sps_count = c.u8()? & 0x1f;
    for _ in 0..sps_count {
        let len = usize::from(c.u16()?);
        sets.add(Codec::H264, c.bytes(len)?);
    }
    let pps_count = c.u8()?;
    for _ in 0..pps_count {
        let len = usize::from(c.u16()?);
        sets.add(Codec::H264, c.bytes(len)?);
    }
    Ok((length_size, sets))
}

/// hvcC: NAL length size and its VPS/SPS/PPS arrays.
pub(crate) fn hvcc(record: &[u8]) -> Result<(usize, ParameterSets)> {
    let mut c = Cursor::new(record, NAME, "hvcC");
    c.skip(21)?;
    let length_size = usize::from(c.u8()? & 3) + 1;
    let arrays = c.u8()?;
    let mut sets = ParameterSets::default();
    for _ in 0..arrays {
        c.skip(1)?; // completeness + NAL type
        let count = c.u16()?;
        for _ in 0..count {
            let len = usize::from(c.u16()?);
            sets.add(Codec::Hevc, c.bytes(len)?);
        }
    }
    Ok((length_size, sets))
}

/// Parameter sets collected from a configuration record or in-band NAL units.
#[derive(Clone, Debug, Default)]
pub(crate) struct ParameterSets {
    vps: Vec<Vec<u8>>,
    sps: Vec<Vec<u8>>,
    pps: Vec<Vec<u8>>,
}

impl ParameterSets {
    /// Keeps `nal` if it is a parameter set (duplicates are dropped).
    pub fn add(&mut self, codec: Codec, nal: &[u8]) {
        let list = match codec {
            Codec::H264 => match h264::nal_unit_type(nal) {
                Some(h264::nal_type::SPS) => &mut self.sps,
                Some(h264::nal_type::PPS) => &mut self.pps,
                _ => return,
            },
            Codec::Hevc => match hevc::nal_unit_type(nal) {
                Some(hevc::nal_type::VPS) => &mut self.vps,
                Some(hevc::nal_type::SPS) => &mut self.sps,
                Some(hevc::nal_type::PPS) => &mut self.pps,
                _ => return,
            },
            Codec::Vp9 | Codec::Av1 => return,
        };
        if !list.iter().any(|x| x == nal) {
            list.push(nal.to_vec());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sps.is_empty()
    }

    /// VPS, SPS and PPS as one Annex-B buffer.
    pub fn annexb(&self) -> Vec<u8> {
        nal::join_annexb(
            self.vps
                .iter()
                .chain(&self.sps)
                .chain(&self.pps)
                .map(Vec::as_slice),
        )
    }

    /// Fills codec-level stream info from the first SPS; bitstream colour signalling
    /// wins over the container's.
    pub fn describe(&self, codec: Codec, info: &mut StreamInfo) -> Result<()> {
        let sps = self.sps.first().ok_or_else(|| {
            Error::bitstream(
                if codec == Codec::H264 {
                    "H.264"
                } else {
                    "HEVC"
                },
                "no sequence parameter set",
            )
        })?;
        let (profile, level, chroma_idc, depth, coded, visible, crop, vui) = match codec {
            Codec::H264 => {
                let s = h264::Sps::parse(sps)?;
                (
                    s.profile_idc,
                    s.level_idc,
                    s.chroma_format_idc,
                    s.bit_depth_luma,
                    (s.coded_width, s.coded_height),
                    (s.width(), s.height()),
                    (s.crop[0], s.crop[2]),
                    s.vui,
                )
            }
            _ => {
                let s = hevc::Sps::parse(sps)?;
                (
                    s.profile_idc,
                    s.level_idc,
                    s.chroma_format_idc,
                    s.bit_depth_luma,
                    (s.coded_width, s.coded_height),
                    (s.width(), s.height()),
                    (s.crop[0], s.crop[2]),
                    s.vui,
                )
            }
        };
        info.profile = Some(profile);
        info.level = Some(level);
        info.chroma = Chroma::from_idc(chroma_idc).unwrap_or(Chroma::Yuv420);
        info.bit_depth = depth as u8;
        (info.coded_width, info.coded_height) = coded;
        (info.width, info.height) = visible;
        (info.crop_left, info.crop_top) = crop;
        info.color = vui.color().or(info.color);
        Ok(())
    }
}
