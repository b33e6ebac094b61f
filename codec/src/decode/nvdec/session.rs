//! One NVDEC session: a parser and a decoder for one run of packets, and the pool
//! that lets sessions reuse decoders (creating one costs milliseconds).

use std::ffi::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

use super::api::{check, check_alloc, nvcuvid, Nvcuvid};
use super::caps::{chroma_of, codec_of, query, DecoderCaps};
use super::ffi;
use crate::decode::Wanted;
use crate::stream::{Chroma, Codec};
use crate::Error;

/// Decoded-surface layouts NVDEC hands out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SurfaceFormat {
    /// 8-bit 4:2:0: Y plane, then interleaved UV.
    Nv12,
    /// 10/12-bit 4:2:0 in 16-bit words (data in the most significant bits).
    P016,
    /// 8-bit 4:4:4: three planes.
    Yuv444,
    /// 10/12-bit 4:4:4 in 16-bit words.
    Yuv444_16,
}

impl SurfaceFormat {
    fn ffi(self) -> ffi::cudaVideoSurfaceFormat {
        match self {
            SurfaceFormat::Nv12 => ffi::cudaVideoSurfaceFormat::cudaVideoSurfaceFormat_NV12,
            SurfaceFormat::P016 => ffi::cudaVideoSurfaceFormat::cudaVideoSurfaceFormat_P016,
            SurfaceFormat::Yuv444 => ffi::cudaVideoSurfaceFormat::cudaVideoSurfaceFormat_YUV444,
            SurfaceFormat::Yuv444_16 => {
                ffi::cudaVideoSurfaceFormat::cudaVideoSurfaceFormat_YUV444_16Bit
            }
        }
    }

    pub fn is_wide(self) -> bool {
        matches!(self, SurfaceFormat::P016 | SurfaceFormat::Yuv444_16)
    }

    pub fn is_420(self) -> bool {
        matches!(self, SurfaceFormat::Nv12 | SurfaceFormat::P016)
    }
}

/// A decoded, wanted picture, mapped into device memory for the duration of a callback.
#[derive(Clone, Copy, Debug)]
pub struct Picture {
    /// Presentation index of the frame.
    pub frame: usize,
    pub devptr: u64,
    pub pitch: u32,
    pub format: SurfaceFormat,
    /// Visible size (the decoder crops to the display area).
    pub width: u32,
    pub height: u32,
    /// Bits per sample of the stream.
    pub bit_depth: u8,
    /// The decoder reported errors (concealed or not) in this picture.
    pub corrupt: bool,
}

impl Picture {
    /// Byte offset of the chroma data from `devptr`.
    pub fn chroma_offset(&self) -> u64 {
        u64::from(self.pitch) * u64::from((self.height + 1) & !1)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DecoderKey {
    codec: u32,
    chroma: u32,
    bit_depth: u32,
    coded: (u32, u32),
    display: [i32; 4],
    surfaces: u32,
    format: SurfaceFormat,
}

struct Decoder(ffi::CUvideodecoder);

// SAFETY: a CUvideodecoder handle may be used from any thread that has its CUDA
// context current; the pool hands each one to a single session at a time.
unsafe impl Send for Decoder {}

/// Codec, chroma format and bit depth: what decoder caps depend on.
type CapsKey = (Codec, Chroma, u8);

/// Idle decoders of one GPU, reused by later sessions with the same stream format.
pub struct DecoderPool {
    idle: Mutex<Vec<(DecoderKey, Decoder)>>,
    created: std::sync::atomic::AtomicUsize,
    caps: Mutex<Vec<(CapsKey, DecoderCaps)>>,
}

/// Idle decoders kept per GPU; more are destroyed when returned.
const MAX_IDLE: usize = 32;

impl DecoderPool {
    pub fn new() -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
            created: Default::default(),
            caps: Mutex::new(Vec::new()),
        }
    }

