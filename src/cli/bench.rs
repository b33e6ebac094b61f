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
            let prepared = crate::engine::prepare(&device, &video, &plan, threads)?;
            std::hint::black_box(&prepared.pixel_values.data);
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
    println!("{}", serde_json::to_string_pretty(&results)?);
    Ok(())
}
