//! Raw Annex-B H.264 and HEVC elementary streams (.h264, .264, .h265, .hevc).
//!
//! Raw streams carry no timestamps: access units are found from slice headers,
//! display order from picture order counts, and timing from the VUI (25 fps when the
//! stream says nothing, as FFmpeg assumes).

use std::collections::HashMap;

use super::records::ParameterSets;
use super::{reduce, CodecConfig, Demuxed};
use crate::bitstream::{h264, hevc, nal};
use crate::source::Source;
use crate::stream::{Chroma, Codec, Packet, Rotation, StreamInfo};
use crate::{Error, Result};

const NAME: &str = "annexb";
const SCAN_CHUNK: usize = 4 << 20;
/// Bytes of each NAL unit read for header parsing; parameter sets are read whole.
const HEAD: usize = 96;
const MAX_PARAMETER_SET: u64 = 1 << 16;
const MAX_PICTURES: usize = 1 << 24;

/// Recognizes a raw stream by extension, else by its first NAL unit.
pub(crate) fn sniff(head: &[u8], ext: Option<&str>) -> Option<Codec> {
    let (_, start) = nal::find_start_code(head, 0)?;
    if head[..start - 3].iter().any(|&b| b != 0) {
        return None;
    }
    match ext {
        Some("h264" | "264" | "avc" | "jsv") => return Some(Codec::H264),
        Some("h265" | "265" | "hevc" | "hvc") => return Some(Codec::Hevc),
        _ => {}
    }
    let b0 = *head.get(start)?;
    let b1 = head.get(start + 1).copied().unwrap_or(0);
    let hevc_type = (b0 >> 1) & 0x3f;
    if b0 & 0x81 == 0 && b1 & 7 != 0 && matches!(hevc_type, 32..=35 | 39) {
        return Some(Codec::Hevc);
    }
    if b0 & 0x80 == 0 && matches!(b0 & 0x1f, 6..=9) {
        return Some(Codec::H264);
    }
    None
}

/// Offsets of every start code and of the NAL unit after it, found by scanning the
/// source in chunks. Where a zero byte precedes `00 00 01`, H.264 counts it as part of
/// the (4-byte) start code and HEVC leaves it with the previous unit, as FFmpeg's
/// parsers split them, so packets hold the same bytes as FFmpeg's.
fn scan(src: &Source, codec: Codec) -> Result<Vec<(u64, u64)>> {
    let mut units = Vec::new();
    let len = src.len();
    let mut pos = 0u64;
    while pos < len {
        let chunk = src.read_up_to(pos, SCAN_CHUNK + 3)?;
        let mut i = 0;
        while let Some((code, after)) = nal::find_start_code(&chunk, i) {
            if code >= SCAN_CHUNK {
                break; // found again by the next chunk
            }
            let four_byte = code > 0 && chunk[code - 1] == 0;
            let code_start = if four_byte && codec == Codec::H264 {
                code - 1
            } else {
                code
            };
            units.push((pos + code_start as u64, pos + after as u64));
            i = after;
        }
        pos += SCAN_CHUNK as u64;
    }
    units.dedup_by_key(|u| u.1);
    if let Some(first) = units.first_mut() {
        first.0 = 0; // the first access unit starts with the stream
    }
    Ok(units)
}

/// Sequential reads through a read-ahead buffer: NAL headers come in file order, so
/// one large read serves thousands of them.
struct Window<'a> {
    src: &'a Source,
    start: u64,
    buf: Vec<u8>,
}

impl<'a> Window<'a> {
    fn new(src: &'a Source) -> Self {
        Self {
            src,
            start: 0,
            buf: Vec::new(),
        }
    }

    fn read(&mut self, offset: u64, len: u64) -> Result<&[u8]> {
        let end = offset + len;
        if offset < self.start || end > self.start + self.buf.len() as u64 {
            self.buf = self.src.read_up_to(offset, SCAN_CHUNK.max(len as usize))?;
            self.start = offset;
        }
        let from = (offset - self.start) as usize;
        Ok(&self.buf[from..from + len as usize])
    }
}

/// A picture found in the stream.
struct Picture {
    offset: u64,
    end: u64,
    keyframe: bool,
    /// Display-order key: (IDR period, picture order count).
    order: (u32, i64),
}

