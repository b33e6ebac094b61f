//! Containers → stream info and a packet index, in pure Rust.
//!
//! Demuxers read headers and sample tables only; payloads are read later, packet by
//! packet, when a decoder asks (see [`crate::Video`]).

pub mod annexb;
mod cursor;
pub mod mkv;
pub mod mp4;
mod records;

use std::path::Path;

use crate::source::Source;
use crate::stream::{Codec, Packet, Rational, StreamInfo};
use crate::{Error, Result};

/// How packets must be prepared for a decoder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CodecConfig {
    /// ISO/IEC 14496-15 samples (avcC/hvcC): length-prefixed NAL units, rewritten to
    /// Annex-B with `parameter_sets` (Annex-B) in front of every key frame.
    LengthPrefixed {
        length_size: usize,
        parameter_sets: Vec<u8>,
    },
    /// Packets are Annex-B access units already (raw .h264/.hevc files).
    AnnexB { parameter_sets: Vec<u8> },
    /// VP9 frames and superframes, as stored.
    Vp9,
    /// AV1 temporal units; the av1C record is the decoder's extradata.
    Av1 { config_record: Vec<u8> },
}

impl CodecConfig {
    /// Parameter sets in Annex-B form (empty for VP9/AV1).
    pub fn parameter_sets(&self) -> &[u8] {
        match self {
            CodecConfig::LengthPrefixed { parameter_sets, .. }
            | CodecConfig::AnnexB { parameter_sets } => parameter_sets,
            CodecConfig::Vp9 | CodecConfig::Av1 { .. } => &[],
        }
    }
}

/// What a demuxer produces.
#[derive(Clone, Debug)]
pub struct Demuxed {
    pub info: StreamInfo,
    /// Packets in decode order.
    pub packets: Vec<Packet>,
    pub config: CodecConfig,
}

/// Container formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Mp4,
    Matroska,
    AnnexB(Codec),
}

/// Picks the container from the first bytes, with the file extension as a hint for
/// raw streams (whose first NAL unit can be ambiguous).
pub fn detect(head: &[u8], path: Option<&Path>) -> Result<Format> {
    if head.is_empty() {
        return Err(Error::Empty);
    }
    if mp4::sniff(head) {
        return Ok(Format::Mp4);
    }
    if mkv::sniff(head) {
        return Ok(Format::Matroska);
    }
    let ext = path
        .and_then(|p| p.extension())
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if let Some(codec) = annexb::sniff(head, ext.as_deref()) {
        return Ok(Format::AnnexB(codec));
    }
    Err(Error::UnknownFormat)
}

/// Demuxes a source.
pub fn demux(src: &Source, path: Option<&Path>) -> Result<Demuxed> {
    let head = src.read_up_to(0, 64)?;
    let demuxed = match detect(&head, path)? {
        Format::Mp4 => mp4::demux(src)?,
        Format::Matroska => mkv::demux(src)?,
        Format::AnnexB(codec) => annexb::demux(src, codec)?,
    };
    validate(&demuxed.info)?;
    validate_packets(demuxed.info.container, &demuxed.packets)?;
    Ok(demuxed)
}

/// Largest |timestamp| accepted: differences of two stay representable.
const MAX_TIMESTAMP: i64 = 1 << 62;

/// `a + b` for timestamps and offsets read from a file; overflow is a malformed file.
pub(crate) fn checked(a: i64, b: i64, container: &'static str) -> Result<i64> {
    a.checked_add(b)
        .ok_or_else(|| Error::malformed(container, "timestamp or offset overflows"))
}

/// Rejects packets whose timestamps or byte ranges cannot be real.
fn validate_packets(container: &'static str, packets: &[Packet]) -> Result<()> {
    for (i, p) in packets.iter().enumerate() {
        if p.pts.unsigned_abs() > MAX_TIMESTAMP as u64
            || p.dts.unsigned_abs() > MAX_TIMESTAMP as u64
        {
            return Err(Error::malformed(
                container,
                format!("packet {i} has an impossible timestamp"),
            ));
        }
        if p.offset.checked_add(u64::from(p.size)).is_none() {
            return Err(Error::malformed(
                container,
                format!("packet {i} has an impossible offset"),
            ));
        }
    }
    Ok(())
}

/// Rejects geometry no decoder or model accepts.
fn validate(info: &StreamInfo) -> Result<()> {
    let (w, h) = (u64::from(info.width), u64::from(info.height));
    let bad = |reason: &str| {
        Err(Error::Dimensions {
            width: w,
            height: h,
            reason: reason.into(),
        })
    };
    if w == 0 || h == 0 {
        return bad("empty picture");
    }
    if w > 16384 || h > 16384 {
        return bad("larger than 16384 pixels on a side");
    }
    if w.max(h) > 200 * w.min(h) {
        return bad("aspect ratio above 200");
    }
    Ok(())
}

/// Reduces a rational with 64-bit terms to one with 32-bit terms.
pub(crate) fn reduce(num: u64, den: u64) -> Rational {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let g = gcd(num, den).max(1);
    let (mut n, mut d) = (num / g, den / g);
    while n > u64::from(u32::MAX) || d > u64::from(u32::MAX) {
        n /= 2;
        d /= 2;
    }
    Rational::new(n as u32, d.max(1) as u32)
}

/// Gives packets decode timestamps when the container stores none (Matroska, raw
/// streams): the presentation times, sorted, delayed by the deepest reordering so
/// that no packet decodes after it is presented.
pub(crate) fn synthesize_dts(packets: &mut [Packet], sorted_pts: &[i64], step: i64) {
    let mut order: Vec<usize> = (0..packets.len()).collect();
    order.sort_by_key(|&i| (packets[i].pts, i));
    let mut rank = vec![0usize; packets.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    let delay = (0..packets.len())
        .map(|i| i.saturating_sub(rank[i]))
        .max()
        .unwrap_or(0);
    for (i, p) in packets.iter_mut().enumerate() {
        p.dts = if i >= delay {
            sorted_pts[i - delay]
        } else {
            sorted_pts[0].saturating_sub(((delay - i) as i64).saturating_mul(step))
        };
    }
}
