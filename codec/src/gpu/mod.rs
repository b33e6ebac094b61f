//! The GPU path: NVDEC sessions decode GOP segments in parallel, on this GPU and on its
//! peers, and CUDA kernels turn each sampled picture into its slots of one preallocated
//! pixel-values tensor on this GPU (`job`: the workers; `convert`: the kernels; `peer`:
//! copies from other GPUs).

use std::ffi::c_void;
use std::ops::Range;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtrMut};

use crate::decode::nvdec::{self, DecoderCaps, DecoderPool, Picture, Session};
use crate::decode::{partition, split_at_gops, DecodeReport, Segment, Wanted};
use crate::fair::FairShare;
use crate::pipeline::{check_packets, check_readable};
use crate::plan::{SamplePlan, TEMPORAL_PATCH_SIZE};
use crate::stream::StreamInfo;
use crate::{Cancel, Error, Result, Video};

mod convert;
mod job;
mod peer;

fn driver(e: cudarc::driver::DriverError) -> Error {
    Error::DecoderUnavailable(format!("CUDA: {e}"))
}

/// Element type of the pixel values written on the GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum PixelDtype {
    F32,
    Bf16,
}

impl PixelDtype {
    pub fn size(self) -> usize {
        match self {
            PixelDtype::F32 => 4,
            PixelDtype::Bf16 => 2,
        }
    }
}

/// Number of CUDA devices, 0 when there is no driver.
pub fn device_count() -> usize {
    // SAFETY: FFI boundary: only tries to dlopen libcuda; nothing is called before the
    // library is known to exist (cudarc panics if asked to use a missing library).
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return 0;
    }
    CudaContext::device_count().map_or(0, |n| n.max(0) as usize)
}

/// NVDEC sessions per engine. Decode-only throughput is flat from 2 per engine up, but a
/// session also waits on the conversion of each picture it delivers: on the H200, 4 per
/// engine (28) decoded a 30 s clip in 0.125 s against 0.145 s with 14, and 64 videos at
/// once at 4602 against 4335 frames/s. `REEL_NVDEC_SESSIONS` overrides the GPU's total.
const SESSIONS_PER_ENGINE: usize = 4;

/// One GPU: its context, kernels, decoder pool and the share of its sessions.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    convert_h: CudaFunction,
    resize_v: CudaFunction,
    pool: DecoderPool,
    sessions: FairShare,
}

