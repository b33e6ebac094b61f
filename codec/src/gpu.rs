//! The GPU path: NVDEC sessions decode GOP segments in parallel and CUDA kernels turn
//! each sampled picture into its slots of one preallocated pixel-values tensor.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr,
    LaunchConfig, PushKernelArg,
};

use crate::decode::nvdec::{self, DecoderCaps, DecoderPool, Picture, Session};
use crate::decode::{partition, split_at_gops, DecodeReport, Disposability, Segment, Wanted};
use crate::fair::FairShare;
use crate::pipeline::{check_readable, slots_by_frame};
use crate::plan::{SamplePlan, TEMPORAL_PATCH_SIZE};
use crate::preprocess::{ColorConverter, Normalization, TapTable, PATCH_DIM};
use crate::stream::{Range, Rotation, StreamInfo};
use crate::{Cancel, Error, Result, Video};

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

/// Gives out the ids that tell requests apart in the session share.
static REQUESTS: AtomicUsize = AtomicUsize::new(0);

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

    /// Decodes and preprocesses the plan's frames: the GOPs it needs are cut into up to
    /// `sessions` segments of balanced decode cost ([`partition`]), one NVDEC session
    /// each, which take their turns in the GPU's fair share of sessions.
    pub fn prepare(
        &self,
        video: &Video,
        plan: &SamplePlan,
        sessions: usize,
        dtype: PixelDtype,
        cancel: &Cancel,
    ) -> Result<GpuPrepared> {
        self.prepare_streamed(video, plan, sessions, dtype, cancel, None)
    }

    /// [`Gpu::prepare`], calling `on_slice` once for every temporal slice (two frames)
    /// as soon as both of its frames are in the output buffer, from the decoding thread,
    /// while later slices still decode: a consumer can start on early slices.
    pub fn prepare_streamed(
        &self,
        video: &Video,
        plan: &SamplePlan,
        sessions: usize,
        dtype: PixelDtype,
        cancel: &Cancel,
        on_slice: Option<&SliceReady<'_>>,
    ) -> Result<GpuPrepared> {
        let info = video.info();
        check_readable(video, plan)?;
        self.check_stream(info)?;
        let stream = self.ctx.default_stream();
        let rows = plan.grid_thw.iter().product::<usize>();
        let out: Arc<CudaSlice<u8>> = Arc::new(
            stream
                .alloc_zeros(rows * PATCH_DIM * dtype.size())
                .map_err(driver)?,
        );
        let out_ptr = out.device_ptr(&stream).0;
        stream.synchronize().map_err(driver)?;
        let segments = partition(
            video.index(),
            split_at_gops(video.index(), &plan.decode, &plan.frames),
            sessions,
        );
        let wanted = Wanted::new(video, &plan.frames);
        let slots = slots_by_frame(plan);
        let slot_count = plan.frames.len().div_ceil(TEMPORAL_PATCH_SIZE) * TEMPORAL_PATCH_SIZE;
        let job = Job {
            request: REQUESTS.fetch_add(1, Ordering::Relaxed) as u64,
            gpu: self,
            video,
            plan,
            wanted: &wanted,
            slots: &slots,
            out: &out,
            out_ptr,
            dtype,
            next: AtomicUsize::new(0),
            segments: &segments,
            failed: AtomicBool::new(false),
            cancel,
            report: Mutex::new(DecodeReport::default()),
            written: (0..slot_count).map(|_| AtomicBool::new(false)).collect(),
            slice_frames: (0..slot_count / TEMPORAL_PATCH_SIZE)
                .map(|_| AtomicUsize::new(0))
                .collect(),
            on_slice,
        };
        let workers = segments.len().max(1);
        let results: Vec<Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers).map(|_| scope.spawn(|| job.work())).collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::DecoderUnavailable("a decode worker panicked".into()))
                    })
                })
                .collect()
        });
        for r in results {
            r?;
        }
        let mut report = job.report.into_inner().unwrap_or_default();
        let missing: Vec<usize> = job
            .written
            .iter()
            .enumerate()
            .filter(|(_, w)| !w.load(Ordering::Relaxed))
            .map(|(slot, _)| plan.frames[slot.min(plan.frames.len() - 1)])
            .collect();
        if !missing.is_empty() {
            return Err(Error::Decode {
                frames: missing,
                reason: "NVDEC delivered no picture for them".into(),
            });
        }
        report.corrupt_frames.sort_unstable();
        report.corrupt_frames.dedup();
        Ok(GpuPrepared {
            buffer: out,
            dtype,
            grid_thw: plan.grid_thw,
            report,
        })
    }
}

