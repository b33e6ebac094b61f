//! ISO base media files: MP4 and QuickTime MOV, progressive or fragmented.
//!
//! Only box headers, `moov` and `moof` are read; sample payloads stay on disk. Every
//! count and size is checked against the bytes that hold it before anything is
//! allocated, so a corrupt table cannot make reel allocate gigabytes.

use super::cursor::Cursor;
use super::{checked, records, CodecConfig, Demuxed};
use crate::bitstream::{av1, nal};
use crate::source::Source;
use crate::stream::{Chroma, Codec, ColorInfo, Packet, Rational, Rotation, StreamInfo};
use crate::{Error, Result};

const NAME: &str = "mp4";
/// Largest `moov` or `moof` reel reads into memory.
const MAX_HEADER_BOX: u64 = 512 << 20;
/// Most samples a track may have (about 155 hours at 30 fps).
const MAX_SAMPLES: u64 = 1 << 24;
/// Most top-level boxes walked (fragmented files have two per fragment).
const MAX_TOP_LEVEL_BOXES: usize = 1 << 20;

type FourCc = [u8; 4];

fn malformed(reason: impl Into<String>) -> Error {
    Error::malformed(NAME, reason)
}

fn fourcc_str(f: &FourCc) -> String {
    f.iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

/// True when the first bytes look like an ISO BMFF file.
pub(crate) fn sniff(head: &[u8]) -> bool {
    head.len() >= 8
        && matches!(
            &head[4..8],
            b"ftyp"
                | b"moov"
                | b"mdat"
                | b"free"
                | b"skip"
                | b"wide"
                | b"styp"
                | b"moof"
                | b"sidx"
                | b"pnot"
        )
}

/// Iterates the child boxes inside an in-memory box payload.
fn children(data: &[u8]) -> impl Iterator<Item = Result<(FourCc, &[u8])>> {
    let mut pos = 0usize;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || pos + 8 > data.len() {
            return None;
        }
        let result = (|| {
            let size32 = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as u64;
            let kind: FourCc = data[pos + 4..pos + 8].try_into().unwrap();
            let (header, size) = match size32 {
                0 => (8, (data.len() - pos) as u64),
                1 => {
                    let large = data.get(pos + 8..pos + 16).ok_or_else(|| {
                        malformed(format!("box '{}' header is cut", fourcc_str(&kind)))
                    })?;
                    (16, u64::from_be_bytes(large.try_into().unwrap()))
                }
                s => (8, s),
            };
            if size < header as u64 || size > (data.len() - pos) as u64 {
                return Err(malformed(format!(
                    "box '{}' claims {size} bytes but its parent has {} left",
                    fourcc_str(&kind),
                    data.len() - pos
                )));
            }
            let payload = &data[pos + header..pos + size as usize];
            pos += size as usize;
            Ok((kind, payload))
        })();
        failed = result.is_err();
        Some(result)
    })
}

/// The first child of the given type.
fn child<'a>(data: &'a [u8], kind: &FourCc) -> Result<Option<&'a [u8]>> {
    for entry in children(data) {
        let (k, payload) = entry?;
        if &k == kind {
            return Ok(Some(payload));
        }
    }
    Ok(None)
}

/// Follows a path of box types.
fn descend<'a>(data: &'a [u8], path: &[&FourCc]) -> Result<Option<&'a [u8]>> {
    let mut current = data;
    for kind in path {
        match child(current, kind)? {
            Some(next) => current = next,
            None => return Ok(None),
        }
    }
    Ok(Some(current))
}

/// A top-level box located in the source.
struct TopBox {
    kind: FourCc,
    /// Offset of the box header.
    offset: u64,
    payload_offset: u64,
    payload_len: u64,
}