impl Gpu {
    /// Opens GPU `ordinal`: CUDA context, NVDEC library, kernels (NVRTC).
    pub fn open(ordinal: usize) -> Result<Arc<Gpu>> {
        let count = device_count();
        if ordinal >= count {
            return Err(Error::DecoderUnavailable(if count == 0 {
                "no CUDA driver or GPU found".into()
            } else {
                format!("cuda:{ordinal} does not exist ({count} GPUs)")
            }));
        }
        if !nvdec::available() {
            return Err(Error::DecoderUnavailable(
                "libnvcuvid (NVDEC) not found".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(driver)?;
        let module = reel_kernels::load(&ctx, "preprocess")
            .map_err(|e| Error::DecoderUnavailable(e.to_string()))?;
        let load = |name: &str| module.load_function(name).map_err(driver);
        let pool = DecoderPool::new();
        let engines = pool
            .caps(crate::Codec::H264, crate::Chroma::Yuv420, 8)
            .map_or(1, |c| c.engines.max(1) as usize);
        Ok(Arc::new(Gpu {
            convert_h: load("convert_resize_h")?,
            resize_v: load("resize_v_patchify")?,
            ctx,
            pool,
            sessions: FairShare::new(
                std::env::var("REEL_NVDEC_SESSIONS")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(SESSIONS_PER_ENGINE * engines),
            ),
        }))
    }

    /// Decoder sessions this GPU runs at once, over all requests.
    pub fn sessions(&self) -> usize {
        self.sessions.permits()
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The decoder pool (for tests of session bookkeeping).
    pub fn decoder_pool(&self) -> &DecoderPool {
        &self.pool
    }

    /// NVDEC engines on this GPU.
    pub fn engines(&self) -> u32 {
        self.ctx.bind_to_thread().ok();
        self.pool
            .caps(crate::Codec::H264, crate::Chroma::Yuv420, 8)
            .map_or(0, |c| c.engines)
    }

    /// Whether NVDEC decodes `codec` at this chroma format and bit depth.
    pub fn supports(&self, codec: crate::Codec, chroma: crate::Chroma, bit_depth: u8) -> bool {
        self.ctx.bind_to_thread().is_ok()
            && self
                .pool
                .caps(codec, chroma, bit_depth)
                .is_ok_and(|c| c.supported)
    }

    /// Checks that NVDEC can decode a stream.
    pub fn check_stream(&self, info: &StreamInfo) -> Result<DecoderCaps> {
        self.ctx.bind_to_thread().map_err(driver)?;
        nvdec::check_stream(&self.pool, info)
    }

    /// Decodes and preprocesses the plan's frames on this GPU: the GOPs it needs are cut
    /// into up to `sessions` segments of balanced decode cost ([`partition`]), one NVDEC
    /// session each, which take their turns in the GPU's fair share of sessions.
    pub fn prepare(
        &self,
        video: &Video,
        plan: &SamplePlan,
        sessions: usize,
        dtype: PixelDtype,
        cancel: &Cancel,
    ) -> Result<GpuPrepared> {
        self.prepare_with(video, plan, &PrepareOptions::new(sessions, dtype), cancel)
    }

    /// [`Gpu::prepare`] with the segments spread over this GPU and `options.peers`, and
    /// slices announced as they complete: the output tensor is on this GPU either way.
    pub fn prepare_with(
        &self,
        video: &Video,
        plan: &SamplePlan,
        options: &PrepareOptions<'_>,
        cancel: &Cancel,
    ) -> Result<GpuPrepared> {
        let work = self.work(video, plan, options.sessions, options.peers)?;
        let slices = plan.grid_thw[0];
        let part = job::Part::alloc(self, 0..slices, plan, options.dtype)?;
        let buffer = part.buffer.clone();
        let output = job::Output {
            parts: vec![part],
            dtype: options.dtype,
            on_slice: options.on_slice,
        };
        let claims = job::Claims::Shared;
        let report = work.decode(video, plan, claims, output, cancel)?;
        Ok(GpuPrepared {
            buffer,
            dtype: options.dtype,
            grid_thw: plan.grid_thw,
            report,
        })
    }

    /// Plans a video's decode for encoding on several GPUs: the GOP segments (at most
    /// `sessions`) are divided into contiguous blocks, one per GPU (this one and `peers`)
    /// in proportion to its sessions, and each GPU keeps the temporal slices it decodes
    /// ([`Split::parts`]). Only a frame of a slice whose other frame another GPU decodes
    /// is copied over.
    pub fn split<'a>(
        &'a self,
        video: &Video,
        plan: &SamplePlan,
        sessions: usize,
        peers: &'a [Arc<Gpu>],
    ) -> Result<Split<'a>> {
        let work = self.work(video, plan, sessions, peers)?;
        let packets: Vec<usize> = work.segments.iter().map(|s| s.packets()).collect();
        let shares: Vec<usize> = work.decoders.iter().map(|g| g.sessions()).collect();
        let blocks = blocks(&packets, &shares);
        let owner = |slice: usize| -> usize {
            let f = plan.frames[(slice * TEMPORAL_PATCH_SIZE).min(plan.frames.len() - 1)];
            let p = video.index().frame_packet(f);
            let segment = work
                .segments
                .partition_point(|s| s.ranges[0].packets.start <= p)
                .saturating_sub(1);
            blocks
                .iter()
                .position(|b| b.contains(&segment))
                .unwrap_or(0)
        };
        let mut parts: Vec<(usize, Range<usize>)> = Vec::new();
        for slice in 0..plan.grid_thw[0] {
            let g = owner(slice);
            match parts.last_mut() {
                Some((last, slices)) if *last == g => slices.end = slice + 1,
                _ => parts.push((g, slice..slice + 1)),
            }
        }
        Ok(Split {
            work,
            blocks,
            parts,
        })
    }

    /// The checks and the work common to every way of preparing a video: the GPUs that
    /// decode it (this one first, then the peers that can) and its GOP segments.
    fn work<'a>(
        &'a self,
        video: &Video,
        plan: &SamplePlan,
        sessions: usize,
        peers: &'a [Arc<Gpu>],
    ) -> Result<Work<'a>> {
        let info = video.info();
        check_readable(video, plan)?;
        self.check_stream(info)?;
        let mut decoders = vec![self];
        for peer in peers {
            if std::ptr::eq(&**peer, self) {
                continue;
            }
            match peer.check_stream(info) {
                Ok(_) => {
                    if !peer::enable_peer_access(&self.ctx, &peer.ctx)? {
                        tracing::debug!(
                            "cuda:{} and cuda:{} have no peer access: copies go through the host",
                            self.ctx.ordinal(),
                            peer.ctx.ordinal()
                        );
                    }
                    decoders.push(&**peer);
                }
                Err(e) => tracing::debug!("cuda:{} does not decode: {e}", peer.ctx.ordinal()),
            }
        }
        let segments = partition(
            video.index(),
            split_at_gops(video.index(), &plan.decode, &plan.frames),
            sessions,
        );
        Ok(Work { decoders, segments })
    }
}