pub(crate) fn demux(src: &Source, codec: Codec) -> Result<Demuxed> {
    let units = scan(src, codec)?;
    if units.is_empty() {
        return Err(Error::malformed(NAME, "no start codes"));
    }
    let mut state = State::new(codec);
    let mut window = Window::new(src);
    for (i, &(code_offset, nal_offset)) in units.iter().enumerate() {
        let nal_end = units.get(i + 1).map_or(src.len(), |u| u.0);
        let nal_len = nal_end - nal_offset;
        let head = window.read(nal_offset, nal_len.min(HEAD as u64))?;
        let is_parameter_set = match codec {
            Codec::H264 => matches!(h264::nal_unit_type(head), Some(7 | 8)),
            _ => matches!(hevc::nal_unit_type(head), Some(32..=34)),
        };
        if is_parameter_set && nal_len > HEAD as u64 {
            let whole = src.read_vec(nal_offset, nal_len.min(MAX_PARAMETER_SET))?;
            state.push(code_offset, &whole)?;
        } else {
            let head = head.to_vec();
            state.push(code_offset, &head)?;
        }
    }
    state.finish(src.len())
}

struct State {
    codec: Codec,
    sets: ParameterSets,
    h264_sps: HashMap<u32, h264::Sps>,
    h264_pps: HashMap<u32, h264::Pps>,
    hevc_sps: HashMap<u32, hevc::Sps>,
    hevc_pps: HashMap<u32, hevc::Pps>,
    pictures: Vec<Picture>,
    /// Start of the access unit being collected, and whether it has a picture yet.
    au_start: Option<u64>,
    au_has_picture: bool,
    /// A recovery point SEI was seen in the current access unit (H.264 open GOP).
    recovery_point: bool,
    epoch: u32,
    prev_poc_msb: i64,
    prev_poc_lsb: i64,
    first_picture: bool,
    /// The first SPS in stream order: it sets the stream's timing.
    first_sps: Option<u32>,
}

impl State {
    fn new(codec: Codec) -> Self {
        Self {
            codec,
            sets: ParameterSets::default(),
            h264_sps: HashMap::new(),
            h264_pps: HashMap::new(),
            hevc_sps: HashMap::new(),
            hevc_pps: HashMap::new(),
            pictures: Vec::new(),
            au_start: None,
            au_has_picture: false,
            recovery_point: false,
            epoch: 0,
            prev_poc_msb: 0,
            prev_poc_lsb: 0,
            first_picture: true,
            first_sps: None,
        }
    }

    /// Ends the current access unit at `offset`.
    fn close_au(&mut self, offset: u64) {
        if let Some(last) = self.pictures.last_mut() {
            if self.au_has_picture && last.end == 0 {
                last.end = offset;
            }
        }
        self.au_start = Some(offset);
        self.au_has_picture = false;
        self.recovery_point = false;
    }

    fn push(&mut self, offset: u64, nal: &[u8]) -> Result<()> {
        if self.au_start.is_none() {
            self.au_start = Some(offset);
        }
        match self.codec {
            Codec::H264 => self.push_h264(offset, nal),
            _ => self.push_hevc(offset, nal),
        }
    }

