//! `reel bench`: in-process benchmarks whose numbers go to bench/results/.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, Subcommand};
use reel_codec::{SamplePlan, Video};

use super::sampling::SamplingArgs;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Latency and throughput of `reel frames` (demux → plan → decode → preprocess),
    /// in process, after a warm-up run. Prints JSON.
    Frames(FramesBench),
    /// NVDEC decode throughput: every frame decoded into device memory by N concurrent
    /// sessions (N copies of the clip), after a warm-up. Prints JSON.
    Decode(DecodeBench),
    /// Vision-tower throughput (patches/s, TFLOP/s, MFU against a bf16 GEMM peak measured
    /// in the same run) and peak activation memory, on seeded pixel values. Prints JSON.
    Encode(EncodeBench),
    /// Cross-request batching on a GPU tower: N concurrent requests through the batcher
    /// against the same requests encoded one forward each; peak memory against the budget.
    /// Prints JSON.
    Batch(BatchBench),
    /// One video to embeddings in process: latency with slices streamed to the encoder
    /// during decoding, without, and from the embedding cache. Prints JSON.
    Embed(EmbedBench),
}

#[derive(Debug, Args)]
struct BatchBench {
    /// Hugging Face model folder (e.g. from `reel model init --random`).
    #[arg(long)]
    model: PathBuf,
    /// Concurrent requests.
    #[arg(long, default_value_t = 64)]
    requests: usize,
    /// Grid of every request, TxHxW in patches (2x16x16: four 224x224 frames).
    #[arg(long, default_value = "2x16x16")]
    grid: String,
    #[command(flatten)]
    encoder: super::encoder::EncoderArgs,
    /// GPU to use.
    #[arg(long, default_value = "cuda:0")]
    device: crate::engine::DeviceChoice,
    /// Timed rounds per mode (after a warm-up); the median is reported.
    #[arg(long, default_value_t = 5)]
    iterations: usize,
}

#[derive(Debug, Args)]
struct EmbedBench {
    /// Video file.
    file: PathBuf,
    /// Hugging Face model folder.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    encoder: super::encoder::EncoderArgs,
    /// Where to run: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    device: crate::engine::DeviceChoice,
    /// Timed runs per mode (after a warm-up); the median is reported.
    #[arg(long, default_value_t = 5)]
    iterations: usize,
}

#[derive(Debug, Args)]
struct EncodeBench {
    /// Hugging Face model folder (e.g. from `reel model init --random`).
    #[arg(long)]
    model: PathBuf,
    /// A batch to time, repeatable: grids `TxHxW` joined by `+`; `N*TxHxW` repeats one.
    /// Default: 30x32x32, 1x74x136, 150x16x16 and 8*30x32x32.
    #[arg(long = "batch")]
    batches: Vec<String>,
    /// Compute dtype: auto (bf16 on a GPU, f32 on the CPU), f32, bf16, f16.
    #[arg(long, default_value = "auto")]
    dtype: String,
    /// Where to run: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    device: crate::engine::DeviceChoice,
    /// Timed runs per batch (after a warm-up run); the median is reported.
    #[arg(long, default_value_t = 5)]
    iterations: usize,
    /// Write each batch's embeddings (f32) to DIR/batch<i>.safetensors, for parity checks.
    #[arg(long)]
    save: Option<PathBuf>,
    /// GPU: after the timed runs, one more run with every operation synchronized and
    /// timed; reports seconds per operation.
    #[arg(long)]
    profile: bool,
}

#[derive(Debug, Args)]
struct DecodeBench {
    /// Video files; each is measured separately.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Concurrent session counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,7,8,14,16")]
    sessions: Vec<usize>,
    /// GPU to use.
    #[arg(long, default_value = "cuda:0")]
    device: crate::engine::DeviceChoice,
    /// Timed repetitions per session count (the best is reported).
    #[arg(long, default_value_t = 2)]
    repeat: usize,
}

