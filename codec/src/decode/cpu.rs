//! Software decoding with FFmpeg's libavcodec (cargo feature `ffmpeg`).
//!
//! reel's own demuxers supply the packets (Annex-B for H.264/HEVC), so the CPU and
//! GPU paths decode exactly the same bytes and number frames the same way.

use std::sync::Once;

use ff::format::Pixel;
use ffmpeg_next as ff;

use super::{DecodeReport, DecodedFrame, Disposability, Wanted};
use crate::demux::CodecConfig;
use crate::plan::DecodeRange;
use crate::preprocess::{YuvImage, YuvSamples};
use crate::stream::{Chroma, Codec};
use crate::{Cancel, Error, Result, Video};

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Errors are reported per frame; keep libav's own logging quiet.
        ff::util::log::set_level(ff::util::log::Level::Fatal);
        let _ = ff::init();
    });
}

fn codec_id(codec: Codec) -> ff::codec::Id {
    match codec {
        Codec::H264 => ff::codec::Id::H264,
        Codec::Hevc => ff::codec::Id::HEVC,
        Codec::Vp9 => ff::codec::Id::VP9,
        Codec::Av1 => ff::codec::Id::AV1,
    }
}

/// True when this build's FFmpeg can decode `codec`.
pub fn supports(codec: Codec) -> bool {
    init();
    ff::codec::decoder::find(codec_id(codec)).is_some()
}

fn open_decoder(video: &Video, threads: usize) -> Result<ff::decoder::Video> {
    init();
    let codec = video.info().codec;
    let found = ff::codec::decoder::find(codec_id(codec)).ok_or_else(|| {
        Error::DecoderUnavailable(format!("this FFmpeg build has no {codec} decoder"))
    })?;
    let mut ctx = ff::codec::Context::new_with_codec(found);
    ctx.set_threading(ff::codec::threading::Config {
        kind: if threads > 1 {
            ff::codec::threading::Type::Frame
        } else {
            ff::codec::threading::Type::None
        },
        count: threads.max(1),
        ..Default::default()
    });
    if codec == Codec::H264 {
        // libavcodec's H.264 decoder withholds pictures it does not mark "recovered".
        // A range starting at an open-GOP I picture (recovery point SEI) recovers when
        // that picture is output; pictures decoded between it and its output get the
        // mark when they are output in turn, but older libavcodec (5.x) forgets to
        // propagate it in the end-of-stream flush. There such a picture yields no
        // frame, which the send/receive drain takes for the end of the stream, losing
        // it and every picture delayed behind it: typically a range's last (planned)
        // frame. Outputting unrecovered pictures is safe here: a range starts at a key
        // frame and holds every reference its planned frames need (the previous GOP
        // for leading pictures), and in normal output order one output before its
        // recovery point carries AV_FRAME_FLAG_CORRUPT. A fresh context has no flags.
        ctx.set_flags(ff::codec::Flags::OUTPUT_CORRUPT);
    }
    if let CodecConfig::Av1 { config_record } = video.config() {
        set_extradata(&mut ctx, config_record);
    }
    ctx.decoder()
        .video()
        .map_err(|e| Error::DecoderUnavailable(format!("cannot open the {codec} decoder: {e}")))
}