    /// Decoder caps, queried once per codec, chroma format and bit depth.
    pub fn caps(&self, codec: Codec, chroma: Chroma, bit_depth: u8) -> Result<DecoderCaps, Error> {
        let key = (codec, chroma, bit_depth);
        if let Some(caps) = self
            .caps
            .lock()
            .ok()
            .and_then(|c| c.iter().find(|(k, _)| *k == key).map(|(_, v)| *v))
        {
            return Ok(caps);
        }
        let caps = query(codec, chroma, bit_depth)?;
        if let Ok(mut cached) = self.caps.lock() {
            cached.push((key, caps));
        }
        Ok(caps)
    }

    /// Decoders waiting for reuse.
    pub fn idle(&self) -> usize {
        self.idle.lock().map_or(0, |v| v.len())
    }

    /// Decoders created so far.
    pub fn created(&self) -> usize {
        self.created.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn take(
        &self,
        lib: &Nvcuvid,
        key: DecoderKey,
        info: &mut ffi::CUVIDDECODECREATEINFO,
    ) -> Result<Decoder, Error> {
        if let Ok(mut idle) = self.idle.lock() {
            if let Some(i) = idle.iter().position(|(k, _)| *k == key) {
                return Ok(idle.swap_remove(i).1);
            }
        }
        let mut handle: ffi::CUvideodecoder = std::ptr::null_mut();
        // SAFETY: cuvidCreateDecoder's contract: `info` is a fully initialized create-info
        // (zeroed, then filled in by `State::sequence`) that it only reads, `handle` a valid
        // out-pointer, and the session's CUDA context is current on this thread (the
        // parser calls back on the thread that drives the session). The handle it writes
        // is owned by the returned Decoder.
        let created = unsafe { (lib.create_decoder)(&mut handle, info) };
        check_alloc(created, "cuvidCreateDecoder", Error::DecoderUnavailable)?;
        self.created
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Decoder(handle))
    }

    fn give_back(&self, lib: &Nvcuvid, key: DecoderKey, decoder: Decoder) {
        if let Ok(mut idle) = self.idle.lock() {
            if idle.len() < MAX_IDLE {
                idle.push((key, decoder));
                return;
            }
        }
        // SAFETY: the handle came from cuvidCreateDecoder and is destroyed once: `decoder`
        // is moved in here, so no session holds it any more.
        unsafe { (lib.destroy_decoder)(decoder.0) };
    }

    /// Destroys the idle decoders. The pool's CUDA context must be current.
    pub fn clear(&self) {
        let Ok(lib) = nvcuvid() else { return };
        let idle = self
            .idle
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default();
        for (_, decoder) in idle {
            // SAFETY: the handle came from cuvidCreateDecoder and is destroyed once: it was
            // taken out of the idle list, so no session holds it; the caller has the
            // pool's context current (see above).
            unsafe { (lib.destroy_decoder)(decoder.0) };
        }
    }
}

impl Default for DecoderPool {
    fn default() -> Self {
        Self::new()
    }
}

/// Callback state, boxed so the parser's user-data pointer stays valid.
struct State<'a> {
    lib: &'static Nvcuvid,
    pool: &'a DecoderPool,
    codec: Codec,
    stream: ffi::CUstream,
    wanted: &'a Wanted,
    on_picture: &'a mut dyn FnMut(&Picture) -> Result<(), Error>,
    decoder: Option<(DecoderKey, Decoder)>,
    bit_depth: u8,
    size: (u32, u32),
    error: Option<Error>,
    pictures: usize,
    /// VP9/AV1: pts of fed packets not displayed yet. Each packet shows exactly one
    /// frame, in order, but NVDEC stamps a hidden frame shown later (show_existing_frame)
    /// with the timestamp of the packet that carried it, so displays are matched by order.
    pending_pts: std::collections::VecDeque<i64>,
}

