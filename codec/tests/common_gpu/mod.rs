//! GPU test helpers: decoding to packed planar YUV on the host, to check NVDEC's
//! pictures against FFmpeg's framemd5 and to run the CPU preprocessing on them. The
//! pipeline itself never copies pictures to the host, so this lives with the tests.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::driver::CudaStream;
use reel_codec::decode::nvdec::{Picture, Session};
use reel_codec::decode::{DecodeReport, Wanted};
use reel_codec::gpu::Gpu;
use reel_codec::{Error, Result, Video};

fn driver(e: cudarc::driver::DriverError) -> Error {
    Error::DecoderUnavailable(format!("CUDA: {e}"))
}

/// Decodes `frames` on one session of `gpu` and hands each to `f` as packed planar YUV
/// (the layout of FFmpeg's yuv420p / yuv420p10le / yuv444p frames, which `framemd5`
/// hashes) with its corrupt flag.
pub fn decode_yuv(
    gpu: &Gpu,
    video: &Video,
    frames: &[usize],
    f: &mut dyn FnMut(usize, Vec<u8>, bool),
) -> Result<DecodeReport> {
    check_readable_frames(video, frames)?;
    gpu.context().bind_to_thread().map_err(driver)?;
    let stream = gpu.context().new_stream().map_err(driver)?;
    let wanted = Wanted::new(video, frames);
    let ranges = reel_codec::plan::decode_ranges(video.index(), frames);
    let mut report = DecodeReport::default();
    let mut on_picture = |p: &Picture| -> Result<()> {
        let packed = download(&stream, p)?;
        report.frames_delivered += 1;
        if p.corrupt {
            report.corrupt_frames.push(p.frame);
        }
        f(p.frame, packed, p.corrupt);
        Ok(())
    };
    for range in &ranges {
        let mut session = Session::new(
            gpu.decoder_pool(),
            video.info().codec,
            stream.cu_stream() as *mut c_void,
            &wanted,
            &mut on_picture,
        )?;
        let (mut scratch, mut data) = (Vec::new(), Vec::new());
        for p in range.packets.clone() {
            video.decoder_packet(p, &mut scratch, &mut data)?;
            session.decode(&data, video.index().packets()[p].pts)?;
        }
        session.finish()?;
    }
    Ok(report)
}

/// Fails when the packet of one of `frames` lies past the end of a truncated file.
fn check_readable_frames(video: &Video, frames: &[usize]) -> Result<()> {
    let packets = frames.iter().map(|&f| video.index().frame_packet(f));
    reel_codec::pipeline::check_packets(video, packets)
}

/// Copies a mapped picture to the host and packs it as planar YUV without padding.
fn download(stream: &Arc<CudaStream>, p: &Picture) -> Result<Vec<u8>> {
    stream.synchronize().map_err(driver)?;
    let (w, h, pitch) = (p.width as usize, p.height as usize, p.pitch as usize);
    let chroma_rows = if p.format.is_420() {
        h.div_ceil(2)
    } else {
        2 * h
    };
    let total = p.chroma_offset() as usize + pitch * chroma_rows;
    let mut raw = vec![0u8; total];
    // SAFETY: `p.devptr` is the NVDEC surface mapped for the callback this runs in (it
    // stays mapped until the callback returns), in the GPU's context, current on this
    // thread; the surface holds `total` bytes (luma rows, then the chroma rows at
    // chroma_offset) and `raw` is a host buffer of exactly `total` bytes. The copy is
    // synchronous, so both outlive it.
    unsafe { cudarc::driver::result::memcpy_dtoh_sync(&mut raw, p.devptr) }.map_err(driver)?;
    let bps = if p.format.is_wide() { 2 } else { 1 };
    let shift = if p.format.is_wide() {
        16 - u32::from(p.bit_depth)
    } else {
        0
    };
    let mut out = Vec::with_capacity(w * h * 3 * bps);
    let mut push = |v: u16| {
        if bps == 2 {
            out.extend_from_slice(&(v >> shift).to_le_bytes());
        } else {
            out.push(v as u8);
        }
    };
    let at = |offset: usize, i: usize| -> u16 {
        if bps == 2 {
            u16::from_le_bytes([raw[offset + 2 * i], raw[offset + 2 * i + 1]])
        } else {
            u16::from(raw[offset + i])
        }
    };
    for y in 0..h {
        for x in 0..w {
            push(at(y * pitch, x));
        }
    }
    let chroma = p.chroma_offset() as usize;
    if p.format.is_420() {
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        for comp in 0..2 {
            for y in 0..ch {
                for x in 0..cw {
                    push(at(chroma + y * pitch, 2 * x + comp));
                }
            }
        }
    } else {
        for comp in 0..2 {
            for y in 0..h {
                for x in 0..w {
                    push(at(chroma + comp * pitch * h + y * pitch, x));
                }
            }
        }
    }
    Ok(out)
}
