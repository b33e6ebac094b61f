//! HEVC / H.265: parameter sets and the slice-header fields reel needs.

use super::bits::{unescape, BitReader, EndOfData};
use super::Vui;
use crate::{Error, Result};

const CODEC: &str = "HEVC";

/// NAL unit types used by reel.
pub mod nal_type {
    pub const RASL_N: u8 = 8;
    pub const RASL_R: u8 = 9;
    pub const BLA_W_LP: u8 = 16;
    pub const IDR_W_RADL: u8 = 19;
    pub const IDR_N_LP: u8 = 20;
    pub const CRA: u8 = 21;
    pub const VPS: u8 = 32;
    pub const SPS: u8 = 33;
    pub const PPS: u8 = 34;
    pub const AUD: u8 = 35;
    pub const PREFIX_SEI: u8 = 39;
}

/// The NAL unit type of an HEVC NAL unit.
pub fn nal_unit_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| (b >> 1) & 0x3f)
}

/// TemporalId of the NAL unit.
pub fn temporal_id(nal: &[u8]) -> Option<u8> {
    nal.get(1).map(|b| (b & 7).saturating_sub(1))
}

/// Coded slice segments (types 0..=31).
pub fn is_vcl(nal_type: u8) -> bool {
    nal_type < 32
}

/// Intra random access points: BLA, IDR, CRA (16..=23).
pub fn is_irap(nal_type: u8) -> bool {
    (16..=23).contains(&nal_type)
}

/// IDR pictures reset the picture order count.
pub fn is_idr(nal_type: u8) -> bool {
    nal_type == nal_type::IDR_W_RADL || nal_type == nal_type::IDR_N_LP
}

/// Sub-layer non-reference pictures (TRAIL_N, TSA_N, STSA_N, RADL_N, RASL_N and the
/// reserved N types): no picture of the same sub-layer references them.
pub fn is_sub_layer_non_reference(nal_type: u8) -> bool {
    nal_type < 16 && nal_type % 2 == 0
}

/// A parsed sequence parameter set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sps {
    pub id: u32,
    pub max_sub_layers: u32,
    pub profile_idc: u32,
    pub level_idc: u32,
    pub chroma_format_idc: u32,
    pub separate_colour_plane: bool,
    pub coded_width: u32,
    pub coded_height: u32,
    /// Conformance window in luma samples: left, right, top, bottom.
    pub crop: [u32; 4],
    pub bit_depth_luma: u32,
    pub log2_max_poc_lsb: u32,
    pub vui: Vui,
    /// VUI timing: (num_units_in_tick, time_scale).
    pub timing: Option<(u32, u32)>,
}

impl Sps {
    /// Parses an SPS NAL unit (2-byte header included).
    pub fn parse(nal: &[u8]) -> Result<Self> {
        let rbsp = unescape(nal.get(2..).unwrap_or_default());
        parse_sps(&mut BitReader::new(&rbsp))
            .map_err(|EndOfData| Error::bitstream(CODEC, "SPS ends early"))?
    }

    pub fn width(&self) -> u32 {
        self.coded_width.saturating_sub(self.crop[0] + self.crop[1])
    }

    pub fn height(&self) -> u32 {
        self.coded_height
            .saturating_sub(self.crop[2] + self.crop[3])
    }
}

/// profile_tier_level(1, max_sub_layers_minus1): returns (profile_idc, level_idc).
fn parse_profile_tier_level(
    r: &mut BitReader,
    max_sub_layers_minus1: u32,
) -> Result<(u32, u32), EndOfData> {
    r.skip(3)?; // profile_space, tier
    let profile_idc = r.bits(5)?;
    r.skip(32 + 48)?; // compatibility flags, constraint flags
    let level_idc = r.bits(8)?;
    let mut profile_present = [false; 8];
    let mut level_present = [false; 8];
    for i in 0..max_sub_layers_minus1 as usize {
        profile_present[i] = r.flag()?;
        level_present[i] = r.flag()?;
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - max_sub_layers_minus1 as usize))?;
    }
    for i in 0..max_sub_layers_minus1 as usize {
        if profile_present[i] {
            r.skip(88)?;
        }
        if level_present[i] {
            r.skip(8)?;
        }
    }
    Ok((profile_idc, level_idc))
}

fn skip_scaling_list_data(r: &mut BitReader) -> Result<(), EndOfData> {
    for size_id in 0..4 {
        let step = if size_id == 3 { 3 } else { 1 };
        for _ in (0..6).step_by(step) {
            if !r.flag()? {
                r.ue()?; // scaling_list_pred_matrix_id_delta
            } else {
                let coefs = 64.min(1 << (4 + (size_id << 1)));
                if size_id > 1 {
                    r.se()?; // dc coef
                }
                for _ in 0..coefs {
                    r.se()?;
                }
            }
        }
    }
    Ok(())
}