impl State<'_> {
    fn sequence(&mut self, f: &ffi::CUVIDEOFORMAT) -> Result<c_int, Error> {
        let bit_depth = 8 + f.bit_depth_luma_minus8;
        let chroma = match f.chroma_format {
            ffi::cudaVideoChromaFormat::cudaVideoChromaFormat_420 => Chroma::Yuv420,
            ffi::cudaVideoChromaFormat::cudaVideoChromaFormat_444 => Chroma::Yuv444,
            ffi::cudaVideoChromaFormat::cudaVideoChromaFormat_422 => Chroma::Yuv422,
            _ => Chroma::Monochrome,
        };
        let format = match (chroma, bit_depth > 8) {
            (Chroma::Yuv420, false) => SurfaceFormat::Nv12,
            (Chroma::Yuv420, true) => SurfaceFormat::P016,
            (Chroma::Yuv444, false) => SurfaceFormat::Yuv444,
            (Chroma::Yuv444, true) => SurfaceFormat::Yuv444_16,
            _ => {
                return Err(Error::Unsupported(format!(
                    "NVDEC output for {} chroma is not supported by reel",
                    chroma.name()
                )))
            }
        };
        let caps = self.pool.caps(self.codec, chroma, bit_depth)?;
        let (w, h) = (f.coded_width, f.coded_height);
        if !caps.supported
            || w > caps.max_width
            || h > caps.max_height
            || w.div_ceil(16) * h.div_ceil(16) > caps.max_mb_count
        {
            return Err(Error::Unsupported(format!(
                "NVDEC cannot decode {w}x{h} {bit_depth}-bit {} {} (max {}x{})",
                chroma.name(),
                self.codec,
                caps.max_width,
                caps.max_height
            )));
        }
        let area = f.display_area;
        let display = [area.left, area.top, area.right, area.bottom];
        let (out_w, out_h) = (
            (area.right - area.left) as u32,
            (area.bottom - area.top) as u32,
        );
        let surfaces = u32::from(f.min_num_decode_surfaces).max(1);
        let key = DecoderKey {
            codec: codec_of(self.codec).0,
            chroma: chroma_of(chroma).0,
            bit_depth: u32::from(bit_depth),
            coded: (w, h),
            display,
            surfaces,
            format,
        };
        if self.decoder.as_ref().is_some_and(|(k, _)| *k == key) {
            return Ok(surfaces as c_int);
        }
        if let Some((old_key, old)) = self.decoder.take() {
            self.pool.give_back(self.lib, old_key, old);
        }
        // SAFETY: CUVIDDECODECREATEINFO is a plain C struct of integers, enums with a zero
        // variant and nullable pointers: all-zero bytes are a valid value, and the API
        // defines zero as the default of every field reel does not set.
        let mut info: ffi::CUVIDDECODECREATEINFO = unsafe { std::mem::zeroed() };
        info.ulWidth = w.into();
        info.ulHeight = h.into();
        info.ulMaxWidth = w.into();
        info.ulMaxHeight = h.into();
        info.ulNumDecodeSurfaces = surfaces.into();
        info.CodecType = f.codec;
        info.ChromaFormat = f.chroma_format;
        info.bitDepthMinus8 = f.bit_depth_luma_minus8.into();
        info.ulCreationFlags = ffi::cudaVideoCreateFlags::cudaVideoCreate_PreferCUVID
            .0
            .into();
        info.OutputFormat = format.ffi();
        info.DeinterlaceMode = if f.progressive_sequence != 0 {
            ffi::cudaVideoDeinterlaceMode::cudaVideoDeinterlaceMode_Weave
        } else {
            ffi::cudaVideoDeinterlaceMode::cudaVideoDeinterlaceMode_Adaptive
        };
        info.ulNumOutputSurfaces = 2;
        info.display_area.left = area.left as i16;
        info.display_area.top = area.top as i16;
        info.display_area.right = area.right as i16;
        info.display_area.bottom = area.bottom as i16;
        info.ulTargetWidth = out_w.into();
        info.ulTargetHeight = out_h.into();
        let decoder = self.pool.take(self.lib, key, &mut info)?;
        self.decoder = Some((key, decoder));
        self.bit_depth = bit_depth;
        self.size = (out_w, out_h);
        Ok(surfaces as c_int)
    }

    fn decode(&mut self, params: &mut ffi::CUVIDPICPARAMS) -> Result<c_int, Error> {
        let (_, decoder) = self
            .decoder
            .as_ref()
            .ok_or_else(|| Error::bitstream("NVDEC", "picture before sequence header"))?;
        self.pictures += 1;
        // SAFETY: `params` is a live, exclusive reference for the duration of the call
        // (cuvidDecodePicture only reads it), and `decoder` is the live decoder the parser's
        // sequence callback set up for this stream.
        let decoded = unsafe { (self.lib.decode_picture)(decoder.0, params) };
        check(decoded, "cuvidDecodePicture").map_err(|e| Error::bitstream("NVDEC", e))?;
        Ok(1)
    }

    /// A picture ready for display; `None` at the end of the stream.
    fn display(&mut self, info: Option<&ffi::CUVIDPARSERDISPINFO>) -> Result<c_int, Error> {
        let Some(&d) = info else {
            return Ok(1); // end of stream
        };
        let pts = match self.codec {
            Codec::Vp9 | Codec::Av1 => self.pending_pts.pop_front().unwrap_or(d.timestamp),
            Codec::H264 | Codec::Hevc => d.timestamp,
        };
        let Some(frame) = self.wanted.frame_for_pts(pts) else {
            return Ok(1);
        };
        let (key, decoder) = self
            .decoder
            .as_ref()
            .ok_or_else(|| Error::bitstream("NVDEC", "display before sequence header"))?;
        // SAFETY: CUVIDPROCPARAMS is a plain C struct of integers and nullable pointers:
        // all-zero bytes are a valid value and the API's default.
        let mut params: ffi::CUVIDPROCPARAMS = unsafe { std::mem::zeroed() };
        params.progressive_frame = d.progressive_frame;
        params.second_field = d.repeat_first_field + 1;
        params.top_field_first = d.top_field_first;
        params.unpaired_field = i32::from(d.repeat_first_field < 0);
        params.output_stream = self.stream;
        let (mut devptr, mut pitch) = (0u64, 0u32);
        // SAFETY: cuvidMapVideoFrame64's contract: a live decoder, a picture index the
        // parser just handed out for it, valid out-pointers for the address and pitch, and
        // initialized processing parameters. The mapping is undone below, after
        // `on_picture`, on every path.
        let mapped = unsafe {
            (self.lib.map_video_frame)(
                decoder.0,
                d.picture_index,
                &mut devptr,
                &mut pitch,
                &mut params,
            )
        };
        check_alloc(mapped, "cuvidMapVideoFrame64", |e| {
            Error::bitstream("NVDEC", e)
        })?;
        // SAFETY: CUVIDGETDECODESTATUS is plain integers (all-zero is valid); the driver
        // writes it for a live decoder and a picture index of this decoder.
        let corrupt = unsafe {
            let mut status: ffi::CUVIDGETDECODESTATUS = std::mem::zeroed();
            let ok = (self.lib.get_decode_status)(decoder.0, d.picture_index, &mut status)
                == ffi::CUresult::CUDA_SUCCESS;
            ok && (status.decodeStatus == ffi::cuvidDecodeStatus::cuvidDecodeStatus_Error
                || status.decodeStatus == ffi::cuvidDecodeStatus::cuvidDecodeStatus_Error_Concealed)
        };
        let picture = Picture {
            frame,
            devptr,
            pitch,
            format: key.format,
            width: self.size.0,
            height: self.size.1,
            bit_depth: self.bit_depth,
            corrupt,
        };
        let result = (self.on_picture)(&picture);
        // SAFETY: `devptr` was mapped above on this decoder and is unmapped once; no
        // work reads it any more: `on_picture` synchronizes the stream its kernels and
        // copies run on before it returns.
        let unmapped = unsafe { (self.lib.unmap_video_frame)(decoder.0, devptr) };
        let unmapped = check(unmapped, "cuvidUnmapVideoFrame64");
        result?;
        unmapped.map_err(Error::Device)?;
        Ok(1)
    }
}

