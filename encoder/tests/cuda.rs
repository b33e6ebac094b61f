//! The CUDA tower on a GPU: parity with the HF goldens (same bounds as the CPU tower),
//! agreement with the CPU tower, device-resident input, batching and per-slice encoding.
//!
//! Runs only where a GPU is wanted: with `REEL_REQUIRE_GPU=1` (the GPU suite,
//! bench/gpu/run.sh) every test must pass and a missing GPU is a failure; without it the
//! tests return at once.

mod common;

use std::sync::Arc;

use common::*;
use cudarc::driver::{CudaContext, DevicePtr};
use reel_encoder::cuda::InputDtype;
use reel_encoder::{DType, VisionTower};

fn gpu() -> Option<Arc<CudaContext>> {
    if std::env::var("REEL_REQUIRE_GPU").as_deref() != Ok("1") {
        eprintln!("skipped: set REEL_REQUIRE_GPU=1 on a GPU machine");
        return None;
    }
    Some(CudaContext::new(0).expect("REEL_REQUIRE_GPU=1 but no CUDA device"))
}

fn cuda_tower(ctx: &Arc<CudaContext>, dtype: DType) -> VisionTower {
    VisionTower::load_cuda(&tiny_dir(), dtype, ctx.clone()).unwrap()
}

#[test]
fn cuda_parity_f32() {
    let Some(ctx) = gpu() else { return };
    golden_parity(&cuda_tower(&ctx, DType::F32), "f32", 1e-4);
}

#[test]
fn cuda_parity_bf16() {
    let Some(ctx) = gpu() else { return };
    golden_parity(&cuda_tower(&ctx, DType::BF16), "bf16", 2e-2);
}

/// f16 has no CUDA kernels: a typed error, not a wrong answer.
#[test]
fn cuda_rejects_f16() {
    let Some(ctx) = gpu() else { return };
    let err = VisionTower::load_cuda(&tiny_dir(), DType::F16, ctx)
        .err()
        .unwrap();
    assert!(err.to_string().contains("f16"), "{err}");
}

#[test]
fn cuda_matches_cpu() {
    let Some(ctx) = gpu() else { return };
    let grids = [[2, 8, 8], [1, 14, 10]];
    let rows: usize = grids.iter().map(|g| g.iter().product::<usize>()).sum();
    let pv = pixel_values(5, rows, 1176);
    for (dtype, bound) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
        let cpu = VisionTower::load(&tiny_dir(), dtype)
            .unwrap()
            .encode(&pv, &grids)
            .unwrap();
        let gpu = cuda_tower(&ctx, dtype).encode(&pv, &grids).unwrap();
        let err = rel_err(&gpu.data, &cpu.data);
        println!("CUDA vs CPU, {dtype}: max rel {err:.3e} (bound {bound:.0e})");
        assert!(err <= bound, "{dtype}: {err:.3e}");
    }
}

/// Pixels already on the GPU (as the GPU preprocessing leaves them, f32 or bf16) give the
/// same embeddings as host pixels.
#[test]
fn device_input_equals_host_input() {
    let Some(ctx) = gpu() else { return };
    let grids = [[2, 8, 12]];
    let pv = pixel_values(9, 2 * 8 * 12, 1176);
    let stream = ctx.default_stream();
    for dtype in [DType::F32, DType::BF16] {
        let tower = cuda_tower(&ctx, dtype);
        let host = tower.encode(&pv, &grids).unwrap();
        let f32_bytes: Vec<u8> = pv.iter().flat_map(|v| v.to_le_bytes()).collect();
        let dev = stream.clone_htod(&f32_bytes).unwrap();
        let (ptr, _g) = dev.device_ptr(&stream);
        let out = tower.encode_device(ptr, InputDtype::F32, &grids).unwrap();
        assert_eq!((out.rows, out.hidden), (host.rows, host.hidden));
        assert_eq!(
            out.to_host_f32().unwrap(),
            host.data,
            "{dtype}: f32 device input"
        );
        if dtype == DType::BF16 {
            // A bf16 tower rounds its input to bf16 first: bf16 input gives the same bits.
            let bf16_bytes: Vec<u8> = pv
                .iter()
                .flat_map(|&v| half::bf16::from_f32(v).to_bits().to_le_bytes())
                .collect();
            let dev = stream.clone_htod(&bf16_bytes).unwrap();
            let (ptr, _g) = dev.device_ptr(&stream);
            let out = tower.encode_device(ptr, InputDtype::Bf16, &grids).unwrap();
            assert_eq!(out.to_host_f32().unwrap(), host.data, "bf16 device input");
        }
    }
}

#[test]
fn cuda_batch_equals_separate_items() {
    let Some(ctx) = gpu() else { return };
    assert_batch_equals_separate(&cuda_tower(&ctx, DType::F32));
}

#[test]
fn cuda_slices_encode_independently() {
    let Some(ctx) = gpu() else { return };
    assert_slices_independent(&cuda_tower(&ctx, DType::F32));
}

/// Many forwards of different shapes leave the device's memory where it was.
#[test]
fn cuda_forwards_do_not_leak() {
    let Some(ctx) = gpu() else { return };
    let tower = cuda_tower(&ctx, DType::BF16);
    let used = || {
        ctx.default_stream().synchronize().unwrap();
        let (free, total) = cudarc::driver::result::mem_get_info().unwrap();
        total - free
    };
    tower
        .encode(&pixel_values(1, 64, 1176), &[[1, 8, 8]])
        .unwrap();
    let before = used();
    for i in 0..50 {
        let g = [1 + i % 3, 8 + 2 * (i % 4), 8];
        let n: usize = g.iter().product();
        tower
            .encode(&pixel_values(i as u64, n, 1176), &[g])
            .unwrap();
    }
    let after = used();
    assert!(
        after <= before + (64 << 20),
        "device memory grew from {before} to {after} bytes"
    );
}
