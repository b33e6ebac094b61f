//! Command-line interface.

mod bench;
mod embed;
mod encoder;
mod frames;
mod model;
mod probe;
mod sampling;
mod transcode;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Turn videos into model-ready frames and vision-encoder embeddings, on NVIDIA
/// hardware decoders and CUDA when present, on the CPU otherwise.
#[derive(Debug, Parser)]
#[command(name = "reel", version, propagate_version = true)]
pub struct Cli {
    /// Log debug information (or set REEL_LOG, e.g. REEL_LOG=reel_codec=trace).
    #[arg(long, short, global = true)]
    pub verbose: bool,
    /// Write a timeline of the work (demux, decode segments, frame conversions, encoder
    /// forwards, per thread) to this file in Chrome's trace format (open it in Perfetto
    /// or chrome://tracing).
    #[arg(long, global = true, value_name = "FILE")]
    pub trace: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show a video's stream information: codec, size, colour, timing, GOPs.
    Probe(probe::ProbeArgs),
    /// Sample frames and preprocess them for Qwen2.5-VL into a safetensors file
    /// (pixel_values [t·h·w, 1176] f32, video_grid_thw, frame indices, timestamps).
    Frames(frames::FramesArgs),
    /// Sample, preprocess and encode a video with a Qwen2.5-VL vision tower into a
    /// safetensors file (embeddings, video_grid_thw, second_per_grid_ts, frame indices,
    /// timestamps).
    Embed(embed::EmbedArgs),
    /// Turn many videos into safetensors shards of frames and/or embeddings with a JSONL
    /// manifest; resumable, parallel, shardable (`--shard i/N`). Exit code 2 when some
    /// videos failed (they are listed in the manifest).
    Transcode(transcode::TranscodeArgs),
    /// Model folders: `reel model init` writes one with random weights.
    Model(model::ModelArgs),
    /// Serve videos-to-embeddings over gRPC (reel.v1), with results handed over through
    /// CUDA IPC or shared memory (options also from a TOML file: --config).
    Serve(crate::serve::ServeConfig),
    /// Benchmarks (numbers as JSON, for bench/results/).
    Bench(bench::BenchArgs),
}

impl Cli {
    /// Runs the command; `matches` are the ones this `Cli` was parsed from (the serve
    /// configuration needs to know which flags were given).
    /// The exit code is 0, or what the command says (`transcode`: 2 when videos failed);
    /// errors are `main`'s to report.
    pub fn run(self, matches: &clap::ArgMatches) -> anyhow::Result<ExitCode> {
        let done = |result: anyhow::Result<()>| result.map(|()| ExitCode::SUCCESS);
        match self.command {
            Command::Probe(args) => done(probe::run(args)),
            Command::Frames(args) => done(frames::run(args)),
            Command::Embed(args) => done(embed::run(args)),
            Command::Model(args) => done(model::run(args)),
            Command::Transcode(args) => transcode::run(args),
            Command::Serve(_) => {
                let serve = matches
                    .subcommand_matches("serve")
                    .ok_or_else(|| anyhow::anyhow!("no serve arguments"))?;
                done(crate::serve::run(crate::serve::ServeConfig::from_matches(
                    serve,
                )?))
            }
            Command::Bench(args) => done(bench::run(args)),
        }
    }
}