#[derive(Debug, Args)]
struct FramesBench {
    /// Video files; each is timed separately.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Timed runs per file (after one warm-up run).
    #[arg(long, default_value_t = 5)]
    iterations: usize,
    /// Where to decode and preprocess: auto (a GPU when present), cpu, cuda (GPU 0, its
    /// video decoding on every GPU), cuda:N.
    #[arg(long, default_value = "auto")]
    device: crate::engine::DeviceChoice,
    /// CPU worker threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// GPU: at most this many NVDEC sessions for one video [default: the GPU's share,
    /// four per engine].
    #[arg(long)]
    sessions: Option<usize>,
    /// Videos prepared at once (copies of each file, from as many threads); the
    /// aggregate decode rate is reported.
    #[arg(long, default_value_t = 1)]
    concurrent: usize,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        BenchCommand::Frames(b) => frames(b),
        BenchCommand::Decode(b) => decode(b),
        BenchCommand::Encode(b) => encode(b),
        BenchCommand::Batch(b) => batch(b),
        BenchCommand::Embed(b) => embed(b),
    }
}

/// CPU time (user + system) this process has used so far; zero if it cannot be read.
fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one rusage through the pointer it is given.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } != 0 {
        return Duration::ZERO;
    }
    // SAFETY: the successful call above initialized it.
    let usage = unsafe { usage.assume_init() };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn frames(b: FramesBench) -> anyhow::Result<()> {
    let threads = crate::engine::threads(b.threads);
    let device = crate::engine::Devices::open(b.device)?.primary();
    let options = b.sampling.options();
    let mut results = Vec::new();
    for file in &b.files {
        let prepare_one = || -> anyhow::Result<(usize, usize, usize)> {
            let video =
                Video::open(file).with_context(|| format!("cannot open {}", file.display()))?;
            let plan = SamplePlan::new(video.info(), video.index(), &options)?;
            let cancel = reel_codec::Cancel::new();
            let report = match (&device, b.sessions) {
                (crate::engine::Device::Cuda(gpu), Some(n)) => {
                    let dtype = reel_codec::gpu::PixelDtype::F32;
                    let prepared = gpu.prepare(&video, &plan, n, dtype, &cancel)?;
                    prepared.synchronize()?;
                    prepared.report
                }
                _ => {
                    let prepared =
                        crate::engine::prepare(&device, &video, &plan, threads, &cancel, None)?;
                    prepared.pixels.synchronize()?;
                    prepared.report
                }
            };
            Ok((
                video.index().len(),
                plan.frames.len(),
                report.packets_decoded,
            ))
        };
        let run_once = || -> anyhow::Result<(Duration, Duration, usize, usize, usize)> {
            let (t, cpu) = (Instant::now(), process_cpu());
            let runs: Vec<anyhow::Result<(usize, usize, usize)>> = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..b.concurrent.max(1))
                    .map(|_| scope.spawn(prepare_one))
                    .collect();
                workers
                    .into_iter()
                    .map(|w| {
                        w.join()
                            .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker panicked")))
                    })
                    .collect()
            });
            let runs = runs.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
            let (total, sampled, decoded) = runs[0];
            Ok((t.elapsed(), process_cpu() - cpu, total, sampled, decoded))
        };
        let (_, _, total, sampled, decoded) = run_once()?;
        let runs = (0..b.iterations.max(1))
            .map(|_| run_once().map(|r| (r.0, r.1)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let times: Vec<Duration> = runs.iter().map(|r| r.0).collect();
        let med = median(times.clone()).as_secs_f64();
        // Host CPU per run, for what bounds several GPUs: cores kept busy, and CPU time per
        // decoded picture (demux, bitstream parsing, launches, waits that spin).
        let cpu = median(runs.iter().map(|r| r.1).collect()).as_secs_f64();
        let pictures = (b.concurrent.max(1) * decoded) as f64;
        eprintln!(
            "{}: median {:.3} s over {} runs",
            file.display(),
            med,
            times.len()
        );
        results.push(serde_json::json!({
            "file": file,
            "device": device.name(),
            "threads": threads,
            "video_frames": total,
            "sampled_frames": sampled,
            "packets_decoded": decoded,
            "latency_s": { "median": med, "min": times.iter().min().unwrap().as_secs_f64(), "max": times.iter().max().unwrap().as_secs_f64(), "runs": times.len() },
            "video_frames_per_s": total as f64 / med,
            "sampled_frames_per_s": sampled as f64 / med,
            "sessions": b.sessions,
            "concurrent": b.concurrent,
            "videos_per_s": b.concurrent as f64 / med,
            "aggregate_decoded_fps": (b.concurrent * decoded) as f64 / med,
            "host_cpu": { "seconds": cpu, "cores_busy": cpu / med, "us_per_decoded_frame": 1e6 * cpu / pictures },
        }));
    }
    crate::output::print(serde_json::to_string_pretty(&results)?)?;
    Ok(())
}

