//! The CUDA tower on a GPU: parity with the HF goldens (same bounds as the CPU tower),
//! agreement with the CPU tower, device-resident input, batching and per-slice encoding.
//!
//! Runs only where a GPU is wanted: with `REEL_REQUIRE_GPU=1` (the GPU suite,
//! bench/gpu/run.sh) every test must pass and a missing GPU is a failure; without it the
//! tests return at once.

mod common;

use std::sync::Arc;

use common::*;
use cudarc::driver::{CudaContext, CudaSlice};
use reel_encoder::cuda::{Batcher, DeviceEmbeddings, InputDtype, PoolPeak};
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

/// The Qwen3-VL family's towers (head_dim 64 with deepstack, 72 without) on the GPU:
/// parity with HF's goldens (the CPU tower's bounds), agreement with the CPU tower,
/// batching and per-slice encoding.
#[test]
fn cuda_qwen3_parity_and_cpu_agreement() {
    let Some(ctx) = gpu() else { return };
    for name in ["qwen3_vl", "qwen3_5"] {
        let dir = qwen3_dir(name);
        for dtype in [DType::F32, DType::BF16] {
            let tower = VisionTower::load_cuda(&dir, dtype, ctx.clone()).unwrap();
            qwen3_golden_parity(&tower, name);
            let grids = [[2, 8, 8], [1, 14, 10]];
            let rows: usize = grids.iter().map(|g| g.iter().product::<usize>()).sum();
            let pv = pixel_values(5, rows, 1536);
            let cpu = VisionTower::load(&dir, dtype)
                .unwrap()
                .encode(&pv, &grids)
                .unwrap();
            let gpu = tower.encode(&pv, &grids).unwrap();
            let err = rel_err(&gpu.data, &cpu.data);
            let bound = if dtype == DType::F32 { 1e-5 } else { 2e-2 };
            println!("{name} CUDA vs CPU, {dtype}: max rel {err:.3e} (bound {bound:.0e})");
            assert!(err <= bound, "{name} {dtype}: {err:.3e}");
            if dtype == DType::F32 {
                assert_batch_equals_separate(&tower);
                assert_slices_independent(&tower);
            }
        }
    }
}