/// The GPUs that decode a video and its GOP segments.
struct Work<'a> {
    decoders: Vec<&'a Gpu>,
    segments: Vec<Segment>,
}

impl Work<'_> {
    /// Runs the decode workers on these GPUs and segments.
    fn decode(
        &self,
        video: &Video,
        plan: &SamplePlan,
        claims: job::Claims<'_>,
        output: job::Output<'_>,
        cancel: &Cancel,
    ) -> Result<DecodeReport> {
        job::decode(
            video,
            plan,
            &self.segments,
            &self.decoders,
            claims,
            output,
            cancel,
        )
    }
}

/// A video's decode planned over several GPUs by [`Gpu::split`], each keeping the
/// temporal slices it decodes, so that each can encode its own.
pub struct Split<'a> {
    work: Work<'a>,
    /// The segments each decoder takes.
    blocks: Vec<Range<usize>>,
    /// Runs of temporal slices and the decoder that holds each.
    parts: Vec<(usize, Range<usize>)>,
}

impl Split<'_> {
    /// The parts of the output, in order: the GPU holding each (this one or one of the
    /// peers), and its temporal slices. Together they cover the video's slices once.
    pub fn parts(&self) -> Vec<(&Gpu, Range<usize>)> {
        self.parts
            .iter()
            .map(|(g, slices)| (self.work.decoders[*g], slices.clone()))
            .collect()
    }

    /// Decodes and preprocesses the video (the one [`Gpu::split`] planned) into one
    /// buffer per part, on its GPU. `on_slice` hears of each slice as it completes, with
    /// its part and its index in the part.
    pub fn prepare(
        &self,
        video: &Video,
        plan: &SamplePlan,
        dtype: PixelDtype,
        on_slice: Option<&SliceReady<'_>>,
        cancel: &Cancel,
    ) -> Result<SplitPrepared> {
        let parts = self
            .parts
            .iter()
            .map(|(g, slices)| {
                job::Part::alloc(self.work.decoders[*g], slices.clone(), plan, dtype)
            })
            .collect::<Result<Vec<_>>>()?;
        let kept: Vec<GpuPart> = parts
            .iter()
            .map(|p| GpuPart {
                ordinal: p.gpu.ctx.ordinal(),
                slices: p.slices.clone(),
                buffer: p.buffer.clone(),
            })
            .collect();
        let output = job::Output {
            parts,
            dtype,
            on_slice,
        };
        let claims = job::Claims::Blocks(&self.blocks);
        let report = self.work.decode(video, plan, claims, output, cancel)?;
        Ok(SplitPrepared {
            parts: kept,
            dtype,
            grid_thw: plan.grid_thw,
            report,
        })
    }
}