fn decode(b: DecodeBench) -> anyhow::Result<()> {
    let crate::engine::Device::Cuda(gpu) = crate::engine::Devices::open(b.device)?.primary() else {
        anyhow::bail!("bench decode measures NVDEC: pass --device cuda or cuda:N");
    };
    let mut results = Vec::new();
    for file in &b.files {
        let video = Video::open(file).with_context(|| format!("cannot open {}", file.display()))?;
        let caps = gpu.check_stream(video.info())?;
        let frames = video.index().len();
        let run = |n: usize| -> anyhow::Result<Duration> {
            let start = Instant::now();
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..n)
                    .map(|_| scope.spawn(|| gpu.decode_all_to_device(&video)))
                    .collect();
                workers
                    .into_iter()
                    .map(|w| {
                        w.join()
                            .map_err(|_| anyhow::anyhow!("decode worker panicked"))?
                            .map_err(anyhow::Error::from)
                    })
                    .collect::<anyhow::Result<Vec<usize>>>()
            })?;
            Ok(start.elapsed())
        };
        // Warm up: kernels, and a pooled decoder per session of the largest count.
        run(b.sessions.iter().copied().max().unwrap_or(1))?;
        let mut rows = Vec::new();
        for &n in &b.sessions {
            let best = (0..b.repeat.max(1))
                .map(|_| run(n))
                .collect::<anyhow::Result<Vec<_>>>()?
                .into_iter()
                .min()
                .unwrap();
            let fps = (n * frames) as f64 / best.as_secs_f64();
            eprintln!("{}: {n} sessions: {fps:.0} fps", file.display());
            rows.push(serde_json::json!({"sessions": n, "seconds": best.as_secs_f64(), "aggregate_fps": fps, "per_session_fps": fps / n as f64}));
        }
        results.push(serde_json::json!({
            "file": file,
            "codec": video.info().codec,
            "size": [video.info().width, video.info().height],
            "frames": frames,
            "nvdec_engines": caps.engines,
            "results": rows,
        }));
    }
    crate::output::print(serde_json::to_string_pretty(&results)?)?;
    Ok(())
}

/// Parses `30x32x32+1x74x136` or `8*30x32x32` into grids.
/// Median, min and run count of timings, as JSON.
fn latency_json(times: &[Duration]) -> serde_json::Value {
    serde_json::json!({
        "median": median(times.to_vec()).as_secs_f64(),
        "min": times.iter().min().map(Duration::as_secs_f64),
        "runs": times.len(),
    })
}