/// Runs a callback body, turning errors and panics into a stored error and a 0 return
/// (the parser then stops). Nothing unwinds into the driver.
fn guarded(user: *mut c_void, f: impl FnOnce(&mut State) -> Result<c_int, Error>) -> c_int {
    // SAFETY: `user` is the Box<State> pointer given to cuvidCreateVideoParser; the
    // Session keeps the box alive (and destroys the parser first), and the parser calls
    // back synchronously inside cuvidParseVideoData on the thread that holds the Session
    // mutably, so this is the only live reference to the state.
    let state = unsafe { &mut *user.cast::<State>() };
    if state.error.is_some() {
        return 0;
    }
    match catch_unwind(AssertUnwindSafe(|| f(&mut *state))) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            state.error = Some(e);
            0
        }
        Err(_) => {
            state.error = Some(Error::Internal("panic in an NVDEC callback".into()));
            0
        }
    }
}

/// The parser's sequence callback.
///
/// # Safety
///
/// Called only by the NVDEC parser of a [`Session`]: `user` is that session's state and
/// `format` points to a valid video format for the duration of the call.
unsafe extern "C" fn on_sequence(user: *mut c_void, format: *mut ffi::CUVIDEOFORMAT) -> c_int {
    // SAFETY: per this function's contract, the parser passes a valid format that lives
    // for the duration of the call (and `sequence` keeps no reference to it).
    guarded(user, |s| s.sequence(unsafe { &*format }))
}