/// Pixel values made by [`Split::prepare`]: each part on the GPU that decoded it.
pub struct SplitPrepared {
    pub parts: Vec<GpuPart>,
    pub dtype: PixelDtype,
    /// The grid of the whole video.
    pub grid_thw: [usize; 3],
    pub report: DecodeReport,
}

/// Temporal slices `slices` of a video's pixel values, `[slices·h·w, 1176]`, on GPU
/// `ordinal`.
pub struct GpuPart {
    pub ordinal: usize,
    pub slices: Range<usize>,
    pub buffer: Arc<CudaSlice<u8>>,
}

/// Divides items of sizes `sizes`, in order, into one contiguous block per GPU, GPU `g`
/// getting about `shares[g] / Σ shares` of the total size (possibly none).
fn blocks(sizes: &[usize], shares: &[usize]) -> Vec<Range<usize>> {
    let total: usize = sizes.iter().sum();
    let all_shares: usize = shares.iter().sum::<usize>().max(1);
    let mut out = Vec::with_capacity(shares.len());
    let (mut start, mut before, mut share) = (0, 0, 0);
    for (g, &s) in shares.iter().enumerate() {
        share += s;
        let mut end = start;
        if g + 1 == shares.len() {
            end = sizes.len();
        } else {
            // Up to the item boundary nearest this GPU's cumulative share.
            let goal = (total * share) as f64 / all_shares as f64;
            while end < sizes.len()
                && (before + sizes[end]) as f64 <= goal + sizes[end] as f64 / 2.0
            {
                before += sizes[end];
                end += 1;
            }
        }
        out.push(start..end);
        start = end;
    }
    out
}

/// How [`Gpu::prepare_with`] decodes a video and tells of its progress.
pub struct PrepareOptions<'a> {
    /// At most this many GOP segments, decoded at once when sessions are free.
    pub sessions: usize,
    pub dtype: PixelDtype,
    /// Other GPUs whose sessions decode segments too. Their frames reach the output by
    /// peer copies (through the host where the GPUs have no peer access), each frame's
    /// copy overlapping the decoding of the next.
    pub peers: &'a [Arc<Gpu>],
    /// Called once for every temporal slice (two frames) as soon as both of its frames
    /// are in the output buffer, from the decoding thread, while later slices still
    /// decode: a consumer can start on early slices.
    pub on_slice: Option<&'a SliceReady<'a>>,
}

impl PrepareOptions<'_> {
    /// Up to `sessions` segments on this GPU alone, no slice callback.
    pub fn new(sessions: usize, dtype: PixelDtype) -> Self {
        Self {
            sessions,
            dtype,
            peers: &[],
            on_slice: None,
        }
    }
}

/// Told that a temporal slice of the pixel values is complete.
pub type SliceReady<'a> = dyn Fn(SliceDone<'_>) + Sync + 'a;

/// A temporal slice whose values are final.
pub struct SliceDone<'b> {
    /// The output part holding it: 0, except for [`Split::prepare`].
    pub part: usize,
    /// The part's buffer.
    pub buffer: &'b Arc<CudaSlice<u8>>,
    /// Its index in the buffer (in the whole video for [`Gpu::prepare_with`]).
    pub slice: usize,
}