fn top_level_boxes(src: &Source) -> Result<Vec<TopBox>> {
    let mut boxes = Vec::new();
    let mut pos = 0u64;
    let len = src.len();
    while pos + 8 <= len {
        if boxes.len() >= MAX_TOP_LEVEL_BOXES {
            return Err(malformed("too many top-level boxes"));
        }
        let mut head = [0u8; 16];
        let avail = (len - pos).min(16) as usize;
        src.read_exact_at(pos, &mut head[..avail])?;
        let size32 = u32::from_be_bytes(head[0..4].try_into().unwrap()) as u64;
        let kind: FourCc = head[4..8].try_into().unwrap();
        let (header, size) = match size32 {
            0 => (8, len - pos),
            1 if avail >= 16 => (16, u64::from_be_bytes(head[8..16].try_into().unwrap())),
            1 => return Err(malformed("truncated 64-bit box header")),
            s => (8, s),
        };
        if size < header {
            return Err(malformed(format!(
                "top-level box '{}' has impossible size {size}",
                fourcc_str(&kind)
            )));
        }
        // A box running past the end of the file is kept (truncated mdat) but ends the walk.
        let end = pos.saturating_add(size);
        boxes.push(TopBox {
            kind,
            offset: pos,
            payload_offset: pos + header,
            payload_len: end.min(len) - (pos + header).min(len),
        });
        if end >= len {
            break;
        }
        pos = end;
    }
    Ok(boxes)
}

fn read_box(src: &Source, b: &TopBox) -> Result<Vec<u8>> {
    if b.payload_len > MAX_HEADER_BOX {
        return Err(malformed(format!(
            "'{}' box of {} bytes exceeds the {} MiB limit",
            fourcc_str(&b.kind),
            b.payload_len,
            MAX_HEADER_BOX >> 20
        )));
    }
    src.read_vec(b.payload_offset, b.payload_len)
}

/// The sample entry of a video track.
struct SampleEntry {
    codec: Codec,
    width: u32,
    height: u32,
    config: Option<Vec<u8>>,
    color: ColorInfo,
}

struct Track {
    track_id: u32,
    index: u32,
    timescale: u32,
    rotation: Rotation,
    entry: Option<SampleEntry>,
    /// Fourcc of an unsupported video sample entry, for the error message.
    unsupported: Option<String>,
    media_time: i64,
    packets: Vec<Packet>,
    /// Durations of the samples in `packets`, for the stream duration.
    durations: Vec<u32>,
    trex: TrackDefaults,
}

#[derive(Clone, Copy, Default)]
struct TrackDefaults {
    duration: u32,
    size: u32,
    flags: u32,
}

pub(crate) fn demux(src: &Source) -> Result<Demuxed> {
    let boxes = top_level_boxes(src)?;
    let moov = boxes
        .iter()
        .find(|b| &b.kind == b"moov")
        .ok_or_else(|| malformed("no 'moov' box (truncated file or not a finished recording)"))?;
    let moov = read_box(src, moov)?;
    let mut tracks = parse_moov(&moov, src.len())?;
    let track = tracks
        .iter()
        .position(|t| t.entry.is_some())
        .ok_or_else(|| match tracks.iter().find_map(|t| t.unsupported.clone()) {
            Some(kind) => Error::UnsupportedCodec(format!("MP4 sample entry '{kind}'")),
            None => Error::NoVideoTrack,
        })?;
    let track = &mut tracks[track];
    for b in boxes.iter().filter(|b| &b.kind == b"moof") {
        let moof = read_box(src, b)?;
        parse_moof(&moof, b.offset, src.len(), track)?;
    }
    if track.packets.is_empty() {
        return Err(malformed("the video track has no samples"));
    }
    finish(src, track)
}