/// The parser's decode callback.
///
/// # Safety
///
/// Called only by the NVDEC parser of a [`Session`]: `user` is that session's state and
/// `params` the picture parameters, valid for the duration of the call.
unsafe extern "C" fn on_decode(user: *mut c_void, params: *mut ffi::CUVIDPICPARAMS) -> c_int {
    // SAFETY: per this function's contract, the parser passes valid picture parameters
    // that live for the duration of the call and that nothing else touches meanwhile.
    match unsafe { params.as_mut() } {
        Some(params) => guarded(user, |s| s.decode(params)),
        None => 0,
    }
}

/// The parser's display callback.
///
/// # Safety
///
/// Called only by the NVDEC parser of a [`Session`]: `user` is that session's state and
/// `info` null (end of stream) or valid for the duration of the call.
unsafe extern "C" fn on_display(user: *mut c_void, info: *mut ffi::CUVIDPARSERDISPINFO) -> c_int {
    // SAFETY: per this function's contract, `info` is null (end of stream) or valid display
    // info that lives for the duration of the call.
    let info = unsafe { info.as_ref() };
    guarded(user, |s| s.display(info))
}

/// A parser feeding a (pooled) decoder. The GPU's context must be current on the
/// thread that creates and uses it.
pub struct Session<'a> {
    parser: ffi::CUvideoparser,
    state: Box<State<'a>>,
}

