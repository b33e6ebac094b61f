//! Matroska and WebM.
//!
//! Clusters are walked element by element; of each block only its header (track,
//! timecode, flags) is read. Unknown-size segments and clusters (live recordings)
//! are supported.

use super::cursor::Cursor;
use super::{records, reduce, CodecConfig, Demuxed};
use crate::bitstream::{av1, vp9};
use crate::source::Source;
use crate::stream::{Chroma, Codec, ColorInfo, Packet, Rotation, StreamInfo};
use crate::{Error, Result};

const NAME: &str = "matroska";
const MAX_MASTER: u64 = 64 << 20;
const MAX_PACKETS: usize = 1 << 24;

mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMECODE_SCALE: u32 = 0x2A_D7B1;
    pub const DURATION: u32 = 0x4489;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const CODEC_ID: u32 = 0x86;
    pub const CODEC_PRIVATE: u32 = 0x63A2;
    pub const DEFAULT_DURATION: u32 = 0x23_E383;
    pub const CONTENT_ENCODINGS: u32 = 0x6D80;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const COLOUR: u32 = 0x55B0;
    pub const MATRIX: u32 = 0x55B1;
    pub const RANGE: u32 = 0x55B9;
    pub const TRANSFER: u32 = 0x55BA;
    pub const PRIMARIES: u32 = 0x55BB;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMECODE: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
    pub const BLOCK_GROUP: u32 = 0xA0;
    pub const BLOCK: u32 = 0xA1;
    pub const REFERENCE_BLOCK: u32 = 0xFB;
    /// Top-level elements: one of them ends an unknown-size cluster.
    pub const TOP_LEVEL: [u32; 8] = [
        CLUSTER,
        0x1C53_BB6B,
        0x1254_C367,
        0x1043_A770,
        0x1941_A469,
        INFO,
        TRACKS,
        0x114D_9B74,
    ];
}

/// True when the bytes start with an EBML header.
pub(crate) fn sniff(head: &[u8]) -> bool {
    head.starts_with(&[0x1A, 0x45, 0xDF, 0xA3])
}

fn malformed(reason: impl Into<String>) -> Error {
    Error::malformed(NAME, reason)
}

/// An element header: id, payload offset and size (`None`: unknown size).
#[derive(Clone, Copy, Debug)]
struct Header {
    id: u32,
    data: u64,
    size: Option<u64>,
}

/// Reads a variable-length integer; returns (value with marker removed, length, all ones).
fn vint(bytes: &[u8]) -> Option<(u64, usize, bool)> {
    let first = *bytes.first()?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 || bytes.len() < len {
        return None;
    }
    let mut value = u64::from(first) & ((1u64 << (8 - len)) - 1);
    for &b in &bytes[1..len] {
        value = (value << 8) | u64::from(b);
    }
    let all_ones = value == (1u64 << (7 * len)) - 1;
    Some((value, len, all_ones))
}

fn read_header(src: &Source, pos: u64) -> Result<Option<Header>> {
    let head = src.read_up_to(pos, 12)?;
    if head.is_empty() {
        return Ok(None);
    }
    let Some((_, id_len, _)) = vint(&head) else {
        return Err(malformed(format!("bad element id at byte {pos}")));
    };
    if id_len > 4 {
        return Err(malformed(format!(
            "element id longer than 4 bytes at byte {pos}"
        )));
    }
    let id = head[..id_len]
        .iter()
        .fold(0u32, |a, &b| (a << 8) | u32::from(b));
    let Some((size, size_len, unknown)) = vint(&head[id_len..]) else {
        return Err(malformed(format!("bad element size at byte {pos}")));
    };
    Ok(Some(Header {
        id,
        data: pos + (id_len + size_len) as u64,
        size: (!unknown).then_some(size),
    }))
}

/// Iterates elements inside an in-memory master element.
fn elements(data: &[u8]) -> impl Iterator<Item = Result<(u32, &[u8])>> {
    let mut pos = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || pos >= data.len() {
            return None;
        }
        let result = (|| {
            let (_, id_len, _) = vint(&data[pos..]).ok_or_else(|| malformed("bad element id"))?;
            let id = data[pos..pos + id_len]
                .iter()
                .fold(0u32, |a, &b| (a << 8) | u32::from(b));
            let (size, size_len, unknown) =
                vint(&data[pos + id_len..]).ok_or_else(|| malformed("bad element size"))?;
            let start = pos + id_len + size_len;
            let end = if unknown {
                data.len()
            } else {
                start
                    .checked_add(size as usize)
                    .filter(|&e| e <= data.len())
                    .ok_or_else(|| malformed(format!("element {id:#x} runs past its parent")))?
            };
            pos = end;
            Ok((id, &data[start..end]))
        })();
        failed = result.is_err();
        Some(result)
    })
}

