//! H.264 / AVC: sequence and picture parameter sets and the slice-header fields reel
//! needs (picture boundaries and picture order in raw Annex-B streams).

use super::bits::{unescape, BitReader, EndOfData};
use super::Vui;
use crate::{Error, Result};

const CODEC: &str = "H.264";

/// NAL unit types used by reel.
pub mod nal_type {
    pub const SLICE: u8 = 1;
    pub const IDR: u8 = 5;
    pub const SEI: u8 = 6;
    pub const SPS: u8 = 7;
    pub const PPS: u8 = 8;
    pub const AUD: u8 = 9;
}

/// The NAL unit type of an H.264 NAL unit.
pub fn nal_unit_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

/// True for coded slice NAL units (types 1..=5).
pub fn is_vcl(nal_type: u8) -> bool {
    (1..=5).contains(&nal_type)
}

/// `nal_ref_idc` = 0: nothing references this picture, so a decoder may skip it.
pub fn is_disposable(nal: &[u8]) -> bool {
    nal.first().is_some_and(|b| b & 0x60 == 0)
}

/// A parsed sequence parameter set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sps {
    pub profile_idc: u32,
    pub level_idc: u32,
    pub id: u32,
    pub chroma_format_idc: u32,
    pub separate_colour_plane: bool,
    pub bit_depth_luma: u32,
    pub log2_max_frame_num: u32,
    pub pic_order_cnt_type: u32,
    pub log2_max_poc_lsb: u32,
    pub delta_pic_order_always_zero: bool,
    pub frame_mbs_only: bool,
    /// Coded size in luma samples (whole macroblocks).
    pub coded_width: u32,
    pub coded_height: u32,
    /// Cropping in luma samples: left, right, top, bottom.
    pub crop: [u32; 4],
    pub vui: Vui,
    /// VUI timing: (num_units_in_tick, time_scale).
    pub timing: Option<(u32, u32)>,
}

impl Sps {
    /// Parses an SPS NAL unit (header byte included).
    pub fn parse(nal: &[u8]) -> Result<Self> {
        let rbsp = unescape(nal.get(1..).unwrap_or_default());
        parse_sps(&mut BitReader::new(&rbsp)).map_err(|EndOfData| truncated("SPS"))?
    }

    /// Visible width after cropping.
    pub fn width(&self) -> u32 {
        self.coded_width.saturating_sub(self.crop[0] + self.crop[1])
    }

    /// Visible height after cropping.
    pub fn height(&self) -> u32 {
        self.coded_height
            .saturating_sub(self.crop[2] + self.crop[3])
    }
}

fn truncated(what: &str) -> Error {
    Error::bitstream(CODEC, format!("{what} ends early"))
}

fn parse_sps(r: &mut BitReader) -> Result<Result<Sps>, EndOfData> {
    let profile_idc = r.bits(8)?;
    r.skip(8)?; // constraint flags + reserved
    let level_idc = r.bits(8)?;
    let id = r.ue()?;
    if id > 31 {
        return Ok(Err(Error::bitstream(CODEC, format!("SPS id {id} > 31"))));
    }
    let mut chroma_format_idc = 1;
    let mut separate_colour_plane = false;
    let mut bit_depth_luma = 8;
    if matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
    ) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc > 3 {
            return Ok(Err(Error::bitstream(
                CODEC,
                format!("chroma_format_idc {chroma_format_idc}"),
            )));
        }
        if chroma_format_idc == 3 {
            separate_colour_plane = r.flag()?;
        }
        bit_depth_luma = r.ue()?.saturating_add(8);
        let _bit_depth_chroma = r.ue()?.saturating_add(8);
        r.skip(1)?; // qpprime_y_zero_transform_bypass_flag
        if r.flag()? {
            // seq_scaling_matrix_present_flag
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.flag()? {
                    skip_scaling_list(r, if i < 6 { 16 } else { 64 })?;
                }
            }
        }
    }
    if bit_depth_luma > 14 {
        return Ok(Err(Error::bitstream(
            CODEC,
            format!("bit depth {bit_depth_luma}"),
        )));
    }
    let log2_max_frame_num = r.ue()?.saturating_add(4);
    let pic_order_cnt_type = r.ue()?;
    let mut log2_max_poc_lsb = 0;
    let mut delta_pic_order_always_zero = false;
    match pic_order_cnt_type {
        0 => log2_max_poc_lsb = r.ue()?.saturating_add(4),
        1 => {
            delta_pic_order_always_zero = r.flag()?;
            r.se()?; // offset_for_non_ref_pic
            r.se()?; // offset_for_top_to_bottom_field
            let cycle = r.ue()?;
            if cycle > 255 {
                return Ok(Err(Error::bitstream(CODEC, "POC cycle > 255")));
            }
            for _ in 0..cycle {
                r.se()?;
            }
        }
        2 => {}
        other => {
            return Ok(Err(Error::bitstream(
                CODEC,
                format!("pic_order_cnt_type {other}"),
            )))
        }
    }
    if log2_max_frame_num > 16 || log2_max_poc_lsb > 16 {
        return Ok(Err(Error::bitstream(CODEC, "frame_num/POC field too wide")));
    }
    r.ue()?; // max_num_ref_frames
    r.skip(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = r.flag()?;
    if !frame_mbs_only {
        r.skip(1)?; // mb_adaptive_frame_field_flag
    }
    r.skip(1)?; // direct_8x8_inference_flag
    let height_mbs = height_map_units * if frame_mbs_only { 1 } else { 2 };
    let (coded_width, coded_height) = (width_mbs * 16, height_mbs * 16);
    if coded_width > 16384 || coded_height > 16384 {
        return Ok(Err(Error::Dimensions {
            width: coded_width,
            height: coded_height,
            reason: "H.264 SPS size above 16384".into(),
        }));
    }
    let mut crop = [0u32; 4];
    if r.flag()? {
        // Crop units depend on chroma subsampling (7.4.2.1.1).
        let (sub_w, sub_h) = match (chroma_format_idc, separate_colour_plane) {
            (1, false) => (2, 2),
            (2, false) => (2, 1),
            _ => (1, 1),
        };
        let field = if frame_mbs_only { 1 } else { 2 };
        let units = [sub_w, sub_w, sub_h * field, sub_h * field];
        for (c, unit) in crop.iter_mut().zip(units) {
            *c = r.ue()?.saturating_mul(unit);
        }
        if u64::from(crop[0]) + u64::from(crop[1]) >= coded_width
            || u64::from(crop[2]) + u64::from(crop[3]) >= coded_height
        {
            return Ok(Err(Error::bitstream(CODEC, "cropping removes the picture")));
        }
    }
    let (vui, timing) = if r.flag()? {
        parse_vui(r)?
    } else {
        (Vui::default(), None)
    };
    Ok(Ok(Sps {
        profile_idc,
        level_idc,
        id,
        chroma_format_idc,
        separate_colour_plane,
        bit_depth_luma,
        log2_max_frame_num,
        pic_order_cnt_type,
        log2_max_poc_lsb,
        delta_pic_order_always_zero,
        frame_mbs_only,
        coded_width: coded_width as u32,
        coded_height: coded_height as u32,
        crop,
        vui,
        timing,
    }))
}