    fn push_h264(&mut self, offset: u64, nal: &[u8]) -> Result<()> {
        let Some(kind) = h264::nal_unit_type(nal) else {
            return Ok(());
        };
        match kind {
            h264::nal_type::SPS => {
                let sps = h264::Sps::parse(nal)?;
                self.first_sps.get_or_insert(sps.id);
                self.h264_sps.insert(sps.id, sps);
                self.sets.add(Codec::H264, nal);
            }
            h264::nal_type::PPS => {
                let pps = h264::Pps::parse(nal)?;
                self.h264_pps.insert(pps.id, pps);
                self.sets.add(Codec::H264, nal);
            }
            _ => {}
        }
        // Types that start an access unit when they follow a picture (7.4.1.2.3).
        if matches!(kind, 6..=9 | 14..=18) && self.au_has_picture {
            self.close_au(offset);
        }
        if kind == h264::nal_type::SEI && has_recovery_point(nal) {
            self.recovery_point = true;
        }
        if !h264::is_vcl(kind) {
            return Ok(());
        }
        let header = h264::SliceHeader::parse(
            nal,
            |id| self.h264_sps.get(&id).cloned(),
            |id| self.h264_pps.get(&id).cloned(),
        )?;
        if header.first_mb_in_slice != 0 {
            return Ok(()); // another slice of the current picture
        }
        if self.au_has_picture {
            self.close_au(offset);
        }
        let sps = self
            .h264_pps
            .get(&header.pps_id)
            .and_then(|p| self.h264_sps.get(&p.sps_id))
            .expect("checked by SliceHeader::parse");
        if header.idr {
            self.epoch += 1;
            self.prev_poc_msb = 0;
            self.prev_poc_lsb = 0;
        }
        let poc = match sps.pic_order_cnt_type {
            0 => {
                let max = 1i64 << sps.log2_max_poc_lsb;
                let msb = next_poc_msb(
                    i64::from(header.poc_lsb),
                    self.prev_poc_lsb,
                    self.prev_poc_msb,
                    max,
                );
                if !h264::is_disposable(nal) {
                    self.prev_poc_msb = msb;
                    self.prev_poc_lsb = i64::from(header.poc_lsb);
                }
                msb + i64::from(header.poc_lsb)
            }
            // Types 1 and 2: output order follows decode order for the streams
            // encoders produce with them (no B-frame reordering under type 2).
            _ => self.pictures.len() as i64,
        };
        let keyframe = header.idr || (self.recovery_point && header.slice_type == 2);
        self.add_picture(keyframe, poc)
    }

    fn push_hevc(&mut self, offset: u64, nal: &[u8]) -> Result<()> {
        let Some(kind) = hevc::nal_unit_type(nal) else {
            return Ok(());
        };
        match kind {
            hevc::nal_type::VPS => self.sets.add(Codec::Hevc, nal),
            hevc::nal_type::SPS => {
                let sps = hevc::Sps::parse(nal)?;
                self.first_sps.get_or_insert(sps.id);
                self.hevc_sps.insert(sps.id, sps);
                self.sets.add(Codec::Hevc, nal);
            }
            hevc::nal_type::PPS => {
                let pps = hevc::Pps::parse(nal)?;
                self.hevc_pps.insert(pps.id, pps);
                self.sets.add(Codec::Hevc, nal);
            }
            _ => {}
        }
        // VPS, SPS, PPS, AUD, prefix SEI and reserved prefix types start an access
        // unit when they follow a picture (7.4.2.4.4).
        if matches!(kind, 32..=35 | 39 | 41..=44 | 48..=55) && self.au_has_picture {
            self.close_au(offset);
        }
        if !hevc::is_vcl(kind) {
            return Ok(());
        }
        let header = hevc::SliceHeader::parse(
            nal,
            |id| self.hevc_sps.get(&id).cloned(),
            |id| self.hevc_pps.get(&id).cloned(),
        )?;
        if !header.first_slice_segment_in_pic {
            return Ok(());
        }
        if self.au_has_picture {
            self.close_au(offset);
        }
        let irap = hevc::is_irap(kind);
        // IDR and BLA pictures, and a CRA that starts the stream, reset the POC.
        let resets =
            hevc::is_idr(kind) || (16..=18).contains(&kind) || (irap && self.first_picture);
        if resets {
            self.epoch += 1;
            self.prev_poc_msb = 0;
            self.prev_poc_lsb = 0;
        }
        let sps = self
            .hevc_pps
            .get(&header.pps_id)
            .and_then(|p| self.hevc_sps.get(&p.sps_id))
            .expect("checked by SliceHeader::parse");
        let max = 1i64 << sps.log2_max_poc_lsb;
        let lsb = i64::from(header.poc_lsb);
        let msb = if resets {
            0
        } else {
            next_poc_msb(lsb, self.prev_poc_lsb, self.prev_poc_msb, max)
        };
        // prevTid0Pic: TemporalId 0 and not RASL, RADL or a sub-layer non-reference picture.
        let tid0 = hevc::temporal_id(nal) == Some(0);
        if tid0 && !(6..=9).contains(&kind) && !hevc::is_sub_layer_non_reference(kind) {
            self.prev_poc_msb = msb;
            self.prev_poc_lsb = lsb;
        }
        self.add_picture(irap, msb + lsb)
    }

    fn add_picture(&mut self, keyframe: bool, poc: i64) -> Result<()> {
        if self.pictures.len() >= MAX_PICTURES {
            return Err(Error::malformed(NAME, "too many pictures"));
        }
        self.first_picture = false;
        self.pictures.push(Picture {
            offset: self.au_start.expect("set before any NAL unit"),
            end: 0,
            keyframe,
            order: (self.epoch, poc),
        });
        self.au_has_picture = true;
        Ok(())
    }