impl<'a> Session<'a> {
    pub fn new(
        pool: &'a DecoderPool,
        codec: Codec,
        stream: *mut c_void,
        wanted: &'a Wanted,
        on_picture: &'a mut dyn FnMut(&Picture) -> Result<(), Error>,
    ) -> Result<Self, Error> {
        let lib = nvcuvid().map_err(|e| Error::DecoderUnavailable(e.to_string()))?;
        let mut state = Box::new(State {
            lib,
            pool,
            codec,
            stream: stream.cast(),
            wanted,
            on_picture,
            decoder: None,
            bit_depth: 8,
            size: (0, 0),
            error: None,
            pictures: 0,
            pending_pts: Default::default(),
        });
        // SAFETY: CUVIDPARSERPARAMS is a plain C struct of integers, nullable pointers and
        // optional callbacks: all-zero bytes are a valid value and the API's default.
        let mut params: ffi::CUVIDPARSERPARAMS = unsafe { std::mem::zeroed() };
        params.CodecType = codec_of(codec);
        params.ulMaxNumDecodeSurfaces = 1;
        params.ulErrorThreshold = 100;
        params.ulMaxDisplayDelay = 0;
        params.pUserData = (&mut *state as *mut State).cast();
        params.pfnSequenceCallback = Some(on_sequence);
        params.pfnDecodePicture = Some(on_decode);
        params.pfnDisplayPicture = Some(on_display);
        let mut parser: ffi::CUvideoparser = std::ptr::null_mut();
        // SAFETY: cuvidCreateVideoParser's contract: `params` is initialized and its
        // callbacks have the signatures the API expects; `pUserData` points into the boxed
        // `state`, which does not move and outlives the parser (Session::drop destroys the
        // parser first).
        let created = unsafe { (lib.create_video_parser)(&mut parser, &mut params) };
        check(created, "cuvidCreateVideoParser").map_err(Error::DecoderUnavailable)?;
        Ok(Self { parser, state })
    }

    fn feed(&mut self, data: &[u8], pts: i64, flags: ffi::CUvideopacketflags) -> Result<(), Error> {
        // SAFETY: CUVIDSOURCEDATAPACKET is a plain C struct of integers and a nullable
        // pointer: all-zero bytes are a valid value.
        let mut packet: ffi::CUVIDSOURCEDATAPACKET = unsafe { std::mem::zeroed() };
        packet.flags = flags.0.into();
        packet.payload_size = data.len() as _;
        packet.payload = if data.is_empty() {
            std::ptr::null()
        } else {
            data.as_ptr()
        };
        packet.timestamp = pts;
        // SAFETY: the parser is live (created in Session::new, destroyed only on drop);
        // the packet points into `data` (or is null and empty), which outlives the call,
        // and the callbacks run synchronously inside it, while `self.state` is borrowed by
        // nothing else.
        let result = unsafe { (self.state.lib.parse_video_data)(self.parser, &mut packet) };
        if let Some(e) = self.state.error.take() {
            return Err(e);
        }
        check(result, "cuvidParseVideoData").map_err(|e| Error::bitstream("NVDEC", e))
    }

    /// Feeds one packet (an access unit for H.264/HEVC, a frame or superframe for VP9).
    pub fn decode(&mut self, data: &[u8], pts: i64) -> Result<(), Error> {
        let flags = ffi::CUvideopacketflags::CUVID_PKT_TIMESTAMP.0
            | ffi::CUvideopacketflags::CUVID_PKT_ENDOFPICTURE.0;
        if matches!(self.state.codec, Codec::Vp9 | Codec::Av1) {
            self.state.pending_pts.push_back(pts);
        }
        self.feed(data, pts, ffi::CUvideopacketflags(flags))
    }

    /// Drains the parser: every remaining picture is decoded and displayed.
    pub fn finish(&mut self) -> Result<(), Error> {
        self.feed(&[], 0, ffi::CUvideopacketflags::CUVID_PKT_ENDOFSTREAM)
    }

    /// Pictures decoded so far.
    pub fn pictures_decoded(&self) -> usize {
        self.state.pictures
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // SAFETY: the parser was created in Session::new and is destroyed once, here,
        // before the state its user data points to is dropped.
        unsafe { (self.state.lib.destroy_video_parser)(self.parser) };
        if let Some((key, decoder)) = self.state.decoder.take() {
            self.state.pool.give_back(self.state.lib, key, decoder);
        }
    }
}