/// Told that temporal slice `s` of the pixel buffer is complete: `(buffer, s)`.
pub type SliceReady<'a> = dyn Fn(&Arc<CudaSlice<u8>>, usize) + Sync + 'a;

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
        let (mut scratch, mut data) = (Vec::new(), Vec::new());
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
            for p in range.packets.clone() {
                video.decoder_packet(p, &mut scratch, &mut data)?;
                session.decode(&data, video.index().packets()[p].pts)?;
            }
            session.finish()?;
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
        let (mut scratch, mut data) = (Vec::new(), Vec::new());
        for p in 0..video.index().len() {
            video.decoder_packet(p, &mut scratch, &mut data)?;
            session.decode(&data, video.index().packets()[p].pts)?;
        }
        session.finish()?;
        drop(session);
        Ok(pictures)
    }
}

fn frame_len(w: usize, h: usize, bytes_per_sample: usize) -> u64 {
    (w * h * 3 * bytes_per_sample) as u64
}

fn check_readable_frames(video: &Video, frames: &[usize]) -> Result<()> {
    let len = video.source().len();
    for &f in frames {
        let p = video.index().frame_packet(f);
        let packet = video.index().packets()[p];
        if packet.offset.saturating_add(u64::from(packet.size)) > len {
            return Err(Error::Truncated {
                index: p,
                offset: packet.offset,
                size: packet.size.into(),
                len,
            });
        }
    }
    Ok(())
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
    /// Shared with consumers that started on early slices ([`Gpu::prepare_streamed`]).
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

/// Work shared by the decode workers of one `prepare` call.
struct Job<'a> {
    gpu: &'a Gpu,
    video: &'a Video,
    plan: &'a SamplePlan,
    wanted: &'a Wanted,
    slots: &'a HashMap<usize, Vec<usize>>,
    out: &'a Arc<CudaSlice<u8>>,
    out_ptr: u64,
    dtype: PixelDtype,
    segments: &'a [Segment],
    /// This request's id in the GPU's session share.
    request: u64,
    next: AtomicUsize,
    failed: AtomicBool,
    cancel: &'a Cancel,
    report: Mutex<DecodeReport>,
    /// Slots whose values are written (and synchronized).
    written: Vec<AtomicBool>,
    /// Frames written per temporal slice.
    slice_frames: Vec<AtomicUsize>,
    on_slice: Option<&'a SliceReady<'a>>,
}

impl Job<'_> {
    /// A worker: takes segments until none are left, each with a permit of the GPU's
    /// session share and a parser per range on a pooled decoder.
    fn work(&self) -> Result<()> {
        let result = self.work_inner();
        if result.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        result
    }

    fn work_inner(&self) -> Result<()> {
        let gpu = self.gpu;
        let mut i = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(mut segment) = self.segments.get(i) else {
            return Ok(());
        };
        // The stream and the conversion buffers are made once the first permit is held, so
        // that workers waiting for a session hold no device memory.
        let mut permit = Some(self.permit(i));
        gpu.ctx.bind_to_thread().map_err(driver)?;
        let stream = gpu.ctx.new_stream().map_err(driver)?;
        let mut kernels = FrameKernels::new(gpu, &stream, self.video.info(), self.plan)?;
        let disposability = Disposability::for_video(self.video);
        let mut report = DecodeReport::default();
        loop {
            let _permit = permit.take().unwrap_or_else(|| self.permit(i));
            let _span =
                tracing::info_span!("segment", segment = i, packets = segment.packets()).entered();
            for range in &segment.ranges {
                self.decode_range(range, &stream, &mut kernels, &disposability, &mut report)?;
            }
            if self.failed.load(Ordering::Relaxed) {
                break;
            }
            i = self.next.fetch_add(1, Ordering::Relaxed);
            match self.segments.get(i) {
                Some(next) => segment = next,
                None => break,
            }
        }
        self.report.lock().expect("report lock").merge(report);
        Ok(())
    }

    /// Waits for a session of the GPU's share for segment `i`.
    fn permit(&self, i: usize) -> crate::fair::Permit<'_> {
        let _wait = tracing::info_span!("wait_for_session", segment = i).entered();
        self.gpu.sessions.acquire(self.request)
    }

    /// Decodes one independent range on a fresh parser (the decoder comes from the pool).
    fn decode_range(
        &self,
        range: &crate::plan::DecodeRange,
        stream: &Arc<CudaStream>,
        kernels: &mut FrameKernels<'_>,
        disposability: &Disposability,
        report: &mut DecodeReport,
    ) -> Result<()> {
        let (mut scratch, mut data) = (Vec::new(), Vec::new());
        let (mut decoded, mut skipped) = (0, 0);
        let mut on_picture = |p: &Picture| -> Result<()> {
            let slots = &self.slots[&p.frame];
            let _span = tracing::info_span!("convert", frame = p.frame).entered();
            kernels.run(p, slots, self.out_ptr, self.dtype)?;
            report.frames_delivered += 1;
            if p.corrupt {
                report.corrupt_frames.push(p.frame);
            }
            for &slot in slots {
                self.slot_written(slot);
            }
            Ok(())
        };
        let mut session = Session::new(
            &self.gpu.pool,
            self.video.info().codec,
            stream.cu_stream() as *mut c_void,
            self.wanted,
            &mut on_picture,
        )?;
        for p in range.packets.clone() {
            self.cancel.check()?;
            self.video.decoder_packet(p, &mut scratch, &mut data)?;
            if !self.wanted.wants_packet(self.video, p) && disposability.is_disposable(&data) {
                skipped += 1;
                continue;
            }
            decoded += 1;
            session.decode(&data, self.video.index().packets()[p].pts)?;
        }
        session.finish()?;
        drop(session);
        report.packets_decoded += decoded;
        report.packets_skipped += skipped;
        Ok(())
    }

    /// Records a written slot; the second frame of a slice tells `on_slice`.
    fn slot_written(&self, slot: usize) {
        if self.written[slot].swap(true, Ordering::AcqRel) {
            return;
        }
        let slice = slot / TEMPORAL_PATCH_SIZE;
        let frames = self.slice_frames[slice].fetch_add(1, Ordering::AcqRel) + 1;
        if frames == TEMPORAL_PATCH_SIZE {
            if let Some(on_slice) = self.on_slice {
                on_slice(self.out, slice);
            }
        }
    }
}