fn set_extradata(ctx: &mut ff::codec::Context, data: &[u8]) {
    let padding = ff::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    // SAFETY: FFI boundary. The buffer comes from av_mallocz with the padding libavcodec
    // requires and becomes owned by the codec context, which frees it.
    unsafe {
        let buf = ff::ffi::av_mallocz(data.len() + padding) as *mut u8;
        if buf.is_null() {
            return;
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
        let raw = ctx.as_mut_ptr();
        (*raw).extradata = buf;
        (*raw).extradata_size = data.len() as i32;
    }
}

/// Planar layout of a libav pixel format: (chroma, 16-bit samples, full range).
fn layout(format: Pixel) -> Option<(Chroma, bool, Option<bool>)> {
    Some(match format {
        Pixel::YUV420P => (Chroma::Yuv420, false, None),
        Pixel::YUVJ420P => (Chroma::Yuv420, false, Some(true)),
        Pixel::YUV422P => (Chroma::Yuv422, false, None),
        Pixel::YUVJ422P => (Chroma::Yuv422, false, Some(true)),
        Pixel::YUV444P => (Chroma::Yuv444, false, None),
        Pixel::YUVJ444P => (Chroma::Yuv444, false, Some(true)),
        Pixel::GRAY8 => (Chroma::Monochrome, false, None),
        Pixel::YUV420P10LE | Pixel::YUV420P12LE => (Chroma::Yuv420, true, None),
        Pixel::YUV422P10LE | Pixel::YUV422P12LE => (Chroma::Yuv422, true, None),
        Pixel::YUV444P10LE | Pixel::YUV444P12LE => (Chroma::Yuv444, true, None),
        Pixel::GRAY10LE | Pixel::GRAY12LE => (Chroma::Monochrome, true, None),
        _ => return None,
    })
}

/// Decodes `range` of `video` on one libavcodec decoder, calling `deliver` with every
/// wanted frame. Decoder errors are collected in the report; decoding goes on.
pub fn decode_range(
    video: &Video,
    range: &DecodeRange,
    wanted: &Wanted,
    threads: usize,
    cancel: &Cancel,
    deliver: &mut dyn FnMut(DecodedFrame),
) -> Result<DecodeReport> {
    let mut decoder = open_decoder(video, threads)?;
    let disposability = Disposability::for_video(video);
    let mut report = DecodeReport::default();
    let mut frame = ff::frame::Video::empty();
    let (mut scratch, mut data) = (Vec::new(), Vec::new());
    for p in range.packets.clone() {
        cancel.check()?;
        video.decoder_packet(p, &mut scratch, &mut data)?;
        if !wanted.wants_packet(video, p) && disposability.is_disposable(&data) {
            report.packets_skipped += 1;
            continue;
        }
        let packet_info = video.index().packets()[p];
        let mut packet = ff::Packet::copy(&data);
        packet.set_pts(Some(packet_info.pts));
        packet.set_dts(Some(packet_info.dts));
        if packet_info.keyframe {
            packet.set_flags(ff::codec::packet::Flags::KEY);
        }
        report.packets_decoded += 1;
        if let Err(e) = decoder.send_packet(&packet) {
            report.errors.push(format!("packet {p}: {e}"));
        }
        drain(
            &mut decoder,
            &mut frame,
            wanted,
            &mut report,
            deliver,
            false,
        )?;
    }
    if let Err(e) = decoder.send_eof() {
        report.errors.push(format!("flush: {e}"));
    }
    drain(&mut decoder, &mut frame, wanted, &mut report, deliver, true)?;
    Ok(report)
}

/// Hands every frame the decoder has ready to `deliver`. `flushing`: end of stream
/// was sent; then a decoder error ends only that picture, and draining goes on until
/// the decoder reports the end (libavcodec bounds errors while draining).
fn drain(
    decoder: &mut ff::decoder::Video,
    frame: &mut ff::frame::Video,
    wanted: &Wanted,
    report: &mut DecodeReport,
    deliver: &mut dyn FnMut(DecodedFrame),
    flushing: bool,
) -> Result<()> {
    const MAX_FLUSH_ERRORS: usize = 64;
    let mut flush_errors = 0;
    loop {
        match decoder.receive_frame(frame) {
            Ok(()) => {}
            Err(ff::Error::Eof) => return Ok(()),
            Err(ff::Error::Other { errno }) if errno == ff::util::error::EAGAIN => return Ok(()),
            Err(e) => {
                report.errors.push(format!("decoder: {e}"));
                flush_errors += 1;
                if !flushing || flush_errors >= MAX_FLUSH_ERRORS {
                    return Ok(());
                }
                continue;
            }
        }
        let Some(pts) = frame.pts().or_else(|| frame.timestamp()) else {
            continue;
        };
        let Some(index) = wanted.frame_for_pts(pts) else {
            continue;
        };
        let (chroma, wide, full_range) = layout(frame.format()).ok_or_else(|| {
            Error::Unsupported(format!("decoded pixel format {:?}", frame.format()))
        })?;
        // SAFETY: FFI boundary: reading two plain integer fields of the AVFrame that
        // `frame` owns and keeps alive for this call.
        let corrupt = unsafe {
            let raw = frame.as_ptr();
            (*raw).decode_error_flags != 0 || (*raw).flags & ff::ffi::AV_FRAME_FLAG_CORRUPT != 0
        };
        let planes = if chroma == Chroma::Monochrome { 1 } else { 3 };
        let plane = |i: usize| {
            if i < planes {
                frame.data(i)
            } else {
                frame.data(0)
            }
        };
        let stride = |i: usize| {
            if i < planes {
                frame.stride(i)
            } else {
                frame.stride(0)
            }
        };
        let samples = [plane(0), plane(1), plane(2)];
        let image = YuvImage {
            width: frame.width() as usize,
            height: frame.height() as usize,
            chroma,
            samples: if wide {
                YuvSamples::U16(samples)
            } else {
                YuvSamples::U8(samples)
            },
            strides: [stride(0), stride(1), stride(2)],
        };
        let full_range = full_range.or_else(|| match frame.color_range() {
            ff::util::color::Range::JPEG => Some(true),
            ff::util::color::Range::MPEG => Some(false),
            _ => None,
        });
        report.frames_delivered += 1;
        if corrupt {
            report.corrupt_frames.push(index);
        }
        deliver(DecodedFrame {
            frame: index,
            image,
            corrupt,
            full_range,
        });
    }
}