fn parse_moov(moov: &[u8], file_len: u64) -> Result<Vec<Track>> {
    let mut trex = Vec::new();
    if let Some(mvex) = child(moov, b"mvex")? {
        for entry in children(mvex) {
            let (kind, payload) = entry?;
            if &kind == b"trex" {
                let mut c = Cursor::new(payload, NAME, "trex");
                c.skip(4)?;
                let id = c.u32()?;
                c.skip(4)?; // default_sample_description_index
                trex.push((
                    id,
                    TrackDefaults {
                        duration: c.u32()?,
                        size: c.u32()?,
                        flags: c.u32()?,
                    },
                ));
            }
        }
    }
    let mut tracks = Vec::new();
    let mut index = 0;
    for entry in children(moov) {
        let (kind, trak) = entry?;
        if &kind != b"trak" {
            continue;
        }
        let this_index = index;
        index += 1;
        let handler = descend(trak, &[b"mdia", b"hdlr"])?
            .map(|h| {
                Cursor::new(h, NAME, "hdlr")
                    .bytes(12)
                    .map(|b| <[u8; 4]>::try_from(&b[8..12]).unwrap())
            })
            .transpose()?;
        if handler != Some(*b"vide") {
            continue;
        }
        let (track_id, rotation) = parse_tkhd(
            child(trak, b"tkhd")?.ok_or_else(|| malformed("video track without 'tkhd'"))?,
        )?;
        let mdhd = descend(trak, &[b"mdia", b"mdhd"])?
            .ok_or_else(|| malformed("video track without 'mdhd'"))?;
        let timescale = parse_mdhd_timescale(mdhd)?;
        let stbl = descend(trak, &[b"mdia", b"minf", b"stbl"])?
            .ok_or_else(|| malformed("video track without 'stbl'"))?;
        let stsd = child(stbl, b"stsd")?.ok_or_else(|| malformed("video track without 'stsd'"))?;
        let (entry, unsupported) = parse_stsd(stsd)?;
        let media_time = match descend(trak, &[b"edts", b"elst"])? {
            Some(elst) => parse_elst_media_time(elst)?,
            None => 0,
        };
        let mut track = Track {
            track_id,
            index: this_index,
            timescale,
            rotation,
            entry,
            unsupported,
            media_time,
            packets: Vec::new(),
            durations: Vec::new(),
            trex: trex
                .iter()
                .find(|(id, _)| *id == track_id)
                .map(|(_, d)| *d)
                .unwrap_or_default(),
        };
        if track.entry.is_some() {
            parse_sample_table(stbl, file_len, &mut track)?;
        }
        tracks.push(track);
    }
    Ok(tracks)
}

fn parse_tkhd(tkhd: &[u8]) -> Result<(u32, Rotation)> {
    let mut c = Cursor::new(tkhd, NAME, "tkhd");
    let version = c.u8()?;
    c.skip(3)?;
    let time_len = if version == 1 { 8 } else { 4 };
    c.skip(2 * time_len)?;
    let track_id = c.u32()?;
    c.skip(4 + time_len + 8 + 8)?; // reserved, duration, reserved, layer..volume
    let a = c.i32()?;
    let b = c.i32()?;
    // Clockwise rotation for display: atan2(b, a) of the 16.16 matrix, the angle
    // FFmpeg's autorotate applies (the negated av_display_rotation_get).
    let degrees = f64::from(b).atan2(f64::from(a)).to_degrees().round() as i64;
    let rotation = match degrees.rem_euclid(360) {
        90 => Rotation::Cw90,
        180 => Rotation::Cw180,
        270 => Rotation::Cw270,
        _ => Rotation::None,
    };
    Ok((track_id, rotation))
}

fn parse_mdhd_timescale(mdhd: &[u8]) -> Result<u32> {
    let mut c = Cursor::new(mdhd, NAME, "mdhd");
    let version = c.u8()?;
    c.skip(3 + if version == 1 { 16 } else { 8 })?;
    let timescale = c.u32()?;
    if timescale == 0 {
        return Err(malformed("track timescale is 0"));
    }
    Ok(timescale)
}

/// Media time of the first non-empty edit: FFmpeg shifts timestamps by it so that
/// presentation starts at 0 (B-frame streams start with a composition offset).
fn parse_elst_media_time(elst: &[u8]) -> Result<i64> {
    let mut c = Cursor::new(elst, NAME, "elst");
    let version = c.u8()?;
    c.skip(3)?;
    let count = c.u32()?;
    let entry_len = if version == 1 { 20 } else { 12 };
    let count = c.expect_entries(count.into(), entry_len)?;
    for _ in 0..count {
        let (_duration, media_time) = if version == 1 {
            (c.u64()?, c.u64()? as i64)
        } else {
            (u64::from(c.u32()?), i64::from(c.i32()?))
        };
        c.skip(4)?; // rate
        if media_time >= 0 {
            return Ok(media_time);
        }
    }
    Ok(0)
}

