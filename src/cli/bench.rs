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
    /// Where to decode and preprocess: auto, cpu, cuda, cuda:N.
    #[arg(long, default_value = "auto")]
    device: crate::engine::DeviceChoice,
    /// CPU worker threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        BenchCommand::Frames(b) => frames(b),
        BenchCommand::Decode(b) => decode(b),
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn frames(b: FramesBench) -> anyhow::Result<()> {
    let threads = crate::engine::threads(b.threads);
    let device = crate::engine::Device::select(b.device)?;
    let options = b.sampling.options();
    let mut results = Vec::new();
    for file in &b.files {
        let run_once = || -> anyhow::Result<(Duration, usize, usize, usize)> {
            let t = Instant::now();
            let video =
                Video::open(file).with_context(|| format!("cannot open {}", file.display()))?;
            let plan = SamplePlan::new(video.info(), video.index(), &options)?;
            let prepared = crate::engine::prepare(
                &device,
                &video,
                &plan,
                threads,
                &reel_codec::Cancel::new(),
            )?;
            prepared.pixels.synchronize()?;
            Ok((
                t.elapsed(),
                video.index().len(),
                plan.frames.len(),
                prepared.report.packets_decoded,
            ))
        };
        let (_, total, sampled, decoded) = run_once()?;
        let times = (0..b.iterations.max(1))
            .map(|_| run_once().map(|r| r.0))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let med = median(times.clone()).as_secs_f64();
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
        }));
    }
    crate::output::print(serde_json::to_string_pretty(&results)?);
    Ok(())
}

fn decode(b: DecodeBench) -> anyhow::Result<()> {
    let crate::engine::Device::Cuda(gpu) = crate::engine::Device::select(b.device)? else {
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
    crate::output::print(serde_json::to_string_pretty(&results)?);
    Ok(())
}
