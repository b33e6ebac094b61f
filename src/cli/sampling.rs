//! Sampling and sizing flags shared by the commands that sample videos.

use clap::Args;
use reel_codec::plan::VideoProcessor;
use reel_codec::SamplingOptions;

/// How frames are chosen and sized. Defaults are the model's processor's (qwen-vl-utils'
/// without a model).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sampling (defaults: the model's processor)")]
pub struct SamplingArgs {
    /// Frames per second to sample [default: the model processor's; 2].
    #[arg(long)]
    pub fps: Option<f64>,
    /// Fewest frames to sample [default: the model processor's; 4].
    #[arg(long)]
    pub min_frames: Option<usize>,
    /// Most frames to sample (rounded down to even) [default: min(768, frames in range)].
    #[arg(long)]
    pub max_frames: Option<usize>,
    /// Sample exactly this many frames, evenly spaced (rounded to even), instead of --fps.
    #[arg(long, conflicts_with_all = ["frames", "timestamps"])]
    pub nframes: Option<usize>,
    /// Sample these frame indices (presentation order, comma-separated).
    #[arg(long, value_delimiter = ',', conflicts_with = "timestamps")]
    pub frames: Option<Vec<usize>>,
    /// Sample the frames shown at these times in seconds (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub timestamps: Option<Vec<f64>>,
    /// Start of the sampled range, in seconds.
    #[arg(long)]
    pub start: Option<f64>,
    /// End of the sampled range, in seconds.
    #[arg(long)]
    pub end: Option<f64>,
    /// Fewest pixels per frame after resizing.
    #[arg(long, default_value_t = reel_codec::plan::DEFAULT_MIN_PIXELS)]
    pub min_pixels: u64,
    /// Most pixels per frame after resizing [default: min(768·28², total-pixels·2/frames)].
    #[arg(long)]
    pub max_pixels: Option<u64>,
    /// Pixel budget of the whole video (qwen-vl-utils: 128000·28²·0.9).
    #[arg(long, default_value_t = (128_000u64 * 28 * 28) as f64 * 0.9)]
    pub total_pixels: f64,
    /// Resize every frame to this height (with --resized-width; rounded to multiples of 28).
    #[arg(long, requires = "resized_width")]
    pub resized_height: Option<u32>,
    /// Resize every frame to this width (with --resized-height).
    #[arg(long, requires = "resized_height")]
    pub resized_width: Option<u32>,
    /// YUV to RGB: `reference` gives the frames OpenCV and PyAV read from the
    /// same file (FFmpeg swscale's arithmetic; what the models saw); `accurate` uses the
    /// signalled matrix and range in floating point with bilinear chroma (truer colours,
    /// not what the models were trained on). docs/preprocessing.md.
    #[arg(long, default_value_t = reel_codec::preprocess::ColorMode::Reference)]
    pub color: reel_codec::preprocess::ColorMode,
}

impl SamplingArgs {
    /// The options for qwen-vl-utils' processor (no model).
    pub fn options(&self) -> SamplingOptions {
        self.options_for(&VideoProcessor::default())
    }

    /// The options for `processor`: its own defaults where a flag is not given.
    pub fn options_for(&self, processor: &VideoProcessor) -> SamplingOptions {
        let base = SamplingOptions::for_processor(processor);
        SamplingOptions {
            fps: self.fps.unwrap_or(base.fps),
            min_frames: self.min_frames.unwrap_or(base.min_frames),
            max_frames: self.max_frames.or(base.max_frames),
            nframes: self.nframes,
            frames: self.frames.clone(),
            timestamps: self.timestamps.clone(),
            start: self.start,
            end: self.end,
            min_pixels: self.min_pixels as f64,
            max_pixels: self.max_pixels.map(|p| p as f64),
            total_pixels: self.total_pixels,
            resized: self.resized_height.zip(self.resized_width),
            color: self.color,
            ..base
        }
    }
}