fn uint(data: &[u8]) -> Result<u64> {
    if data.len() > 8 {
        return Err(malformed("integer element longer than 8 bytes"));
    }
    Ok(data.iter().fold(0u64, |a, &b| (a << 8) | u64::from(b)))
}

fn float(data: &[u8]) -> Result<f64> {
    match data.len() {
        0 => Ok(0.0),
        4 => Ok(f64::from(f32::from_be_bytes(data.try_into().unwrap()))),
        8 => Ok(f64::from_be_bytes(data.try_into().unwrap())),
        n => Err(malformed(format!("float element of {n} bytes"))),
    }
}

struct VideoTrack {
    number: u64,
    index: u32,
    codec: Codec,
    private: Option<Vec<u8>>,
    default_duration_ns: Option<u64>,
    width: u32,
    height: u32,
    color: ColorInfo,
}

pub(crate) fn demux(src: &Source) -> Result<Demuxed> {
    let ebml = read_header(src, 0)?.ok_or(Error::Empty)?;
    if ebml.id != id::EBML {
        return Err(malformed("missing EBML header"));
    }
    let ebml_size = ebml
        .size
        .ok_or_else(|| malformed("EBML header of unknown size"))?;
    let header = read_master(src, ebml.data, ebml_size)?;
    let mut doc_type = String::new();
    for e in elements(&header) {
        let (id, data) = e?;
        if id == id::DOC_TYPE {
            doc_type = String::from_utf8_lossy(data).into_owned();
        }
    }
    if doc_type != "matroska" && doc_type != "webm" {
        return Err(malformed(format!(
            "unknown EBML document type '{doc_type}'"
        )));
    }
    let segment_pos = ebml.data + ebml_size;
    let segment = read_header(src, segment_pos)?.ok_or_else(|| malformed("no Segment"))?;
    if segment.id != id::SEGMENT {
        return Err(malformed("expected a Segment after the EBML header"));
    }
    let segment_end = segment
        .size
        .map_or(src.len(), |s| segment.data.saturating_add(s).min(src.len()));

    let mut timecode_scale = 1_000_000u64;
    let mut duration = None;
    let mut track: Option<VideoTrack> = None;
    let mut unsupported = None;
    let mut packets = Vec::new();
    let mut pos = segment.data;
    while pos < segment_end {
        let Some(h) = read_header(src, pos)? else {
            break;
        };
        match h.id {
            id::INFO => {
                let size = h.size.ok_or_else(|| malformed("Info of unknown size"))?;
                let info = read_master(src, h.data, size)?;
                for e in elements(&info) {
                    let (id, data) = e?;
                    match id {
                        id::TIMECODE_SCALE => timecode_scale = uint(data)?.max(1),
                        id::DURATION => duration = Some(float(data)?),
                        _ => {}
                    }
                }
            }
            id::TRACKS => {
                let size = h.size.ok_or_else(|| malformed("Tracks of unknown size"))?;
                let tracks = read_master(src, h.data, size)?;
                (track, unsupported) = parse_tracks(&tracks)?;
            }
            id::CLUSTER => {
                let Some(video) = &track else {
                    return Err(unsupported
                        .clone()
                        .map_or(Error::NoVideoTrack, Error::UnsupportedCodec));
                };
                let end = parse_cluster(src, h, segment_end, video.number, &mut packets)?;
                pos = end;
                continue;
            }
            _ => {}
        }
        let Some(size) = h.size else {
            return Err(malformed(format!("element {:#x} of unknown size", h.id)));
        };
        pos = h.data.saturating_add(size);
    }
    let video =
        track.ok_or_else(|| unsupported.map_or(Error::NoVideoTrack, Error::UnsupportedCodec))?;
    if packets.is_empty() {
        return Err(malformed("the video track has no blocks"));
    }
    finish(src, video, packets, timecode_scale, duration)
}

fn read_master(src: &Source, data: u64, size: u64) -> Result<Vec<u8>> {
    if size > MAX_MASTER {
        return Err(malformed(format!(
            "element of {size} bytes exceeds the limit"
        )));
    }
    src.read_vec(data, size)
}