fn parse_stsd(stsd: &[u8]) -> Result<(Option<SampleEntry>, Option<String>)> {
    let mut c = Cursor::new(stsd, NAME, "stsd");
    c.skip(8)?; // version/flags, entry_count
    let Some(first) = children(c.rest()).next() else {
        return Err(malformed("'stsd' has no sample entry"));
    };
    let (kind, payload) = first?;
    let codec = match &kind {
        b"avc1" | b"avc3" => Codec::H264,
        b"hvc1" | b"hev1" => Codec::Hevc,
        b"vp09" => Codec::Vp9,
        b"av01" => Codec::Av1,
        other => return Ok((None, Some(fourcc_str(other)))),
    };
    let mut c = Cursor::new(payload, NAME, "visual sample entry");
    c.skip(6 + 2 + 16)?;
    let width = u32::from(c.u16()?);
    let height = u32::from(c.u16()?);
    c.skip(4 + 4 + 4 + 2 + 32 + 2 + 2)?;
    let mut config = None;
    let mut color = ColorInfo::default();
    let config_kind: &FourCc = match codec {
        Codec::H264 => b"avcC",
        Codec::Hevc => b"hvcC",
        Codec::Vp9 => b"vpcC",
        Codec::Av1 => b"av1C",
    };
    for entry in children(c.rest()) {
        let (kind, payload) = entry?;
        if &kind == config_kind {
            config = Some(payload.to_vec());
        } else if &kind == b"colr" {
            color = parse_colr(payload)?.unwrap_or(color);
        }
    }
    Ok((
        Some(SampleEntry {
            codec,
            width,
            height,
            config,
            color,
        }),
        None,
    ))
}

fn parse_colr(colr: &[u8]) -> Result<Option<ColorInfo>> {
    let mut c = Cursor::new(colr, NAME, "colr");
    let kind = c.bytes(4)?;
    if kind != b"nclx" && kind != b"nclc" {
        return Ok(None); // ICC profiles say nothing reel uses
    }
    let primaries = c.u16()?;
    let transfer = c.u16()?;
    let matrix = c.u16()?;
    let full_range = if kind == b"nclx" {
        Some(c.u8()? & 0x80 != 0)
    } else {
        None
    };
    let specified = |v: u16| (v != 2).then_some(u32::from(v));
    Ok(Some(ColorInfo {
        matrix: specified(matrix),
        primaries: specified(primaries),
        transfer: specified(transfer),
        full_range,
        chroma_location: None,
    }))
}

/// Expands stsz/stco/stsc/stts/ctts/stss into packets.
fn parse_sample_table(stbl: &[u8], file_len: u64, track: &mut Track) -> Result<()> {
    let sizes = match (child(stbl, b"stsz")?, child(stbl, b"stz2")?) {
        (Some(stsz), _) => parse_stsz(stsz, file_len)?,
        (None, Some(stz2)) => parse_stz2(stz2)?,
        (None, None) => return Err(malformed("no sample size table")),
    };
    let count = sizes.len();
    if count == 0 {
        return Ok(()); // a fragmented file's moov: samples come from moof boxes
    }
    let chunk_offsets = match (child(stbl, b"stco")?, child(stbl, b"co64")?) {
        (Some(stco), _) => parse_chunk_offsets(stco, false)?,
        (None, Some(co64)) => parse_chunk_offsets(co64, true)?,
        (None, None) => return Err(malformed("no chunk offset table")),
    };
    let stsc = child(stbl, b"stsc")?.ok_or_else(|| malformed("no sample-to-chunk table"))?;
    let offsets = sample_offsets(stsc, &chunk_offsets, &sizes)?;
    let durations = expand_runs(
        child(stbl, b"stts")?.ok_or_else(|| malformed("no time-to-sample table"))?,
        "stts",
        count,
    )?;
    let composition = match child(stbl, b"ctts")? {
        Some(ctts) => expand_runs(ctts, "ctts", count)?,
        None => vec![0; count],
    };
    let sync = match child(stbl, b"stss")? {
        Some(stss) => Some(parse_stss(stss, count)?),
        None => None,
    };
    let mut dts: i64 = 0;
    track.packets.reserve(count);
    for i in 0..count {
        // ctts version 1 offsets are signed; version 0 ones written by real muxers
        // fit in i32 either way.
        let cts = i64::from(composition[i] as i32);
        track.packets.push(Packet {
            pts: checked(checked(dts, cts, NAME)?, -track.media_time, NAME)?,
            dts: checked(dts, -track.media_time, NAME)?,
            offset: offsets[i],
            size: sizes[i],
            keyframe: sync.as_ref().is_none_or(|s| s[i]),
        });
        dts = checked(dts, i64::from(durations[i]), NAME)?;
    }
    track.durations = durations;
    Ok(())
}