/// Kernel arguments mirroring `struct Surface` in kernels/preprocess.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct SurfaceArg {
    luma: u64,
    chroma: u64,
    chroma_plane_bytes: i64,
    pitch: i32,
    width: i32,
    height: i32,
    wide: i32,
    shift: i32,
    chroma420: i32,
}

/// Mirrors `struct ColorParams` in kernels/preprocess.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ColorArg {
    constants: [f32; 8],
    identity: i32,
}

// SAFETY: both are #[repr(C)] plain data laid out exactly like the CUDA structs they are
// passed as (sizes asserted below).
unsafe impl DeviceRepr for SurfaceArg {}
// SAFETY: as above.
unsafe impl DeviceRepr for ColorArg {}
const _: () =
    assert!(std::mem::size_of::<SurfaceArg>() == 48 && std::mem::size_of::<ColorArg>() == 36);

/// Tap tables in device memory.
struct DeviceTaps {
    starts: CudaSlice<i32>,
    counts: CudaSlice<i32>,
    weights: CudaSlice<f32>,
    max_taps: i32,
}

impl DeviceTaps {
    fn upload(stream: &Arc<CudaStream>, t: &TapTable) -> Result<Self> {
        Ok(Self {
            starts: stream.clone_htod(&t.starts).map_err(driver)?,
            counts: stream.clone_htod(&t.counts).map_err(driver)?,
            weights: stream.clone_htod(&t.weights).map_err(driver)?,
            max_taps: t.max_taps as i32,
        })
    }
}

/// The two preprocessing kernels of one worker, with their tables and scratch buffer.
struct FrameKernels<'a> {
    gpu: &'a Gpu,
    stream: &'a Arc<CudaStream>,
    info: &'a StreamInfo,
    display: (usize, usize),
    out_size: (usize, usize),
    grid: [usize; 3],
    h_taps: DeviceTaps,
    v_taps: DeviceTaps,
    vertical_resize: bool,
    tmp: CudaSlice<f32>,
}

impl<'a> FrameKernels<'a> {
    fn new(
        gpu: &'a Gpu,
        stream: &'a Arc<CudaStream>,
        info: &'a StreamInfo,
        plan: &SamplePlan,
    ) -> Result<Self> {
        let (dh, dw) = info.display_size();
        let (dh, dw) = (dh as usize, dw as usize);
        let (oh, ow) = (plan.resized_height as usize, plan.resized_width as usize);
        Ok(Self {
            gpu,
            stream,
            info,
            display: (dh, dw),
            out_size: (oh, ow),
            grid: plan.grid_thw,
            h_taps: DeviceTaps::upload(stream, &TapTable::new(dw, ow))?,
            v_taps: DeviceTaps::upload(stream, &TapTable::new(dh, oh))?,
            vertical_resize: dh != oh,
            tmp: stream.alloc_zeros(3 * dh * ow).map_err(driver)?,
        })
    }