/// st_ref_pic_set(idx); `num_delta_pocs` holds NumDeltaPocs of the sets parsed so far.
fn skip_st_ref_pic_set(
    r: &mut BitReader,
    idx: usize,
    num_delta_pocs: &mut Vec<u32>,
) -> Result<Result<(), Error>, EndOfData> {
    let inter_rps_pred = idx != 0 && r.flag()?;
    if inter_rps_pred {
        // In an SPS, delta_idx_minus1 is absent: the reference is the previous set.
        let ref_idx = idx - 1;
        r.skip(1)?; // delta_rps_sign
        r.ue()?; // abs_delta_rps_minus1
        let mut count = 0;
        for _ in 0..=num_delta_pocs[ref_idx] {
            let used_by_curr = r.flag()?;
            let use_delta = if used_by_curr { true } else { r.flag()? };
            if use_delta {
                count += 1;
            }
        }
        num_delta_pocs.push(count);
    } else {
        let negative = r.ue()?;
        let positive = r.ue()?;
        if negative > 16 || positive > 16 {
            return Ok(Err(Error::bitstream(
                CODEC,
                "reference picture set too large",
            )));
        }
        for _ in 0..negative + positive {
            r.ue()?; // delta_poc_sX_minus1
            r.skip(1)?; // used_by_curr_pic_sX_flag
        }
        num_delta_pocs.push(negative + positive);
    }
    Ok(Ok(()))
}

fn parse_sps(r: &mut BitReader) -> Result<Result<Sps>, EndOfData> {
    r.skip(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)?;
    if max_sub_layers_minus1 > 6 {
        return Ok(Err(Error::bitstream(CODEC, "more than 7 sub-layers")));
    }
    r.skip(1)?; // temporal_id_nesting
    let (profile_idc, level_idc) = parse_profile_tier_level(r, max_sub_layers_minus1)?;
    let id = r.ue()?;
    if id > 15 {
        return Ok(Err(Error::bitstream(CODEC, format!("SPS id {id} > 15"))));
    }
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc > 3 {
        return Ok(Err(Error::bitstream(
            CODEC,
            format!("chroma_format_idc {chroma_format_idc}"),
        )));
    }
    let separate_colour_plane = chroma_format_idc == 3 && r.flag()?;
    let coded_width = r.ue()?;
    let coded_height = r.ue()?;
    if coded_width == 0 || coded_height == 0 || coded_width > 16888 || coded_height > 16888 {
        return Ok(Err(Error::Dimensions {
            width: coded_width.into(),
            height: coded_height.into(),
            reason: "HEVC SPS size out of range".into(),
        }));
    }
    let mut crop = [0u32; 4];
    if r.flag()? {
        let (sub_w, sub_h) = match (chroma_format_idc, separate_colour_plane) {
            (1, false) => (2, 2),
            (2, false) => (2, 1),
            _ => (1, 1),
        };
        for (i, c) in crop.iter_mut().enumerate() {
            *c = r.ue()?.saturating_mul(if i < 2 { sub_w } else { sub_h });
        }
        if u64::from(crop[0]) + u64::from(crop[1]) >= u64::from(coded_width)
            || u64::from(crop[2]) + u64::from(crop[3]) >= u64::from(coded_height)
        {
            return Ok(Err(Error::bitstream(
                CODEC,
                "conformance window removes the picture",
            )));
        }
    }
    let bit_depth_luma = r.ue()?.saturating_add(8);
    let _bit_depth_chroma = r.ue()?.saturating_add(8);
    if bit_depth_luma > 16 {
        return Ok(Err(Error::bitstream(
            CODEC,
            format!("bit depth {bit_depth_luma}"),
        )));
    }
    let log2_max_poc_lsb = r.ue()?.saturating_add(4);
    if log2_max_poc_lsb > 16 {
        return Ok(Err(Error::bitstream(CODEC, "POC LSB field too wide")));
    }
    let ordering_info_present = r.flag()?;
    let first = if ordering_info_present {
        0
    } else {
        max_sub_layers_minus1
    };
    for _ in first..=max_sub_layers_minus1 {
        r.ue()?; // max_dec_pic_buffering_minus1
        r.ue()?; // max_num_reorder_pics
        r.ue()?; // max_latency_increase_plus1
    }
    r.ue()?; // log2_min_luma_coding_block_size_minus3
    r.ue()?; // log2_diff_max_min_luma_coding_block_size
    r.ue()?; // log2_min_luma_transform_block_size_minus2
    r.ue()?; // log2_diff_max_min_luma_transform_block_size
    r.ue()?; // max_transform_hierarchy_depth_inter
    r.ue()?; // max_transform_hierarchy_depth_intra
    if r.flag()? && r.flag()? {
        // scaling_list_enabled_flag && sps_scaling_list_data_present_flag
        skip_scaling_list_data(r)?;
    }
    r.skip(2)?; // amp_enabled_flag, sample_adaptive_offset_enabled_flag
    if r.flag()? {
        // pcm_enabled_flag
        r.skip(8)?;
        r.ue()?;
        r.ue()?;
        r.skip(1)?;
    }
    let num_short_term_ref_pic_sets = r.ue()?;
    if num_short_term_ref_pic_sets > 64 {
        return Ok(Err(Error::bitstream(CODEC, "more than 64 short-term RPS")));
    }
    let mut num_delta_pocs = Vec::new();
    for i in 0..num_short_term_ref_pic_sets as usize {
        if let Err(e) = skip_st_ref_pic_set(r, i, &mut num_delta_pocs)? {
            return Ok(Err(e));
        }
    }
    if r.flag()? {
        // long_term_ref_pics_present_flag
        let count = r.ue()?;
        if count > 32 {
            return Ok(Err(Error::bitstream(CODEC, "more than 32 long-term refs")));
        }
        for _ in 0..count {
            r.skip(log2_max_poc_lsb as usize + 1)?;
        }
    }
    r.skip(2)?; // sps_temporal_mvp_enabled_flag, strong_intra_smoothing_enabled_flag
    let (vui, timing) = if r.flag()? {
        parse_vui(r)?
    } else {
        (Vui::default(), None)
    };
    Ok(Ok(Sps {
        id,
        max_sub_layers: max_sub_layers_minus1 + 1,
        profile_idc,
        level_idc,
        chroma_format_idc,
        separate_colour_plane,
        coded_width,
        coded_height,
        crop,
        bit_depth_luma,
        log2_max_poc_lsb,
        vui,
        timing,
    }))
}