fn parse_stsz(stsz: &[u8], file_len: u64) -> Result<Vec<u32>> {
    let mut c = Cursor::new(stsz, NAME, "stsz");
    c.skip(4)?;
    let constant = c.u32()?;
    let count = u64::from(c.u32()?);
    if count > MAX_SAMPLES {
        return Err(malformed(format!(
            "{count} samples exceed the limit of {MAX_SAMPLES}"
        )));
    }
    if constant != 0 {
        // A constant size needs no table: bound the count by what the file can hold.
        if count.saturating_mul(u64::from(constant)) > file_len.saturating_mul(2) {
            return Err(malformed(format!(
                "{count} samples of {constant} bytes cannot fit in a {file_len}-byte file"
            )));
        }
        return Ok(vec![constant; count as usize]);
    }
    let count = c.expect_entries(count, 4)?;
    (0..count).map(|_| c.u32()).collect()
}

fn parse_stz2(stz2: &[u8]) -> Result<Vec<u32>> {
    let mut c = Cursor::new(stz2, NAME, "stz2");
    c.skip(4 + 3)?;
    let field_size = c.u8()?;
    let count = u64::from(c.u32()?);
    match field_size {
        4 => {
            let bytes = c.expect_entries(count.div_ceil(2), 1)?;
            let raw = c.bytes(bytes)?;
            Ok((0..count as usize)
                .map(|i| {
                    u32::from(if i % 2 == 0 {
                        raw[i / 2] >> 4
                    } else {
                        raw[i / 2] & 15
                    })
                })
                .collect())
        }
        8 => {
            let n = c.expect_entries(count, 1)?;
            Ok(c.bytes(n)?.iter().map(|&b| u32::from(b)).collect())
        }
        16 => {
            let n = c.expect_entries(count, 2)?;
            (0..n).map(|_| c.u16().map(u32::from)).collect()
        }
        other => Err(malformed(format!("stz2 field size {other}"))),
    }
}

fn parse_chunk_offsets(data: &[u8], wide: bool) -> Result<Vec<u64>> {
    let mut c = Cursor::new(data, NAME, if wide { "co64" } else { "stco" });
    c.skip(4)?;
    let count = c.u32()?;
    let count = c.expect_entries(count.into(), if wide { 8 } else { 4 })?;
    (0..count)
        .map(|_| {
            if wide {
                c.u64()
            } else {
                c.u32().map(u64::from)
            }
        })
        .collect()
}