    /// Converts, resizes and patchifies one mapped picture into `slots`, then waits for
    /// the kernels so the surface can be unmapped.
    fn run(&mut self, p: &Picture, slots: &[usize], out: u64, dtype: PixelDtype) -> Result<()> {
        let (dh, dw) = self.display;
        let (oh, ow) = self.out_size;
        let rotation = match self.info.rotation {
            Rotation::None => 0i32,
            Rotation::Cw90 => 1,
            Rotation::Cw180 => 2,
            Rotation::Cw270 => 3,
        };
        let (pw, ph) = if self.info.rotation.is_transposed() {
            (dh, dw)
        } else {
            (dw, dh)
        };
        if (p.width as usize, p.height as usize) != (pw, ph) {
            return Err(Error::Unsupported(format!(
                "decoded pictures are {}x{}, the stream says {pw}x{ph} (resolution changes are not supported)",
                p.width, p.height
            )));
        }
        let surface = SurfaceArg {
            luma: p.devptr,
            chroma: p.devptr + p.chroma_offset(),
            chroma_plane_bytes: (u64::from(p.pitch) * u64::from(p.height)) as i64,
            pitch: p.pitch as i32,
            width: p.width as i32,
            height: p.height as i32,
            wide: i32::from(p.format.is_wide()),
            shift: if p.format.is_wide() {
                16 - i32::from(p.bit_depth)
            } else {
                0
            },
            chroma420: i32::from(p.format.is_420()),
        };
        let range = self.info.color.full_range.map_or(Range::Limited, |f| {
            if f {
                Range::Full
            } else {
                Range::Limited
            }
        });
        let converter =
            ColorConverter::new(self.info.color.conversion_matrix(), range, p.bit_depth);
        let color = ColorArg {
            constants: converter.constants(),
            identity: i32::from(
                self.info.color.conversion_matrix() == crate::stream::Matrix::Identity,
            ),
        };
        let block = (32u32, 8u32, 1u32);
        let grid_for = |w: usize, h: usize| {
            (
                (w as u32).div_ceil(block.0),
                (h as u32).div_ceil(block.1),
                1,
            )
        };
        let (disp_w, disp_h, out_w, out_h) = (dw as i32, dh as i32, ow as i32, oh as i32);
        let mut pass1 = self.stream.launch_builder(&self.gpu.convert_h);
        pass1
            .arg(&surface)
            .arg(&color)
            .arg(&rotation)
            .arg(&disp_w)
            .arg(&disp_h)
            .arg(&self.h_taps.starts)
            .arg(&self.h_taps.counts)
            .arg(&self.h_taps.weights)
            .arg(&self.h_taps.max_taps)
            .arg(&out_w)
            .arg(&mut self.tmp);
        // SAFETY: kernel-launch boundary. Arguments match convert_resize_h's signature;
        // the surface stays mapped until the stream is synchronized below, and `tmp`
        // holds 3 × display_h × out_w floats.
        unsafe {
            pass1.launch(LaunchConfig {
                grid_dim: grid_for(ow, dh),
                block_dim: block,
                shared_mem_bytes: 0,
            })
        }
        .map_err(driver)?;
        let norm = Normalization::clip();
        let (grid_h, grid_w) = (self.grid[1] as i32, self.grid[2] as i32);
        let (resize, bf16) = (
            i32::from(self.vertical_resize),
            i32::from(dtype == PixelDtype::Bf16),
        );
        for &slot in slots {
            let slot = slot as i32;
            let mut pass2 = self.stream.launch_builder(&self.gpu.resize_v);
            pass2
                .arg(&self.tmp)
                .arg(&disp_h)
                .arg(&out_w)
                .arg(&out_h)
                .arg(&self.v_taps.starts)
                .arg(&self.v_taps.counts)
                .arg(&self.v_taps.weights)
                .arg(&self.v_taps.max_taps)
                .arg(&resize)
                .arg(&norm.mean255[0])
                .arg(&norm.mean255[1])
                .arg(&norm.mean255[2])
                .arg(&norm.std255[0])
                .arg(&norm.std255[1])
                .arg(&norm.std255[2])
                .arg(&slot)
                .arg(&grid_h)
                .arg(&grid_w)
                .arg(&bf16)
                .arg(&out);
            // SAFETY: kernel-launch boundary. Arguments match resize_v_patchify; `out`
            // is the job's output buffer, alive until every worker has joined, and each
            // slot's elements are written by exactly one launch.
            unsafe {
                pass2.launch(LaunchConfig {
                    grid_dim: grid_for(ow, oh),
                    block_dim: block,
                    shared_mem_bytes: 0,
                })
            }
            .map_err(driver)?;
        }
        self.stream.synchronize().map_err(driver)
    }
}
