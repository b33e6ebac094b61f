//! The GPU path: NVDEC sessions decode GOP segments in parallel, on this GPU and on its
//! peers, and CUDA kernels turn each sampled picture into its slots of one preallocated
//! pixel-values tensor on this GPU.
//!
//! This module opens a GPU ([`Gpu::open`]); the rest is in submodules:
//! - `prepare`: [`Gpu::prepare`] and [`Gpu::prepare_with`], one output tensor;
//! - `split`: [`Gpu::split`], a video's decode planned over several GPUs, each keeping
//!   the slices it decodes;
//! - `output`: the pixel values made on the device and their copies to the host;
//! - `job`: the decode workers; `convert`: the kernels; `peer`: copies from other GPUs;
//! - `bench`: the decode-only unit of work of `reel bench`.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction};

use crate::decode::nvdec::{self, DecoderCaps, DecoderPool};
use crate::fair::FairShare;
use crate::stream::StreamInfo;
use crate::{Error, Result};

mod bench;
mod convert;
mod job;
mod output;
mod peer;
mod prepare;
mod split;

pub use output::{DeviceFrames, GpuPart, SliceDone, SliceReady, SplitFrames};
pub use prepare::PrepareOptions;
pub use split::Split;

fn driver(e: cudarc::driver::DriverError) -> Error {
    use cudarc::driver::sys::cudaError_enum as R;
    match e.0 {
        R::CUDA_ERROR_OUT_OF_MEMORY => Error::OutOfMemory(format!("CUDA: {e}")),
        R::CUDA_ERROR_NO_DEVICE
        | R::CUDA_ERROR_NOT_INITIALIZED
        | R::CUDA_ERROR_DEVICE_UNAVAILABLE => Error::DecoderUnavailable(format!("CUDA: {e}")),
        _ => Error::Device(format!("CUDA: {e}")),
    }
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
    // SAFETY: `is_culib_present` only tries to dlopen libcuda (running nothing but the
    // driver library's own initializers) and has no other precondition; no CUDA call is
    // made before it says the library exists (cudarc panics on a missing library).
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
}

impl Drop for Gpu {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            self.pool.clear();
        }
    }
}