fn sample_offsets(stsc: &[u8], chunks: &[u64], sizes: &[u32]) -> Result<Vec<u64>> {
    let mut c = Cursor::new(stsc, NAME, "stsc");
    c.skip(4)?;
    let count = c.u32()?;
    let count = c.expect_entries(count.into(), 12)?;
    let mut runs = Vec::with_capacity(count);
    for _ in 0..count {
        let first_chunk = c.u32()?;
        let per_chunk = c.u32()?;
        c.skip(4)?;
        if first_chunk == 0 || runs.last().is_some_and(|&(prev, _)| first_chunk <= prev) {
            return Err(malformed("sample-to-chunk runs out of order"));
        }
        runs.push((first_chunk, per_chunk));
    }
    let mut offsets = Vec::with_capacity(sizes.len());
    let mut sample = 0usize;
    for (i, &(first_chunk, per_chunk)) in runs.iter().enumerate() {
        let last_chunk = runs
            .get(i + 1)
            .map_or(chunks.len() as u64, |&(next, _)| u64::from(next) - 1);
        for chunk in u64::from(first_chunk)..=last_chunk {
            let Some(&chunk_offset) = chunks.get(chunk as usize - 1) else {
                return Err(malformed("sample-to-chunk refers to a missing chunk"));
            };
            let mut offset = chunk_offset;
            for _ in 0..per_chunk {
                if sample == sizes.len() {
                    return Ok(offsets);
                }
                offsets.push(offset);
                offset = offset
                    .checked_add(u64::from(sizes[sample]))
                    .ok_or_else(|| malformed("chunk offsets overflow"))?;
                sample += 1;
            }
        }
    }
    if offsets.len() != sizes.len() {
        return Err(malformed(format!(
            "chunks hold {} samples but the size table has {}",
            offsets.len(),
            sizes.len()
        )));
    }
    Ok(offsets)
}

/// Expands (count, value) runs of stts/ctts to one value per sample. Missing entries
/// repeat the last value; extra ones are ignored (both occur in real files).
fn expand_runs(data: &[u8], what: &'static str, samples: usize) -> Result<Vec<u32>> {
    let mut c = Cursor::new(data, NAME, what);
    c.skip(4)?;
    let count = c.u32()?;
    let count = c.expect_entries(count.into(), 8)?;
    let mut out = Vec::with_capacity(samples);
    let mut last = 0;
    for _ in 0..count {
        let run = c.u32()? as usize;
        last = c.u32()?;
        let take = run.min(samples - out.len());
        out.extend(std::iter::repeat_n(last, take));
        if out.len() == samples {
            break;
        }
    }
    out.resize(samples, last);
    Ok(out)
}

fn parse_stss(stss: &[u8], samples: usize) -> Result<Vec<bool>> {
    let mut c = Cursor::new(stss, NAME, "stss");
    c.skip(4)?;
    let count = c.u32()?;
    let count = c.expect_entries(count.into(), 4)?;
    let mut sync = vec![false; samples];
    for _ in 0..count {
        let n = c.u32()? as usize;
        if n >= 1 && n <= samples {
            sync[n - 1] = true;
        }
    }
    Ok(sync)
}

fn parse_moof(moof: &[u8], moof_offset: u64, file_len: u64, track: &mut Track) -> Result<()> {
    for entry in children(moof) {
        let (kind, traf) = entry?;
        if &kind != b"traf" {
            continue;
        }
        let tfhd = child(traf, b"tfhd")?.ok_or_else(|| malformed("'traf' without 'tfhd'"))?;
        let mut c = Cursor::new(tfhd, NAME, "tfhd");
        let flags = c.u32()? & 0xff_ffff;
        if c.u32()? != track.track_id {
            continue;
        }
        let mut base = moof_offset;
        if flags & 0x01 != 0 {
            base = c.u64()?;
        }
        if flags & 0x02 != 0 {
            c.skip(4)?;
        }
        let mut defaults = track.trex;
        if flags & 0x08 != 0 {
            defaults.duration = c.u32()?;
        }
        if flags & 0x10 != 0 {
            defaults.size = c.u32()?;
        }
        if flags & 0x20 != 0 {
            defaults.flags = c.u32()?;
        }
        let mut dts = match child(traf, b"tfdt")? {
            Some(tfdt) => {
                let mut c = Cursor::new(tfdt, NAME, "tfdt");
                let version = c.u8()?;
                c.skip(3)?;
                let t = if version == 1 {
                    c.u64()?
                } else {
                    u64::from(c.u32()?)
                };
                i64::try_from(t).map_err(|_| malformed("tfdt decode time overflows"))?
            }
            None => next_dts(track)?,
        };
        let mut data_offset = base;
        for entry in children(traf) {
            let (kind, trun) = entry?;
            if &kind != b"trun" {
                continue;
            }
            parse_trun(
                trun,
                file_len,
                base,
                &mut data_offset,
                &mut dts,
                defaults,
                track,
            )?;
        }
    }
    Ok(())
}

