//! The decode-only unit of work of `reel bench`: every frame of a video decoded on one
//! session and copied into a device buffer, as a decoder-to-tensor API does.

use std::ffi::c_void;

use cudarc::driver::{CudaSlice, DevicePtrMut};

use super::{driver, Gpu};
use crate::decode::nvdec::{Picture, Session};
use crate::decode::Wanted;
use crate::pipeline::check_packets;
use crate::{Result, Video};

impl Gpu {
    /// Decodes every frame of `video` on one session and copies each picture into a
    /// device buffer, as a decoder-to-tensor API does: the throughput benchmark's unit
    /// of work. Returns the number of pictures.
    pub fn decode_all_to_device(&self, video: &Video) -> Result<usize> {
        check_readable_frames(video, &[video.index().len() - 1])?;
        self.ctx.bind_to_thread().map_err(driver)?;
        let stream = self.ctx.new_stream().map_err(driver)?;
        let all: Vec<usize> = (0..video.index().len()).collect();
        let wanted = Wanted::new(video, &all);
        let (w, h) = (video.info().width as usize, video.info().height as usize);
        let bytes_per_sample = if video.info().bit_depth > 8 { 2 } else { 1 };
        let mut frame: CudaSlice<u8> = stream
            .alloc_zeros(w * h * 3 * bytes_per_sample)
            .map_err(driver)?;
        let mut pictures = 0;
        let mut on_picture = |p: &Picture| -> Result<()> {
            let (dst, _guard) = frame.device_ptr_mut(&stream);
            let luma = u64::from(p.pitch) * u64::from(p.height);
            let chroma = if p.format.is_420() {
                luma / 2
            } else {
                2 * luma
            };
            // A pitched surface is copied whole (a little more than the packed planes).
            let len = (luma + chroma).min(frame_len(w, h, bytes_per_sample));
            // SAFETY: `p.devptr` is the NVDEC surface mapped for this callback (pitch ×
            // height luma rows, then the chroma rows: at least luma + chroma ≥ `len`
            // bytes), in this GPU's context, current on this thread; `dst` is `frame`,
            // allocated on `stream` with frame_len(w, h, ..) ≥ `len` bytes and borrowed
            // (`_guard`) until the copy is synchronized below, before the surface is
            // unmapped when this callback returns.
            unsafe {
                cudarc::driver::result::memcpy_dtod_async(
                    dst,
                    p.devptr,
                    len as usize,
                    stream.cu_stream(),
                )
            }
            .map_err(driver)?;
            stream.synchronize().map_err(driver)?;
            pictures += 1;
            Ok(())
        };
        let mut session = Session::new(
            &self.pool,
            video.info().codec,
            stream.cu_stream() as *mut c_void,
            &wanted,
            &mut on_picture,
        )?;
        decode_packets(&mut session, video, 0..video.index().len())?;
        drop(session);
        Ok(pictures)
    }
}

/// Sends `packets` to `session` in order, every one of them, and flushes it.
fn decode_packets(
    session: &mut Session<'_>,
    video: &Video,
    packets: std::ops::Range<usize>,
) -> Result<()> {
    let (mut scratch, mut data) = (Vec::new(), Vec::new());
    for p in packets {
        video.decoder_packet(p, &mut scratch, &mut data)?;
        session.decode(&data, video.index().packets()[p].pts)?;
    }
    session.finish()
}

fn frame_len(w: usize, h: usize, bytes_per_sample: usize) -> u64 {
    (w * h * 3 * bytes_per_sample) as u64
}

/// Fails when the packet of one of `frames` lies past the end of a truncated file.
fn check_readable_frames(video: &Video, frames: &[usize]) -> Result<()> {
    check_packets(video, frames.iter().map(|&f| video.index().frame_packet(f)))
}
