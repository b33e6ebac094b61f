//! The pixel values made on the device ([`DeviceFrames`], [`SplitFrames`]), the slices
//! announced as they complete ([`SliceDone`]), and their copies to the host.

use std::ops::Range;
use std::sync::Arc;

use cudarc::driver::CudaSlice;

use super::{driver, PixelDtype};
use crate::decode::DecodeReport;
use crate::Result;

/// Pixel values made on the GPU, `[t·h·w, patch_dim]` of `dtype`.
pub struct DeviceFrames {
    /// Shared with consumers that started on early slices
    /// ([`PrepareOptions::on_slice`](super::PrepareOptions::on_slice)).
    pub buffer: Arc<CudaSlice<u8>>,
    pub dtype: PixelDtype,
    pub grid_thw: [usize; 3],
    /// Values per row: the plan's [`SamplePlan::patch_dim`](crate::SamplePlan::patch_dim).
    pub patch_dim: usize,
    pub report: DecodeReport,
}

impl DeviceFrames {
    /// Copies the values to the host as f32.
    pub fn to_host_f32(&self) -> Result<Vec<f32>> {
        let stream = self.buffer.stream().clone();
        Ok(match self.dtype {
            PixelDtype::F32 => {
                let mut out = vec![0f32; self.buffer.len() / 4];
                let len = out.len() * std::mem::size_of::<f32>();
                // SAFETY: `out` is an initialized Vec<f32> of exactly `len` bytes, u8 has
                // alignment 1 and every byte pattern is a valid f32, so its bytes may be
                // viewed as `&mut [u8]`; the view borrows `out` exclusively until the copy
                // below has been synchronized.
                let bytes =
                    unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), len) };
                // (The buffer's length is a multiple of 4 for f32 values; memcpy_dtoh
                // asserts that `bytes` holds all of it.)
                stream.memcpy_dtoh(&*self.buffer, bytes).map_err(driver)?;
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

/// Pixel values made by [`Split::prepare`](super::Split::prepare): each part on the GPU
/// that decoded it.
pub struct SplitFrames {
    pub parts: Vec<GpuPart>,
    pub dtype: PixelDtype,
    /// The grid of the whole video.
    pub grid_thw: [usize; 3],
    /// Values per row: the plan's [`SamplePlan::patch_dim`](crate::SamplePlan::patch_dim).
    pub patch_dim: usize,
    pub report: DecodeReport,
}

/// Temporal slices `slices` of a video's pixel values, `[slices·h·w, patch_dim]`, on GPU
/// `ordinal`.
pub struct GpuPart {
    pub ordinal: usize,
    pub slices: Range<usize>,
    pub buffer: Arc<CudaSlice<u8>>,
}

/// Told that a temporal slice of the pixel values is complete.
pub type SliceReady<'a> = dyn Fn(SliceDone<'_>) + Sync + 'a;

/// A temporal slice whose values are final.
pub struct SliceDone<'b> {
    /// The output part holding it: 0, except for [`Split::prepare`](super::Split::prepare).
    pub part: usize,
    /// The part's buffer.
    pub buffer: &'b Arc<CudaSlice<u8>>,
    /// Its index in the buffer (in the whole video for
    /// [`Gpu::prepare_with`](super::Gpu::prepare_with)).
    pub slice: usize,
}