fn next_dts(track: &Track) -> Result<i64> {
    match (track.packets.last(), track.durations.last()) {
        (Some(p), Some(&d)) => checked(checked(p.dts, track.media_time, NAME)?, i64::from(d), NAME),
        _ => Ok(0),
    }
}

fn parse_trun(
    trun: &[u8],
    file_len: u64,
    base: u64,
    data_offset: &mut u64,
    dts: &mut i64,
    defaults: TrackDefaults,
    track: &mut Track,
) -> Result<()> {
    let mut c = Cursor::new(trun, NAME, "trun");
    let version = c.u8()?;
    let flags = c.u24()?;
    let count = c.u32()?;
    if flags & 0x01 != 0 {
        *data_offset = base
            .checked_add_signed(i64::from(c.i32()?))
            .ok_or_else(|| malformed("trun data offset before the file start"))?;
    }
    let first_flags = if flags & 0x04 != 0 {
        Some(c.u32()?)
    } else {
        None
    };
    let per_sample = [0x100, 0x200, 0x400, 0x800]
        .iter()
        .filter(|&&f| flags & f != 0)
        .count()
        * 4;
    let count = if per_sample > 0 {
        c.expect_entries(count.into(), per_sample)?
    } else {
        // No table bounds the count: the samples' bytes must fit in the file.
        let min_size = u64::from(defaults.size.max(1));
        if u64::from(count).saturating_mul(min_size) > file_len.saturating_mul(2) {
            return Err(malformed(format!(
                "trun claims {count} samples of {min_size} bytes in a {file_len}-byte file"
            )));
        }
        count as usize
    };
    if track.packets.len() + count > MAX_SAMPLES as usize {
        return Err(malformed("too many samples in fragments"));
    }
    for i in 0..count {
        let duration = if flags & 0x100 != 0 {
            c.u32()?
        } else {
            defaults.duration
        };
        let size = if flags & 0x200 != 0 {
            c.u32()?
        } else {
            defaults.size
        };
        let sample_flags = if flags & 0x400 != 0 {
            c.u32()?
        } else if i == 0 {
            first_flags.unwrap_or(defaults.flags)
        } else {
            defaults.flags
        };
        let cts = if flags & 0x800 != 0 {
            let raw = c.u32()?;
            if version == 0 {
                i64::from(raw)
            } else {
                i64::from(raw as i32)
            }
        } else {
            0
        };
        track.packets.push(Packet {
            pts: checked(checked(*dts, cts, NAME)?, -track.media_time, NAME)?,
            dts: checked(*dts, -track.media_time, NAME)?,
            offset: *data_offset,
            size,
            keyframe: sample_flags & 0x1_0000 == 0,
        });
        track.durations.push(duration);
        *data_offset = data_offset
            .checked_add(u64::from(size))
            .ok_or_else(|| malformed("fragment data offsets overflow"))?;
        *dts = checked(*dts, i64::from(duration), NAME)?;
    }
    Ok(())
}