    fn finish(mut self, len: u64) -> Result<Demuxed> {
        if let Some(last) = self.pictures.last_mut() {
            if last.end == 0 {
                last.end = len;
            }
        }
        if self.pictures.is_empty() {
            return Err(Error::malformed(NAME, "no coded pictures"));
        }
        let first = self.first_sps;
        let (name, timing) = match self.codec {
            Codec::H264 => (
                "H.264",
                first
                    .and_then(|id| self.h264_sps.get(&id))
                    .and_then(|s| s.timing),
            ),
            _ => (
                "HEVC",
                first
                    .and_then(|id| self.hevc_sps.get(&id))
                    .and_then(|s| s.timing),
            ),
        };
        // Frame duration in seconds = ticks / time_scale (two ticks per frame in H.264).
        let ticks_per_frame = if self.codec == Codec::H264 { 2 } else { 1 };
        let time_base = match timing {
            Some((units, scale)) => reduce(u64::from(units) * ticks_per_frame, u64::from(scale)),
            None => reduce(1, 25),
        };
        let mut order: Vec<usize> = (0..self.pictures.len()).collect();
        order.sort_by_key(|&i| (self.pictures[i].order, i));
        let mut pts = vec![0i64; self.pictures.len()];
        for (rank, &i) in order.iter().enumerate() {
            pts[i] = rank as i64;
        }
        let mut packets: Vec<Packet> = self
            .pictures
            .iter()
            .zip(&pts)
            .map(|(p, &pts)| {
                Ok(Packet {
                    pts,
                    dts: pts,
                    offset: p.offset,
                    size: u32::try_from(p.end - p.offset)
                        .map_err(|_| Error::malformed(NAME, "access unit over 4 GB"))?,
                    keyframe: p.keyframe,
                })
            })
            .collect::<Result<_>>()?;
        let sorted: Vec<i64> = (0..packets.len() as i64).collect();
        super::synthesize_dts(&mut packets, &sorted, 1);
        let frame_seconds = time_base.as_f64();
        let mut info = StreamInfo {
            codec: self.codec,
            container: NAME,
            track_index: 0,
            profile: None,
            level: None,
            bit_depth: 8,
            chroma: Chroma::Yuv420,
            coded_width: 0,
            coded_height: 0,
            width: 0,
            height: 0,
            crop_left: 0,
            crop_top: 0,
            rotation: Rotation::None,
            color: Default::default(),
            time_base,
            frame_rate: 1.0 / frame_seconds,
            duration: packets.len() as f64 * frame_seconds,
            frame_count: packets.len(),
        };
        if self.sets.is_empty() {
            return Err(Error::bitstream(name, "no sequence parameter set"));
        }
        self.sets.describe(self.codec, &mut info)?;
        Ok(Demuxed {
            info,
            packets,
            config: CodecConfig::AnnexB {
                parameter_sets: self.sets.annexb(),
            },
        })
    }
}

/// PicOrderCntMsb derivation shared by H.264 (8.2.1.1) and HEVC (8.3.1).
fn next_poc_msb(lsb: i64, prev_lsb: i64, prev_msb: i64, max: i64) -> i64 {
    if lsb < prev_lsb && prev_lsb - lsb >= max / 2 {
        prev_msb + max
    } else if lsb > prev_lsb && lsb - prev_lsb > max / 2 {
        prev_msb - max
    } else {
        prev_msb
    }
}

/// True when an H.264 SEI NAL unit holds a recovery point message (payload type 6).
fn has_recovery_point(nal: &[u8]) -> bool {
    let rbsp = crate::bitstream::bits::unescape(nal.get(1..).unwrap_or_default());
    let mut pos = 0;
    while pos < rbsp.len() && rbsp[pos] != 0x80 {
        let mut read = || {
            let mut value = 0usize;
            while let Some(&b) = rbsp.get(pos) {
                pos += 1;
                value += usize::from(b);
                if b != 0xff {
                    return Some(value);
                }
            }
            None
        };
        let (Some(kind), Some(size)) = (read(), read()) else {
            return false;
        };
        if kind == 6 {
            return true;
        }
        pos += size;
    }
    false
}