impl Gpu {
    /// Decodes `frames` on one session and hands each to `f` as packed planar YUV
    /// (the layout of FFmpeg's yuv420p / yuv420p10le / yuv444p frames, which `framemd5`
    /// hashes) with its corrupt flag. For verification: the pipeline never copies
    /// pictures to the host.
    pub fn decode_yuv(
        &self,
        video: &Video,
        frames: &[usize],
        f: &mut dyn FnMut(usize, Vec<u8>, bool),
    ) -> Result<DecodeReport> {
        check_readable_frames(video, frames)?;
        self.ctx.bind_to_thread().map_err(driver)?;
        let stream = self.ctx.new_stream().map_err(driver)?;
        let wanted = Wanted::new(video, frames);
        let ranges = crate::plan::decode_ranges(video.index(), frames);
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
                &self.pool,
                video.info().codec,
                stream.cu_stream() as *mut c_void,
                &wanted,
                &mut on_picture,
            )?;
            decode_packets(&mut session, video, range.packets.clone())?;
        }
        Ok(report)
    }
}

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
            // SAFETY: FFI boundary: copies `len` bytes from the mapped surface (at least
            // luma + chroma bytes long) into `frame` (at least `len` bytes) on `stream`.
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
    // SAFETY: FFI boundary: `devptr` is a mapped NVDEC surface of `total` bytes (luma
    // rows, then chroma rows at chroma_offset), kept mapped for this callback.
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

impl Drop for Gpu {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            self.pool.clear();
        }
    }
}

/// Pixel values made on the GPU, `[t·h·w, 1176]` of `dtype`.
pub struct GpuPrepared {
    /// Shared with consumers that started on early slices ([`PrepareOptions::on_slice`]).
    pub buffer: Arc<CudaSlice<u8>>,
    pub dtype: PixelDtype,
    pub grid_thw: [usize; 3],
    pub report: DecodeReport,
}

impl GpuPrepared {
    /// Copies the values to the host as f32.
    pub fn to_host_f32(&self) -> Result<Vec<f32>> {
        let stream = self.buffer.stream().clone();
        Ok(match self.dtype {
            PixelDtype::F32 => {
                let mut out = vec![0f32; self.buffer.len() / 4];
                // SAFETY: FFI boundary: copies the buffer's bytes (written by the kernels as
                // f32) into a host f32 vector of exactly the same byte length.
                unsafe {
                    let bytes = std::slice::from_raw_parts_mut(
                        out.as_mut_ptr().cast::<u8>(),
                        self.buffer.len(),
                    );
                    stream.memcpy_dtoh(&*self.buffer, bytes).map_err(driver)?;
                }
                stream.synchronize().map_err(driver)?;
                out
            }
            PixelDtype::Bf16 => {
                let bytes = stream.clone_dtoh(&*self.buffer).map_err(driver)?;
                bytes
                    .chunks_exact(2)
                    .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
                    .collect()
            }
        })
    }

    /// Waits until the values are complete on the device.
    pub fn synchronize(&self) -> Result<()> {
        self.buffer.stream().synchronize().map_err(driver)
    }
}

#[cfg(test)]
mod tests {
    use super::blocks;

    #[test]
    fn blocks_follow_the_session_shares() {
        assert_eq!(blocks(&[10; 15], &[28]), vec![0..15usize]);
        assert_eq!(blocks(&[10; 15], &[28, 28]), [0..8, 8..15]);
        assert_eq!(blocks(&[10; 12], &[28, 14]), [0..8, 8..12]);
        // Sizes count, not items: the big first segment is a GPU's share alone.
        assert_eq!(blocks(&[30, 10, 10, 10], &[1, 1]), [0..1, 1..4]);
        // Fewer items than GPUs: some get none, every item is in exactly one block.
        assert_eq!(blocks(&[10; 2], &[1, 1, 1, 1]), [0..1, 1..1, 1..2, 2..2]);
        assert_eq!(blocks(&[], &[1, 1]), [0..0, 0..0]);
    }
}
