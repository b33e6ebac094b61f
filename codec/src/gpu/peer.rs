//! Copies between GPUs: peer access, and one frame's values of a temporal slice.

use std::sync::{Arc, Mutex};

use cudarc::driver::{sys, CudaContext, CudaStream};

use super::driver;
use crate::plan::PatchGeometry;
use crate::Result;

/// Lets `a` and `b` read each other's memory directly (NVLink or PCIe peer-to-peer)
/// where the hardware allows; returns whether it does. Without peer access the copies
/// still work: the driver stages them through host memory. Done once per pair.
pub(super) fn enable_peer_access(a: &CudaContext, b: &CudaContext) -> Result<bool> {
    static DONE: Mutex<Vec<(usize, usize, bool)>> = Mutex::new(Vec::new());
    let (x, y) = (a.ordinal(), b.ordinal());
    if x == y {
        return Ok(true);
    }
    let mut done = DONE.lock().expect("no panics while holding the lock");
    if let Some(&(_, _, direct)) = done
        .iter()
        .find(|(p, q, _)| (*p, *q) == (x, y) || (*p, *q) == (y, x))
    {
        return Ok(direct);
    }
    let mut direct = true;
    for (from, to) in [(a, b), (b, a)] {
        let mut can = 0;
        // SAFETY: `can` is a valid out-pointer for one int, and both device handles come
        // from live contexts.
        unsafe { sys::cuDeviceCanAccessPeer(&mut can, from.cu_device(), to.cu_device()) }
            .result()
            .map_err(driver)?;
        if can == 0 {
            direct = false;
            continue;
        }
        from.bind_to_thread().map_err(driver)?;
        // SAFETY: both contexts are alive (the caller borrows them from their `Gpu`s),
        // `from` is current on this thread (bound just above), and peer access from it to
        // `to` is supported (checked just above); flags must be 0.
        let r = unsafe { sys::cuCtxEnablePeerAccess(to.cu_ctx(), 0) };
        if r != sys::CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED {
            r.result().map_err(driver)?;
        }
    }
    done.push((x, y, direct));
    Ok(direct)
}

/// Copies a frame's values from a one-slice buffer on one GPU into a temporal slice of
/// a pixel-values buffer on another. A patch row holds, per channel, the first frame's
/// P × P values, then the second's and so on (T frames), so one frame's values are 3
/// runs of P² per row at a stride of T·P² (Qwen2.5-VL: 196 at 392): a 2-D copy of
/// `3 × rows` lines.
pub(super) struct SliceCopy {
    from: Arc<CudaContext>,
    to: Arc<CudaContext>,
    /// Patch rows per temporal slice.
    rows: usize,
    /// Bytes per value.
    size: usize,
    geometry: PatchGeometry,
}

impl SliceCopy {
    pub(super) fn new(
        from: &Arc<CudaContext>,
        to: &Arc<CudaContext>,
        rows: usize,
        size: usize,
        geometry: PatchGeometry,
    ) -> Self {
        Self {
            from: from.clone(),
            to: to.clone(),
            rows,
            size,
            geometry,
        }
    }

    /// Enqueues on `stream` (of the source GPU) the copy of frame `half` (below the
    /// temporal patch size) of the one-slice buffer at `src` into slice `slice` of the
    /// buffer at `dst`.
    pub(super) fn frame(
        &self,
        stream: &CudaStream,
        src: u64,
        dst: u64,
        slice: usize,
        half: usize,
    ) -> Result<()> {
        let p = self.geometry.patch_size;
        let run = p * p * self.size;
        let slice_bytes = self.rows * self.geometry.patch_dim() * self.size;
        let lines = 3 * self.rows;
        let pitch = self.geometry.temporal_patch_size * run;
        let copy = sys::CUDA_MEMCPY3D_PEER {
            srcXInBytes: half * run,
            srcY: 0,
            srcZ: 0,
            srcLOD: 0,
            srcMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            srcHost: std::ptr::null(),
            srcDevice: src,
            srcArray: std::ptr::null_mut(),
            srcContext: self.from.cu_ctx(),
            srcPitch: pitch,
            srcHeight: lines,
            dstXInBytes: half * run,
            dstY: 0,
            dstZ: 0,
            dstLOD: 0,
            dstMemoryType: sys::CUmemorytype::CU_MEMORYTYPE_DEVICE,
            dstHost: std::ptr::null_mut(),
            dstDevice: dst + (slice * slice_bytes) as u64,
            dstArray: std::ptr::null_mut(),
            dstContext: self.to.cu_ctx(),
            dstPitch: pitch,
            dstHeight: lines,
            WidthInBytes: run,
            Height: lines,
            Depth: 1,
        };
        // SAFETY: `copy` is fully initialized and read during the call only. `src` is a
        // one-slice buffer (rows × patch_dim values of `size` bytes) in context `from`,
        // and `dst` a pixel-values buffer in context `to` holding slice `slice`, both laid
        // out with this geometry: the 2-D copy (3 × rows lines of `run` bytes at a pitch
        // of temporal × run, from column half × run, half < temporal) stays inside both. The caller keeps both buffers alive until it
        // synchronizes `stream`, a stream of `from`.
        unsafe { sys::cuMemcpy3DPeerAsync(&copy, stream.cu_stream()) }
            .result()
            .map_err(driver)
    }
}
