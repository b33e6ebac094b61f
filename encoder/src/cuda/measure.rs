//! Device measurements for benchmarks: the bf16 GEMM peak that MFU is computed against,
//! and the high-water mark of the stream-ordered memory pool that activations come from.

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{sys, CudaContext, DevicePtr};

use super::cuda;
use super::gemm::{Elem, Gemm, Layer};
use crate::error::Result;

/// Measured bf16 GEMM throughput in TFLOP/s: `n × n × n` products (fp32 accumulation)
/// through cuBLASLt, the best of several timed batches after a warm-up.
pub fn gemm_peak_tflops(ctx: &Arc<CudaContext>, n: usize) -> Result<f64> {
    let stream = ctx.new_stream().map_err(cuda)?;
    let gemm = Gemm::new(stream.clone())?;
    let bytes = n * n * 2;
    let (a, b, c) = (
        stream.alloc_zeros::<u8>(bytes).map_err(cuda)?,
        stream.alloc_zeros::<u8>(bytes).map_err(cuda)?,
        stream.alloc_zeros::<u8>(bytes).map_err(cuda)?,
    );
    let (ap, _a) = a.device_ptr(&stream);
    let (bp, _b) = b.device_ptr(&stream);
    let (cp, _c) = c.device_ptr(&stream);
    let run = |reps: usize| -> Result<f64> {
        let t = Instant::now();
        for _ in 0..reps {
            let layer = Layer {
                w: bp,
                bias: None,
                inp: n,
                out: n,
                gelu: false,
            };
            gemm.linear(Elem::Bf16, layer, ap, cp, n)?;
        }
        stream.synchronize().map_err(cuda)?;
        Ok(t.elapsed().as_secs_f64())
    };
    run(3)?;
    let reps = 20;
    let mut best = f64::MAX;
    for _ in 0..5 {
        best = best.min(run(reps)?);
    }
    Ok(2.0 * (n as f64).powi(3) * reps as f64 / best / 1e12)
}

/// Tracks the peak bytes in use in the device's default memory pool (where cudarc's
/// stream-ordered allocations come from) from the moment of [`PoolPeak::start`].
pub struct PoolPeak {
    pool: sys::CUmemoryPool,
    base: u64,
}

fn pool_attr(pool: sys::CUmemoryPool, attr: sys::CUmemPool_attribute) -> Result<u64> {
    let mut v = 0u64;
    // SAFETY: `pool` is a device's default memory pool (it lives as long as the
    // process); the attributes queried here are u64s and `v` is one.
    unsafe { sys::cuMemPoolGetAttribute(pool, attr, (&mut v as *mut u64).cast()) }
        .result()
        .map_err(cuda)?;
    Ok(v)
}

impl PoolPeak {
    /// Resets the pool's high-water mark to what is in use now.
    pub fn start(ctx: &Arc<CudaContext>) -> Result<Self> {
        ctx.bind_to_thread().map_err(cuda)?;
        let mut pool = std::ptr::null_mut();
        // SAFETY: `ctx` is a live context bound to this thread and `pool` a valid
        // out-pointer for the device's default memory pool handle.
        unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) }
            .result()
            .map_err(cuda)?;
        let base = pool_attr(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT,
        )?;
        let mut zero = 0u64;
        // SAFETY: `pool` is the live default pool queried above; USED_MEM_HIGH is set by
        // a pointer to a u64 zero, which `zero` is for the call's duration.
        unsafe {
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                (&mut zero as *mut u64).cast(),
            )
        }
        .result()
        .map_err(cuda)?;
        Ok(Self { pool, base })
    }

    /// Peak bytes in use since [`PoolPeak::start`], above what was in use then.
    pub fn peak_above_start(&self) -> Result<u64> {
        let high = pool_attr(
            self.pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
        )?;
        Ok(high.saturating_sub(self.base))
    }
}