/// A device buffer too small for the grids is an error, not an out-of-bounds read.
#[test]
fn device_input_too_small_is_refused() {
    let Some(ctx) = gpu() else { return };
    let tower = cuda_tower(&ctx, DType::F32);
    let stream = ctx.default_stream();
    let short = stream.alloc_zeros::<u8>(2 * 8 * 12 * 1176 * 4 - 4).unwrap();
    let err = tower
        .encode_device(&short, InputDtype::F32, &[[2, 8, 12]])
        .err()
        .expect("a short buffer must be refused");
    assert!(matches!(err, reel_encoder::Error::InvalidInput(_)), "{err}");
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
        let out = tower.encode_device(&dev, InputDtype::F32, &grids).unwrap();
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
            let out = tower.encode_device(&dev, InputDtype::Bf16, &grids).unwrap();
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

/// Device pixels of `rows` seeded rows (f32), shared as the batcher takes them.
fn device_pixels(ctx: &Arc<CudaContext>, seed: u64, rows: usize) -> (Vec<f32>, Arc<CudaSlice<u8>>) {
    let pv = pixel_values(seed, rows, 1176);
    let bytes: Vec<u8> = pv.iter().flat_map(|v| v.to_le_bytes()).collect();
    let stream = ctx.default_stream();
    let dev = stream.clone_htod(&bytes).unwrap();
    stream.synchronize().unwrap();
    (pv, Arc::new(dev))
}

/// Slices submitted one by one, out of order, through the batcher give the embeddings of
/// encoding the whole video in one forward (f32: within 1e-6; bf16: the parity bound).
#[test]
fn batcher_slices_equal_whole_video() {
    let Some(ctx) = gpu() else { return };
    for (dtype, bound) in [(DType::F32, 1e-6), (DType::BF16, 2e-2)] {
        let tower = Arc::new(cuda_tower(&ctx, dtype));
        let batcher = Batcher::new(tower.clone(), 1 << 30).unwrap();
        let grid = [5, 8, 12];
        let (pv, dev) = device_pixels(&ctx, 31, 5 * 8 * 12);
        let whole = tower.encode(&pv, &[grid]).unwrap();
        let request = batcher.request(grid).unwrap();
        for s in [3, 0, 4, 1, 2] {
            request.submit(&dev, InputDtype::F32, s..s + 1);
        }
        let out = request.finish().unwrap();
        assert_eq!((out.rows, out.hidden), (whole.rows, whole.hidden));
        let got = out.to_host_f32().unwrap();
        let err = rel_err(&got, &whole.data);
        println!(
            "batcher slices vs whole, {dtype}: max rel {err:.3e}, bit-identical: {}",
            got == whole.data
        );
        assert!(err <= bound, "{dtype}: {err:.3e}");
    }
}

/// A video encoded in two parts on two towers (cuda:1 where there is one, else a second
/// tower on the same GPU), joined by `DeviceEmbeddings::concat` on the first GPU, gives
/// the embeddings of the whole video (f32: within 1e-6; bf16: the parity bound).
#[test]
fn parts_on_two_towers_join_to_the_whole_video() {
    let Some(ctx) = gpu() else { return };
    let other = CudaContext::new(usize::from(CudaContext::device_count().unwrap() > 1)).unwrap();
    for (dtype, bound) in [(DType::F32, 1e-6), (DType::BF16, 2e-2)] {
        let towers = [&ctx, &other].map(|c| Arc::new(cuda_tower(c, dtype)));
        let batchers = towers.clone().map(|t| Batcher::new(t, 1 << 30).unwrap());
        let (h, w) = (8, 12);
        let pv = pixel_values(37, 5 * h * w, 1176);
        let whole = towers[0].encode(&pv, &[[5, h, w]]).unwrap();
        let parts: Vec<_> = [(0..2, &batchers[0]), (2..5, &batchers[1])]
            .into_iter()
            .map(|(slices, batcher)| {
                let rows = &pv[slices.start * h * w * 1176..slices.end * h * w * 1176];
                let request = batcher.request([slices.len(), h, w]).unwrap();
                request.submit_rest(&batcher.upload(rows).unwrap(), InputDtype::F32);
                request.finish().unwrap()
            })
            .collect();
        let joined = DeviceEmbeddings::concat(&parts, &ctx.default_stream()).unwrap();
        assert_eq!((joined.rows, joined.hidden), (whole.rows, whole.hidden));
        assert_eq!(joined.buffer.context().cu_ctx(), ctx.cu_ctx());
        let err = rel_err(&joined.to_host_f32().unwrap(), &whole.data);
        println!("two parts joined vs whole, {dtype}: max rel {err:.3e}");
        assert!(err <= bound, "{dtype}: {err:.3e}");
    }
    assert!(DeviceEmbeddings::concat(&[], &ctx.default_stream()).is_err());
}

/// Requests submitted together share forwards, and each gets exactly its own rows.
#[test]
fn batcher_shares_forwards_between_requests() {
    let Some(ctx) = gpu() else { return };
    let tower = Arc::new(cuda_tower(&ctx, DType::F32));
    let batcher = Batcher::new(tower.clone(), 1 << 30).unwrap();
    let grids = [
        [40, 8, 8],
        [1, 6, 10],
        [2, 4, 4],
        [3, 8, 12],
        [1, 14, 10],
        [2, 6, 6],
    ];
    let inputs: Vec<_> = grids
        .iter()
        .enumerate()
        .map(|(i, g)| device_pixels(&ctx, 500 + i as u64, g.iter().product()))
        .collect();
    let requests: Vec<_> = grids.iter().map(|&g| batcher.request(g).unwrap()).collect();
    for (r, (_, dev)) in requests.iter().zip(&inputs) {
        r.submit_rest(dev, InputDtype::F32);
    }
    for ((r, (pv, _)), g) in requests.into_iter().zip(&inputs).zip(&grids) {
        let alone = tower.encode(pv, &[*g]).unwrap();
        let got = r.finish().unwrap().to_host_f32().unwrap();
        let err = rel_err(&got, &alone.data);
        assert!(err < 1e-5, "grid {g:?}: batched vs alone {err:.3e}");
    }
    let stats = batcher.stats();
    println!("{stats:?}");
    assert!(stats.shared_forwards >= 1, "{stats:?}");
    assert_eq!(stats.slices, grids.iter().map(|g| g[0] as u64).sum::<u64>());
}

/// Forwards stay within the memory budget (measured on the device's memory pool): a
/// video larger than the budget is encoded in several forwards with the same result; a
/// slice larger than the budget is refused with a typed error.
#[test]
fn batcher_respects_memory_budget() {
    let Some(ctx) = gpu() else { return };
    let tower = Arc::new(cuda_tower(&ctx, DType::F32));
    let per_slice = 8 * 12;
    let budget = tower.activation_bytes(3 * per_slice).unwrap();
    let batcher = Batcher::new(tower.clone(), budget).unwrap();
    assert!(batcher.max_patches() >= 3 * per_slice && batcher.max_patches() < 4 * per_slice);
    let grid = [10, 8, 12];
    let (pv, dev) = device_pixels(&ctx, 77, 10 * per_slice);
    let whole = tower.encode(&pv, &[grid]).unwrap();
    let request = batcher.request(grid).unwrap();
    let meter = PoolPeak::start(&ctx).unwrap();
    request.submit_rest(&dev, InputDtype::F32);
    let out = request.finish().unwrap();
    let peak = meter.peak_above_start().unwrap();
    println!("budget {budget} B, peak {peak} B, {:?}", batcher.stats());
    assert!(peak <= budget, "peak {peak} over the budget {budget}");
    assert!(batcher.stats().forwards >= 4, "{:?}", batcher.stats());
    assert!(rel_err(&out.to_host_f32().unwrap(), &whole.data) < 1e-6);
    let err = batcher.request([1, 24, 24]).err().unwrap();
    assert!(err.to_string().contains("budget"), "{err}");
}

/// A request dropped half-way withdraws its slices; bad submissions fail the request at
/// finish; the batcher goes on serving.
#[test]
fn batcher_survives_dropped_and_bad_requests() {
    let Some(ctx) = gpu() else { return };
    let tower = Arc::new(cuda_tower(&ctx, DType::F32));
    let batcher = Batcher::new(tower.clone(), 1 << 30).unwrap();
    let (pv, dev) = device_pixels(&ctx, 5, 4 * 64);
    let half = batcher.request([4, 8, 8]).unwrap();
    half.submit(&dev, InputDtype::F32, 0..2);
    drop(half);
    let twice = batcher.request([4, 8, 8]).unwrap();
    twice.submit(&dev, InputDtype::F32, 0..2);
    twice.submit(&dev, InputDtype::F32, 1..3);
    let err = twice.finish().err().unwrap();
    assert!(err.to_string().contains("twice"), "{err}");
    let short = batcher.request([8, 8, 8]).unwrap();
    short.submit_rest(&dev, InputDtype::F32);
    assert!(
        short.finish().is_err(),
        "a buffer of 4 slices cannot hold 8"
    );
    let ok = batcher.request([4, 8, 8]).unwrap();
    ok.submit_rest(&dev, InputDtype::F32);
    let got = ok.finish().unwrap().to_host_f32().unwrap();
    let alone = tower.encode(&pv, &[[4, 8, 8]]).unwrap();
    assert!(rel_err(&got, &alone.data) < 1e-6);
}