/// Builds stream info and decoder configuration for the chosen track.
fn finish(src: &Source, track: &mut Track) -> Result<Demuxed> {
    let entry = track.entry.take().expect("chosen track has a sample entry");
    let packets = std::mem::take(&mut track.packets);
    let config_bytes = entry.config.as_deref();
    let mut info = StreamInfo {
        codec: entry.codec,
        container: NAME,
        track_index: track.index,
        profile: None,
        level: None,
        bit_depth: 8,
        chroma: Chroma::Yuv420,
        coded_width: entry.width,
        coded_height: entry.height,
        width: entry.width,
        height: entry.height,
        crop_left: 0,
        crop_top: 0,
        rotation: track.rotation,
        color: entry.color,
        time_base: Rational::new(1, track.timescale),
        frame_rate: 0.0,
        duration: 0.0,
        frame_count: packets.len(),
    };
    let config = match entry.codec {
        Codec::H264 | Codec::Hevc => {
            let record = config_bytes.ok_or_else(|| {
                malformed(format!(
                    "{} track without its configuration box",
                    entry.codec
                ))
            })?;
            let (length_size, mut sets) = match entry.codec {
                Codec::H264 => records::avcc(record)?,
                _ => records::hvcc(record)?,
            };
            if sets.is_empty() {
                // avc3/hev1 may carry parameter sets only in-band: take them from the
                // first key frame.
                let first = packets.iter().find(|p| p.keyframe).unwrap_or(&packets[0]);
                let sample = src.read_vec(first.offset, first.size.into())?;
                for unit in nal::length_prefixed_units(&sample, length_size) {
                    let unit = unit.map_err(|e| Error::bitstream(entry.codec.name(), e))?;
                    sets.add(entry.codec, unit);
                }
            }
            sets.describe(entry.codec, &mut info)?;
            CodecConfig::LengthPrefixed {
                length_size,
                parameter_sets: sets.annexb(),
            }
        }
        Codec::Vp9 => {
            if let Some(vpcc) = config_bytes {
                apply_vpcc(vpcc, &mut info)?;
            }
            CodecConfig::Vp9
        }
        Codec::Av1 => {
            let av1c = config_bytes.ok_or_else(|| malformed("AV1 track without 'av1C'"))?;
            let record = av1::ConfigRecord::parse(av1c)?;
            info.profile = Some(record.profile);
            info.level = Some(record.level);
            info.bit_depth = record.bit_depth;
            info.chroma = record.chroma;
            CodecConfig::Av1 {
                config_record: av1c.to_vec(),
            }
        }
    };
    let duration_ticks: i64 = track.durations.iter().map(|&d| i64::from(d)).sum();
    info.duration = duration_ticks as f64 / f64::from(track.timescale);
    if info.duration > 0.0 {
        info.frame_rate = packets.len() as f64 / info.duration;
    }
    Ok(Demuxed {
        info,
        packets,
        config,
    })
}

fn apply_vpcc(vpcc: &[u8], info: &mut StreamInfo) -> Result<()> {
    let mut c = Cursor::new(vpcc, NAME, "vpcC");
    c.skip(4)?;
    info.profile = Some(c.u8()?.into());
    info.level = Some(c.u8()?.into());
    let packed = c.u8()?;
    info.bit_depth = packed >> 4;
    info.chroma = match (packed >> 1) & 7 {
        0 | 1 => Chroma::Yuv420,
        2 => Chroma::Yuv422,
        _ => Chroma::Yuv444,
    };
    let full_range = packed & 1 != 0;
    let primaries = c.u8()?;
    let transfer = c.u8()?;
    let matrix = c.u8()?;
    let specified = |v: u8| (v != 2).then_some(u32::from(v));
    info.color = info.color.or(ColorInfo {
        matrix: specified(matrix),
        primaries: specified(primaries),
        transfer: specified(transfer),
        full_range: Some(full_range),
        chroma_location: None,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_sizes_past_the_parent_are_errors() {
        // A child claiming 2 GB inside a 16-byte parent.
        let data = [
            0x7f, 0xff, 0xff, 0xff, b'f', b'r', b'e', b'e', 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let err = children(&data).next().unwrap().unwrap_err();
        assert!(err.to_string().contains("claims"), "{err}");
    }

    #[test]
    fn sample_runs_expand_and_pad() {
        // stts: version/flags, 2 entries: (3 × 512), (1 × 1024); asked for 5 samples.
        let mut data = vec![0, 0, 0, 0, 0, 0, 0, 2];
        data.extend([0, 0, 0, 3, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0, 4, 0]);
        assert_eq!(
            expand_runs(&data, "stts", 5).unwrap(),
            [512, 512, 512, 1024, 1024]
        );
    }

    #[test]
    fn huge_entry_counts_are_rejected_before_allocation() {
        // stco claiming 2^31 entries in 8 bytes.
        let data = [0, 0, 0, 0, 0x80, 0, 0, 0];
        assert!(parse_chunk_offsets(&data, false).is_err());
        // stsz with a constant size and 16M samples of 1 MB in a 1 KB file.
        let data = [0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0xff, 0, 0];
        assert!(parse_stsz(&data, 1024).is_err());
    }
}
