//! CPU encoder throughput (patches/s) on a model folder.
//!
//! ```text
//! cargo run --release -p reel-encoder --example bench_cpu -- \
//!     --model DIR --dtype f32 --grids 4,28,28 [--grids ...] --threads 2 --iters 5 [--out out.f32]
//! cargo run --release -p reel-encoder --example bench_cpu -- \
//!     --write-random DIR --arch qwen2.5-vl-7b --seed 0 --dtype bf16
//! ```
//!
//! `--grids` takes `t,h,w[;t,h,w...]`: one batch per `--grids`, all batches timed in turn.
//! Inputs are the golden generator's seeded values (tests/golden/encoder). Prints one JSON
//! line per batch: `{"grids", "patches", "dtype", "threads", "load_s", "times_s",
//! "median_s", "patches_per_s"}`. `--out` writes the last batch's embeddings as raw
//! little-endian f32.

use std::path::PathBuf;
use std::time::Instant;

use reel_encoder::init::{write_random, Arch};
use reel_encoder::{DType, VisionTower};

fn parse_grids(s: &str) -> anyhow::Result<Vec<[usize; 3]>> {
    s.split(';')
        .map(|g| {
            let v: Vec<usize> = g
                .split(',')
                .map(|x| x.trim().parse())
                .collect::<Result<_, _>>()?;
            anyhow::ensure!(v.len() == 3, "grid `{g}` is not t,h,w");
            Ok([v[0], v[1], v[2]])
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let mut model = None;
    let mut write_to = None;
    let mut arch = Arch::Tiny;
    let mut seed = 0u64;
    let mut dtype = DType::F32;
    let mut batches = Vec::new();
    let mut threads = std::thread::available_parallelism()?.get();
    let mut warmup = 1usize;
    let mut iters = 5usize;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--model" => model = Some(PathBuf::from(val()?)),
            "--write-random" => write_to = Some(PathBuf::from(val()?)),
            "--arch" => arch = Arch::from_name(&val()?)?,
            "--seed" => seed = val()?.parse()?,
            "--dtype" => dtype = DType::from_name(&val()?)?,
            "--grids" => batches.push(parse_grids(&val()?)?),
            "--threads" => threads = val()?.parse()?,
            "--warmup" => warmup = val()?.parse()?,
            "--iters" => iters = val()?.parse()?,
            "--out" => out = Some(PathBuf::from(val()?)),
            _ => anyhow::bail!("unknown argument {a} (see the doc comment of bench_cpu.rs)"),
        }
    }
    // candle's GEMM reads RAYON_NUM_THREADS; our kernels run on the global rayon pool.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()?;

    if let Some(dir) = write_to {
        let t = Instant::now();
        write_random(arch, seed, dtype, &dir)?;
        let params = reel_encoder::weights::num_params(&arch.vision_config());
        println!(
            "{}",
            serde_json::json!({"wrote": dir, "arch": arch.name(), "dtype": dtype.to_string(),
                "params": params, "seconds": t.elapsed().as_secs_f64(), "threads": threads})
        );
        return Ok(());
    }
    let model =
        model.ok_or_else(|| anyhow::anyhow!("--model DIR (or --write-random DIR) is required"))?;
    anyhow::ensure!(!batches.is_empty(), "--grids t,h,w is required");
    let t = Instant::now();
    let tower = VisionTower::load(&model, dtype)?;
    let load_s = t.elapsed().as_secs_f64();
    let pd = tower.config().patch_dim();
    for grids in &batches {
        let patches: usize = grids.iter().map(|g| g.iter().product::<usize>()).sum();
        let pv = reel_encoder::init::seeded_pixels(7, patches, pd);
        for _ in 0..warmup {
            tower.encode(&pv, grids)?;
        }
        let mut times = Vec::new();
        let mut emb = None;
        for _ in 0..iters {
            let t = Instant::now();
            emb = Some(tower.encode(&pv, grids)?);
            times.push(t.elapsed().as_secs_f64());
        }
        let mut sorted = times.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        println!(
            "{}",
            serde_json::json!({"grids": grids, "patches": patches, "dtype": dtype.to_string(),
                "threads": threads, "load_s": load_s, "times_s": times, "median_s": median,
                "patches_per_s": patches as f64 / median})
        );
        if let (Some(path), Some(e)) = (&out, emb) {
            let bytes: Vec<u8> = e.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(path, bytes)?;
        }
    }
    Ok(())
}