fn parse_tracks(tracks: &[u8]) -> Result<(Option<VideoTrack>, Option<String>)> {
    let mut unsupported = None;
    for (index, e) in elements(tracks).enumerate() {
        let (id, entry) = e?;
        if id != id::TRACK_ENTRY {
            continue;
        }
        let mut number = None;
        let mut kind = 0;
        let mut codec_id = String::new();
        let mut private = None;
        let mut default_duration_ns = None;
        let (mut width, mut height) = (0, 0);
        let mut color = ColorInfo::default();
        let mut encoded = false;
        for e in elements(entry) {
            let (id, data) = e?;
            match id {
                id::TRACK_NUMBER => number = Some(uint(data)?),
                id::TRACK_TYPE => kind = uint(data)?,
                id::CODEC_ID => codec_id = String::from_utf8_lossy(data).into_owned(),
                id::CODEC_PRIVATE => private = Some(data.to_vec()),
                id::DEFAULT_DURATION => default_duration_ns = Some(uint(data)?),
                id::CONTENT_ENCODINGS => encoded = true,
                id::VIDEO => {
                    for e in elements(data) {
                        let (id, data) = e?;
                        match id {
                            id::PIXEL_WIDTH => width = uint(data)?.min(u32::MAX.into()) as u32,
                            id::PIXEL_HEIGHT => height = uint(data)?.min(u32::MAX.into()) as u32,
                            id::COLOUR => color = parse_colour(data)?,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if kind != 1 {
            continue;
        }
        let codec = match codec_id.as_str() {
            "V_MPEG4/ISO/AVC" => Codec::H264,
            "V_MPEGH/ISO/HEVC" => Codec::Hevc,
            "V_VP9" => Codec::Vp9,
            "V_AV1" => Codec::Av1,
            other => {
                unsupported.get_or_insert_with(|| format!("Matroska codec '{other}'"));
                continue;
            }
        };
        if encoded {
            return Err(Error::Unsupported(
                "compressed or encrypted Matroska tracks".into(),
            ));
        }
        let number = number.ok_or_else(|| malformed("video track without a number"))?;
        return Ok((
            Some(VideoTrack {
                number,
                index: index as u32,
                codec,
                private,
                default_duration_ns,
                width,
                height,
                color,
            }),
            None,
        ));
    }
    Ok((None, unsupported))
}

fn parse_colour(data: &[u8]) -> Result<ColorInfo> {
    let mut color = ColorInfo::default();
    let specified = |v: u64| (v != 2).then_some(v as u32);
    for e in elements(data) {
        let (id, data) = e?;
        match id {
            id::MATRIX => color.matrix = specified(uint(data)?),
            id::PRIMARIES => color.primaries = specified(uint(data)?),
            id::TRANSFER => color.transfer = specified(uint(data)?),
            id::RANGE => {
                color.full_range = match uint(data)? {
                    1 => Some(false),
                    2 => Some(true),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    Ok(color)
}

/// Walks a cluster's children by header; returns the position after the cluster.
fn parse_cluster(
    src: &Source,
    cluster: Header,
    segment_end: u64,
    track: u64,
    packets: &mut Vec<Packet>,
) -> Result<u64> {
    let end = cluster.size.map_or(segment_end, |s| {
        cluster.data.saturating_add(s).min(segment_end)
    });
    let mut timecode = 0i64;
    let mut pos = cluster.data;
    while pos < end {
        let Some(h) = read_header(src, pos)? else {
            break;
        };
        if cluster.size.is_none() && id::TOP_LEVEL.contains(&h.id) {
            return Ok(pos); // end of an unknown-size cluster
        }
        let size = h
            .size
            .ok_or_else(|| malformed(format!("cluster child {:#x} of unknown size", h.id)))?;
        match h.id {
            id::TIMECODE => {
                timecode = i64::try_from(uint(&src.read_vec(h.data, size.min(8))?)?)
                    .map_err(|_| malformed("cluster timecode overflows"))?;
            }
            id::SIMPLE_BLOCK => {
                if let Some(p) = parse_block(src, h.data, size, track, timecode, None)? {
                    push(packets, p)?;
                }
            }
            id::BLOCK_GROUP => {
                let mut block = None;
                let mut referenced = false;
                let group_end = h.data.saturating_add(size).min(end);
                let mut gpos = h.data;
                while gpos < group_end {
                    let Some(g) = read_header(src, gpos)? else {
                        break;
                    };
                    let gsize = g
                        .size
                        .ok_or_else(|| malformed("block child of unknown size"))?;
                    match g.id {
                        id::BLOCK => block = Some((g.data, gsize)),
                        id::REFERENCE_BLOCK => referenced = true,
                        _ => {}
                    }
                    gpos = g.data.saturating_add(gsize);
                }
                if let Some((data, bsize)) = block {
                    if let Some(p) =
                        parse_block(src, data, bsize, track, timecode, Some(!referenced))?
                    {
                        push(packets, p)?;
                    }
                }
            }
            _ => {}
        }
        pos = h.data.saturating_add(size);
    }
    Ok(end)
}

fn push(packets: &mut Vec<Packet>, p: Packet) -> Result<()> {
    if packets.len() >= MAX_PACKETS {
        return Err(malformed("too many blocks"));
    }
    packets.push(p);
    Ok(())
}

/// Reads a (Simple)Block header. `keyframe` is given for BlockGroups.
fn parse_block(
    src: &Source,
    data: u64,
    size: u64,
    track: u64,
    cluster_timecode: i64,
    keyframe: Option<bool>,
) -> Result<Option<Packet>> {
    let head = src.read_up_to(data, 12)?;
    let (number, len, _) = vint(&head).ok_or_else(|| malformed("bad block track number"))?;
    if number != track {
        return Ok(None);
    }
    let mut c = Cursor::new(&head[len..], NAME, "block header");
    let relative = c.u16()? as i16;
    let flags = c.u8()?;
    if flags & 0x06 != 0 {
        return Err(Error::Unsupported("laced video blocks".into()));
    }
    let header_len = len as u64 + 3;
    if size < header_len {
        return Err(malformed("block shorter than its header"));
    }
    let pts = super::checked(cluster_timecode, i64::from(relative), NAME)?;
    Ok(Some(Packet {
        pts,
        dts: pts,
        offset: data + header_len,
        size: u32::try_from(size - header_len).map_err(|_| malformed("block over 4 GB"))?,
        keyframe: keyframe.unwrap_or(flags & 0x80 != 0),
    }))
}

fn finish(
    src: &Source,
    video: VideoTrack,
    mut packets: Vec<Packet>,
    timecode_scale: u64,
    duration: Option<f64>,
) -> Result<Demuxed> {
    let time_base = reduce(timecode_scale, 1_000_000_000);
    let tick = timecode_scale as f64 / 1e9;
    // Frame duration in ticks: DefaultDuration, else the smallest pts step.
    let mut sorted: Vec<i64> = packets.iter().map(|p| p.pts).collect();
    sorted.sort_unstable();
    let step = video
        .default_duration_ns
        .map(|ns| ((ns as f64 / timecode_scale as f64).round() as i64).max(1))
        .or_else(|| {
            sorted
                .windows(2)
                .map(|w| w[1].saturating_sub(w[0]))
                .filter(|&d| d > 0)
                .min()
        })
        .unwrap_or(1);
    super::synthesize_dts(&mut packets, &sorted, step);
    let span = sorted[sorted.len() - 1]
        .saturating_sub(sorted[0])
        .saturating_add(step) as f64
        * tick;
    let duration = duration
        .map(|d| d * tick)
        .filter(|&d| d > 0.0)
        .unwrap_or(span);
    let mut info = StreamInfo {
        codec: video.codec,
        container: NAME,
        track_index: video.index,
        profile: None,
        level: None,
        bit_depth: 8,
        chroma: Chroma::Yuv420,
        coded_width: video.width,
        coded_height: video.height,
        width: video.width,
        height: video.height,
        crop_left: 0,
        crop_top: 0,
        rotation: Rotation::None,
        color: video.color,
        time_base,
        frame_rate: packets.len() as f64 / span,
        duration,
        frame_count: packets.len(),
    };
    let config = match video.codec {
        Codec::H264 | Codec::Hevc => {
            let private = video
                .private
                .as_deref()
                .ok_or_else(|| malformed("H.264/HEVC track without CodecPrivate"))?;
            let (length_size, sets) = match video.codec {
                Codec::H264 => records::avcc(private)?,
                _ => records::hvcc(private)?,
            };
            sets.describe(video.codec, &mut info)?;
            CodecConfig::LengthPrefixed {
                length_size,
                parameter_sets: sets.annexb(),
            }
        }
        Codec::Vp9 => {
            let first = packets.iter().find(|p| p.keyframe).unwrap_or(&packets[0]);
            let data = src.read_vec(first.offset, first.size.into())?;
            let frames = vp9::superframe_frames(&data);
            let frame = frames
                .first()
                .ok_or_else(|| malformed("empty VP9 key frame"))?;
            if let Some(k) = vp9::parse_key_frame(frame)? {
                info.profile = Some(k.profile);
                info.bit_depth = k.bit_depth as u8;
                info.chroma = k.chroma;
                info.color = info.color.or(ColorInfo {
                    matrix: k.h273_matrix(),
                    full_range: Some(k.full_range),
                    ..ColorInfo::default()
                });
            }
            CodecConfig::Vp9
        }
        Codec::Av1 => {
            let private = video
                .private
                .ok_or_else(|| malformed("AV1 track without CodecPrivate"))?;
            let record = av1::ConfigRecord::parse(&private)?;
            info.profile = Some(record.profile);
            info.level = Some(record.level);
            info.bit_depth = record.bit_depth;
            info.chroma = record.chroma;
            CodecConfig::Av1 {
                config_record: private,
            }
        }
    };
    Ok(Demuxed {
        info,
        packets,
        config,
    })
}