fn skip_scaling_list(r: &mut BitReader, size: usize) -> Result<(), EndOfData> {
    let (mut last, mut next) = (8i32, 8i32);
    for _ in 0..size {
        if next != 0 {
            next = (i64::from(last) + i64::from(r.se()?)).rem_euclid(256) as i32;
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

/// VUI up to the timing information (E.1.1); the HRD and what follows are not needed.
fn parse_vui(r: &mut BitReader) -> Result<(Vui, Option<(u32, u32)>), EndOfData> {
    let mut vui = Vui::default();
    if r.flag()? && r.bits(8)? == 255 {
        // aspect_ratio_idc == Extended_SAR
        r.skip(32)?;
    }
    if r.flag()? {
        r.skip(1)?; // overscan_appropriate_flag
    }
    if r.flag()? {
        vui.parse_video_signal_type(r)?;
    }
    if r.flag()? {
        vui.chroma_location = Some(r.ue()?); // chroma_sample_loc_type_top_field
        r.ue()?;
    }
    let timing = if r.flag()? {
        let num_units_in_tick = r.bits(32)?;
        let time_scale = r.bits(32)?;
        (num_units_in_tick > 0 && time_scale > 0).then_some((num_units_in_tick, time_scale))
    } else {
        None
    };
    Ok((vui, timing))
}

/// The picture parameter set fields that slice headers depend on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pps {
    pub id: u32,
    pub sps_id: u32,
    pub bottom_field_pic_order_in_frame_present: bool,
}

impl Pps {
    pub fn parse(nal: &[u8]) -> Result<Self> {
        let rbsp = unescape(nal.get(1..).unwrap_or_default());
        let mut r = BitReader::new(&rbsp);
        let parse = |r: &mut BitReader| -> Result<Pps, EndOfData> {
            let id = r.ue()?;
            let sps_id = r.ue()?;
            r.skip(1)?; // entropy_coding_mode_flag
            let bottom_field_pic_order_in_frame_present = r.flag()?;
            Ok(Pps {
                id,
                sps_id,
                bottom_field_pic_order_in_frame_present,
            })
        };
        let pps = parse(&mut r).map_err(|EndOfData| truncated("PPS"))?;
        if pps.id > 255 || pps.sps_id > 31 {
            return Err(Error::bitstream(CODEC, "PPS id out of range"));
        }
        Ok(pps)
    }
}

/// The start of a slice header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceHeader {
    pub first_mb_in_slice: u32,
    /// slice_type modulo 5: 0 P, 1 B, 2 I, 3 SP, 4 SI.
    pub slice_type: u32,
    pub pps_id: u32,
    pub frame_num: u32,
    pub field_pic: bool,
    pub idr: bool,
    pub poc_lsb: u32,
}

impl SliceHeader {
    /// Parses the leading fields of a slice NAL unit, looking parameter sets up by id.
    pub fn parse(
        nal: &[u8],
        sps_by_id: impl Fn(u32) -> Option<Sps>,
        pps_by_id: impl Fn(u32) -> Option<Pps>,
    ) -> Result<Self> {
        let idr = nal_unit_type(nal) == Some(nal_type::IDR);
        // A slice header is short: 64 bytes hold everything read here.
        let head = &nal[1..nal.len().min(64)];
        let rbsp = unescape(head);
        let mut r = BitReader::new(&rbsp);
        let early = |EndOfData| truncated("slice header");
        let first_mb_in_slice = r.ue().map_err(early)?;
        let slice_type = r.ue().map_err(early)? % 5;
        let pps_id = r.ue().map_err(early)?;
        let pps = pps_by_id(pps_id).ok_or_else(|| {
            Error::bitstream(CODEC, format!("slice refers to unknown PPS {pps_id}"))
        })?;
        let sps = sps_by_id(pps.sps_id).ok_or_else(|| {
            Error::bitstream(
                CODEC,
                format!("PPS {pps_id} refers to unknown SPS {}", pps.sps_id),
            )
        })?;
        let rest = |r: &mut BitReader| -> Result<(u32, bool, u32), EndOfData> {
            if sps.separate_colour_plane {
                r.skip(2)?;
            }
            let frame_num = r.bits(sps.log2_max_frame_num)?;
            let mut field_pic = false;
            if !sps.frame_mbs_only {
                field_pic = r.flag()?;
                if field_pic {
                    r.skip(1)?; // bottom_field_flag
                }
            }
            if idr {
                r.ue()?; // idr_pic_id
            }
            let poc_lsb = if sps.pic_order_cnt_type == 0 {
                r.bits(sps.log2_max_poc_lsb)?
            } else {
                0
            };
            Ok((frame_num, field_pic, poc_lsb))
        };
        let (frame_num, field_pic, poc_lsb) = rest(&mut r).map_err(early)?;
        Ok(SliceHeader {
            first_mb_in_slice,
            slice_type,
            pps_id,
            frame_num,
            field_pic,
            idr,
            poc_lsb,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPS of a 1920x1080 High-profile x264 stream (crop bottom 8 lines, VUI with
    /// full-range BT.709 and 30 fps timing), built bit by bit.
    fn sample_sps() -> Vec<u8> {
        let mut w = crate::bitstream::test_util::BitWriter::default();
        w.bits(100, 8); // profile_idc High
        w.bits(0, 8);
        w.bits(40, 8); // level 4.0
        w.ue(0); // sps id
        w.ue(1); // chroma 4:2:0
        w.ue(0); // bit depth luma - 8
        w.ue(0); // bit depth chroma - 8
        w.bits(0, 1); // qpprime
        w.bits(0, 1); // no scaling matrix
        w.ue(0); // log2_max_frame_num - 4
        w.ue(0); // poc type 0
        w.ue(2); // log2_max_poc_lsb - 4
        w.ue(4); // max_num_ref_frames
        w.bits(0, 1);
        w.ue(119); // 120 MBs wide
        w.ue(67); // 68 MBs high
        w.bits(1, 1); // frame_mbs_only
        w.bits(1, 1); // direct_8x8
        w.bits(1, 1); // cropping
        w.ue(0);
        w.ue(0);
        w.ue(0);
        w.ue(4); // bottom: 4 * 2 = 8 lines
        w.bits(1, 1); // vui present
        w.bits(0, 1); // aspect ratio
        w.bits(0, 1); // overscan
        w.bits(1, 1); // video signal type
        w.bits(5, 3);
        w.bits(1, 1); // full range
        w.bits(1, 1); // colour description
        w.bits(1, 8);
        w.bits(1, 8);
        w.bits(1, 8);
        w.bits(0, 1); // chroma loc
        w.bits(1, 1); // timing
        w.bits(1, 32);
        w.bits(60, 32);
        w.bits(1, 1);
        let mut nal = vec![0x67];
        nal.extend(w.finish());
        nal
    }

    #[test]
    fn parses_sps_geometry_colour_and_timing() {
        let sps = Sps::parse(&sample_sps()).unwrap();
        assert_eq!((sps.profile_idc, sps.level_idc), (100, 40));
        assert_eq!((sps.coded_width, sps.coded_height), (1920, 1088));
        assert_eq!((sps.width(), sps.height()), (1920, 1080));
        assert_eq!(sps.vui.full_range, Some(true));
        assert_eq!(sps.vui.matrix, Some(1));
        assert_eq!(sps.timing, Some((1, 60)));
        assert_eq!(sps.log2_max_poc_lsb, 6);
    }

    #[test]
    fn truncated_sps_is_an_error_not_a_panic() {
        let nal = sample_sps();
        for len in 0..nal.len() - 2 {
            let _ = Sps::parse(&nal[..len]);
        }
        assert!(Sps::parse(&nal[..6]).is_err());
    }
}