fn batch(b: BatchBench) -> anyhow::Result<()> {
    use reel_encoder::cuda::{InputDtype, PoolPeak};
    let device = crate::engine::Devices::open(b.device)?.primary();
    let crate::engine::Device::Cuda(gpu) = &device else {
        anyhow::bail!("reel bench batch needs a GPU");
    };
    let model = crate::engine::Model::load(&b.model, &b.encoder.options(), &device)
        .with_context(|| format!("cannot load {}", b.model.display()))?;
    let batcher = model.batcher().context("a GPU model has a batcher")?;
    let tower = &model.tower;
    let grid = match parse_batch(&b.grid)?[..] {
        [g] => g,
        _ => anyhow::bail!("--grid takes one TxHxW"),
    };
    let patches: usize = grid.iter().product();
    let patch_dim = tower.config().patch_dim();
    let stream = gpu.context().default_stream();
    let inputs = (0..b.requests.max(1))
        .map(|i| {
            let v = reel_encoder::init::seeded_pixels(2000 + i as u64, patches, patch_dim);
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            Ok(std::sync::Arc::new(stream.clone_htod(&bytes)?))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    stream.synchronize()?;
    let one_by_one = || -> anyhow::Result<Duration> {
        let t = Instant::now();
        for input in &inputs {
            drop(tower.encode_device(input, InputDtype::F32, &[grid])?);
        }
        Ok(t.elapsed())
    };
    let batched = || -> anyhow::Result<Duration> {
        let t = Instant::now();
        let requests = inputs
            .iter()
            .map(|input| {
                let r = batcher.request(grid)?;
                r.submit_rest(input, InputDtype::F32);
                Ok(r)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        for r in requests {
            drop(r.finish()?);
        }
        Ok(t.elapsed())
    };
    one_by_one()?;
    batched()?;
    let rounds = b.iterations.max(1);
    let alone = (0..rounds)
        .map(|_| one_by_one())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let before = batcher.stats();
    let meter = PoolPeak::start(gpu.context())?;
    let together = (0..rounds)
        .map(|_| batched())
        .collect::<anyhow::Result<Vec<_>>>()?;
    let peak = meter.peak_above_start()?;
    let after = batcher.stats();
    let total = (patches * inputs.len()) as f64;
    let (m_alone, m_together) = (median(alone.clone()), median(together.clone()));
    let forwards = (after.forwards - before.forwards) as f64 / rounds as f64;
    eprintln!(
        "{} requests of {grid:?}: one forward each {:.0} patches/s, batched {:.0} patches/s ({:.2}x), {forwards:.1} forwards per round, peak {} MiB of a {} MiB budget",
        inputs.len(),
        total / m_alone.as_secs_f64(),
        total / m_together.as_secs_f64(),
        m_alone.as_secs_f64() / m_together.as_secs_f64(),
        peak >> 20,
        b.encoder.encoder_memory_mib
    );
    let summary = serde_json::json!({
        "model": b.model,
        "device": device.name(),
        "dtype": tower.dtype().to_string(),
        "requests": inputs.len(),
        "grid": grid,
        "patches_per_round": total,
        "one_forward_each": { "latency_s": latency_json(&alone), "patches_per_s": total / m_alone.as_secs_f64() },
        "batched": {
            "latency_s": latency_json(&together),
            "patches_per_s": total / m_together.as_secs_f64(),
            "forwards_per_round": forwards,
            "shared_forwards_per_round": (after.shared_forwards - before.shared_forwards) as f64 / rounds as f64,
            "max_patches_per_forward": batcher.max_patches(),
            "peak_pool_bytes": peak,
        },
        "memory_budget_bytes": b.encoder.encoder_memory_mib << 20,
        "speedup": m_alone.as_secs_f64() / m_together.as_secs_f64(),
    });
    crate::output::print(serde_json::to_string_pretty(&summary)?)?;
    Ok(())
}

fn embed(b: EmbedBench) -> anyhow::Result<()> {
    use crate::engine::{self, EmbeddingCache, Input, Want};
    use std::sync::Arc;
    let device = crate::engine::Devices::open(b.device)?.primary();
    let model = crate::engine::Model::load(&b.model, &b.encoder.options(), &device)
        .with_context(|| format!("cannot load {}", b.model.display()))?;
    let options = b.sampling.options_for(&model.processor);
    let threads = crate::engine::threads(None);
    let cancel = reel_codec::Cancel::new();
    let run = |want: &Want,
               cache: Option<&EmbeddingCache>|
     -> anyhow::Result<(Duration, engine::Outcome)> {
        let t = Instant::now();
        let input = Input::Path(b.file.clone());
        let outcome = engine::run(&device, input, &options, want, threads, &cancel, cache)?;
        Ok((t.elapsed(), outcome))
    };
    let mut modes = serde_json::Map::new();
    let mut reference: Option<Vec<f32>> = None;
    for (name, stream) in [("decode_then_encode", false), ("streamed_slices", true)] {
        let want = Want::Embeddings(Arc::new(model.with_stream_slices(stream)));
        let (_, first) = run(&want, None)?;
        let values = first.values.into_host_f32()?;
        let max_diff = reference.as_ref().map(|r| {
            r.iter()
                .zip(&values)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        });
        reference.get_or_insert(values);
        let mut times = Vec::new();
        let mut timings = Vec::new();
        for _ in 0..b.iterations.max(1) {
            let (t, outcome) = run(&want, None)?;
            times.push(t);
            timings.push(outcome.timings);
        }
        eprintln!(
            "{name}: median {:.4} s",
            median(times.clone()).as_secs_f64()
        );
        modes.insert(
            name.into(),
            serde_json::json!({
                "latency_s": latency_json(&times),
                "timings": timings,
                "max_abs_diff_vs_decode_then_encode": max_diff,
            }),
        );
    }
    let cache = EmbeddingCache::new(u64::MAX);
    let want = Want::Embeddings(Arc::new(model.with_stream_slices(true)));
    run(&want, Some(&cache))?;
    let hits = (0..b.iterations.max(1))
        .map(|_| run(&want, Some(&cache)).map(|r| r.0))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(
        cache.hits() == hits.len() as u64,
        "the cache missed a repeated video"
    );
    eprintln!(
        "cache hit: median {:.4} s",
        median(hits.clone()).as_secs_f64()
    );
    modes.insert(
        "cache_hit".into(),
        serde_json::json!({ "latency_s": latency_json(&hits) }),
    );
    let summary = serde_json::json!({
        "file": b.file,
        "model": b.model,
        "device": device.name(),
        "dtype": model.tower.dtype().to_string(),
        "modes": modes,
    });
    crate::output::print(serde_json::to_string_pretty(&summary)?)?;
    Ok(())
}

fn parse_batch(spec: &str) -> anyhow::Result<Vec<[usize; 3]>> {
    let mut grids = Vec::new();
    for item in spec.split('+') {
        let (count, grid) = match item.split_once('*') {
            Some((n, g)) => (n.trim().parse::<usize>()?, g),
            None => (1, item),
        };
        let v: Vec<usize> = grid
            .split('x')
            .map(|x| x.trim().parse())
            .collect::<Result<_, _>>()
            .with_context(|| format!("grid `{grid}` is not TxHxW"))?;
        anyhow::ensure!(v.len() == 3, "grid `{grid}` is not TxHxW");
        grids.extend(std::iter::repeat_n([v[0], v[1], v[2]], count));
    }
    Ok(grids)
}

fn encode(b: EncodeBench) -> anyhow::Result<()> {
    use reel_encoder::cuda::{gemm_peak_tflops, InputDtype, PoolPeak};
    let device = crate::engine::Devices::open(b.device)?.primary();
    let t_load = Instant::now();
    let options = crate::engine::ModelOptions {
        dtype: b.dtype.clone(),
        memory_budget: u64::MAX,
        stream_slices: false,
    };
    let model = crate::engine::Model::load(&b.model, &options, &device)
        .with_context(|| format!("cannot load {}", b.model.display()))?;
    let tower = &model.tower;
    let load_s = t_load.elapsed().as_secs_f64();
    let cfg = tower.config().clone();
    let specs = if b.batches.is_empty() {
        ["30x32x32", "1x74x136", "150x16x16", "8*30x32x32"]
            .map(String::from)
            .to_vec()
    } else {
        b.batches.clone()
    };
    let peak = match &device {
        crate::engine::Device::Cuda(gpu) => Some(gemm_peak_tflops(gpu.context(), 8192)?),
        crate::engine::Device::Cpu => None,
    };
    if let Some(p) = peak {
        eprintln!("bf16 GEMM peak (cuBLASLt 8192³): {p:.0} TFLOP/s");
    }
    let mut results = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let grids = parse_batch(spec)?;
        let plan = reel_encoder::Plan::new(&cfg, &grids)?;
        let pixels =
            reel_encoder::init::seeded_pixels(1000 + i as u64, plan.patches, cfg.patch_dim());
        let flops = plan.flops(&cfg);
        let mut times = Vec::new();
        let mut peak_bytes = None;
        let mut profile = None;
        let output = match &device {
            crate::engine::Device::Cuda(gpu) => {
                // Inputs go to the GPU once, as the preprocessing would leave them there.
                let stream = gpu.context().default_stream();
                let (input, dtype) = if tower.dtype() == reel_encoder::DType::BF16 {
                    let v: Vec<u16> = pixels
                        .iter()
                        .map(|&x| half::bf16::from_f32(x).to_bits())
                        .collect();
                    (
                        stream.clone_htod(
                            &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>(),
                        )?,
                        InputDtype::Bf16,
                    )
                } else {
                    (
                        stream.clone_htod(
                            &pixels
                                .iter()
                                .flat_map(|x| x.to_le_bytes())
                                .collect::<Vec<u8>>(),
                        )?,
                        InputDtype::F32,
                    )
                };
                stream.synchronize()?;
                let meter = PoolPeak::start(gpu.context())?;
                let out = tower.encode_device(&input, dtype, &grids)?;
                peak_bytes = Some(meter.peak_above_start()?);
                for _ in 0..b.iterations.max(1) {
                    let t = Instant::now();
                    drop(tower.encode_device(&input, dtype, &grids)?);
                    times.push(t.elapsed());
                }
                if b.profile {
                    tower.set_profiling(true);
                    drop(tower.encode_device(&input, dtype, &grids)?);
                    profile = tower.profile();
                    tower.set_profiling(false);
                }
                out.to_host_f32()?
            }
            crate::engine::Device::Cpu => {
                let out = tower.encode(&pixels, &grids)?;
                for _ in 0..b.iterations.max(1) {
                    let t = Instant::now();
                    drop(tower.encode(&pixels, &grids)?);
                    times.push(t.elapsed());
                }
                out.data
            }
        };
        let med = median(times.clone()).as_secs_f64();
        let tflops = flops / med / 1e12;
        eprintln!(
            "{spec}: {} patches, median {:.4} s, {:.0} patches/s, {tflops:.1} TFLOP/s{}",
            plan.patches,
            med,
            plan.patches as f64 / med,
            peak.map(|p| format!(", MFU {:.1}%", 100.0 * tflops / p))
                .unwrap_or_default()
        );
        if let Some(dir) = &b.save {
            std::fs::create_dir_all(dir)?;
            let tensors = [crate::output::NamedTensor::f32(
                "embeddings",
                vec![plan.tokens, cfg.output_width()],
                &output,
            )];
            crate::output::write_safetensors(
                &dir.join(format!("batch{i}.safetensors")),
                &tensors,
                Default::default(),
            )?;
        }
        results.push(serde_json::json!({
            "batch": spec,
            "grids": grids,
            "seed": 1000 + i as u64,
            "patches": plan.patches,
            "tokens": plan.tokens,
            "flops": flops,
            "latency_s": { "median": med, "min": times.iter().min().unwrap().as_secs_f64(), "runs": times.len() },
            "patches_per_s": plan.patches as f64 / med,
            "tflops": tflops,
            "mfu": peak.map(|p| tflops / p),
            "peak_activation_bytes": peak_bytes,
            "activation_bytes_per_patch": peak_bytes.map(|v| v as f64 / plan.patches as f64),
            "profile_s": profile.map(|p| p.into_iter().map(|(k, v)| (k, v.into())).collect::<serde_json::Map<_, _>>()),
        }));
    }
    let summary = serde_json::json!({
        "model": b.model,
        "device": device.name(),
        "dtype": tower.dtype().to_string(),
        "load_s": load_s,
        "gemm_peak_tflops": peak,
        "batches": results,
    });
    crate::output::print(serde_json::to_string_pretty(&summary)?)?;
    Ok(())
}
