//! Command-line interface.

mod bench;
mod embed;
mod encoder;
mod frames;
mod model;
mod probe;
mod sampling;
mod transcode;

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
    /// CUDA IPC or shared memory.
    Serve(crate::serve::ServeArgs),
    /// Benchmarks (numbers as JSON, for bench/results/).
    Bench(bench::BenchArgs),
}

impl Cli {
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Probe(args) => probe::run(args),
            Command::Frames(args) => frames::run(args),
            Command::Embed(args) => embed::run(args),
            Command::Model(args) => model::run(args),
            Command::Transcode(args) => transcode::run(args),
            Command::Serve(args) => crate::serve::run(args),
            Command::Bench(args) => bench::run(args),
        }
    }
}