/// VUI up to vui_timing_info (E.2.1).
fn parse_vui(r: &mut BitReader) -> Result<(Vui, Option<(u32, u32)>), EndOfData> {
    let mut vui = Vui::default();
    if r.flag()? && r.bits(8)? == 255 {
        r.skip(32)?;
    }
    if r.flag()? {
        r.skip(1)?;
    }
    if r.flag()? {
        vui.parse_video_signal_type(r)?;
    }
    if r.flag()? {
        vui.chroma_location = Some(r.ue()?); // chroma_sample_loc_type_top_field
        r.ue()?;
    }
    r.skip(3)?; // neutral_chroma, field_seq, frame_field_info
    if r.flag()? {
        // default_display_window_flag
        for _ in 0..4 {
            r.ue()?;
        }
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

/// The picture parameter set fields the slice header depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pps {
    pub id: u32,
    pub sps_id: u32,
    pub dependent_slice_segments_enabled: bool,
    pub output_flag_present: bool,
    pub num_extra_slice_header_bits: u32,
}

impl Pps {
    pub fn parse(nal: &[u8]) -> Result<Self> {
        let rbsp = unescape(nal.get(2..).unwrap_or_default());
        let mut r = BitReader::new(&rbsp);
        let parse = |r: &mut BitReader| -> Result<Pps, EndOfData> {
            Ok(Pps {
                id: r.ue()?,
                sps_id: r.ue()?,
                dependent_slice_segments_enabled: r.flag()?,
                output_flag_present: r.flag()?,
                num_extra_slice_header_bits: r.bits(3)?,
            })
        };
        let pps = parse(&mut r).map_err(|EndOfData| Error::bitstream(CODEC, "PPS ends early"))?;
        if pps.id > 63 || pps.sps_id > 15 {
            return Err(Error::bitstream(CODEC, "PPS id out of range"));
        }
        Ok(pps)
    }
}

/// Leading fields of a slice segment header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceHeader {
    pub first_slice_segment_in_pic: bool,
    pub nal_type: u8,
    /// Only read for the first segment of a picture.
    pub pps_id: u32,
    /// slice_pic_order_cnt_lsb (0 for IDR pictures). Only read for the first segment.
    pub poc_lsb: u32,
    pub pic_output: bool,
}

impl SliceHeader {
    pub fn parse(
        nal: &[u8],
        sps_by_id: impl Fn(u32) -> Option<Sps>,
        pps_by_id: impl Fn(u32) -> Option<Pps>,
    ) -> Result<Self> {
        let nal_type = nal_unit_type(nal).unwrap_or(0);
        let rbsp = unescape(&nal[2.min(nal.len())..nal.len().min(64)]);
        let mut r = BitReader::new(&rbsp);
        let early = |EndOfData| Error::bitstream(CODEC, "slice header ends early");
        let first = r.flag().map_err(early)?;
        if !first {
            return Ok(SliceHeader {
                first_slice_segment_in_pic: false,
                nal_type,
                pps_id: 0,
                poc_lsb: 0,
                pic_output: true,
            });
        }
        if is_irap(nal_type) {
            r.skip(1).map_err(early)?; // no_output_of_prior_pics_flag
        }
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
        let rest = |r: &mut BitReader| -> Result<(u32, bool), EndOfData> {
            r.skip(pps.num_extra_slice_header_bits as usize)?;
            r.ue()?; // slice_type
            let pic_output = if pps.output_flag_present {
                r.flag()?
            } else {
                true
            };
            if sps.separate_colour_plane {
                r.skip(2)?;
            }
            let poc_lsb = if is_idr(nal_type) {
                0
            } else {
                r.bits(sps.log2_max_poc_lsb)?
            };
            Ok((poc_lsb, pic_output))
        };
        let (poc_lsb, pic_output) = rest(&mut r).map_err(early)?;
        Ok(SliceHeader {
            first_slice_segment_in_pic: true,
            nal_type,
            pps_id,
            poc_lsb,
            pic_output,
        })
    }
}
