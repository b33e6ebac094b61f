//! Sampling plans: which frames to take, at what size, and which packets to decode.
//!
//! Two processors are reproduced ([`VideoProcessor`]):
//! - qwen-vl-utils 0.0.14 for Qwen2.5-VL (`smart_nframes`,
//!   `calculate_video_frame_range`, `fetch_video`, `smart_resize`) including its
//!   float32 `torch.linspace` (whose CPU kernel computes `fma(step, i, start)`);
//! - HF transformers 5.17's `Qwen3VLVideoProcessor` for Qwen3-VL ([`qwen3`]).
//!
//! The same video yields the same frame indices and sizes as the Python reference.
//! The plan also carries what the preprocessing needs from the processor: the patch
//! geometry, the normalization and which resize arithmetic to use.

use std::ops::Range;

use serde::Serialize;

use crate::index::PacketIndex;
use crate::preprocess::{ColorMode, Normalization, Resize};
use crate::stream::StreamInfo;
use crate::{Error, Result};

pub mod qwen3;

pub use qwen3::Qwen3VideoProcessor;

/// Side length of a ViT patch for Qwen2.5-VL ([`VideoProcessor::QwenVlUtils`]); the
/// plan's [`SamplePlan::geometry`] holds the one in use.
pub const PATCH_SIZE: u32 = 14;
/// Spatial merge of Qwen2.5-VL's vision tower (2×2 patches per token).
pub const MERGE_SIZE: u32 = 2;
/// Frames per temporal patch of Qwen2.5-VL.
pub const TEMPORAL_PATCH_SIZE: usize = 2;
/// qwen-vl-utils' resize granularity: patch × merge.
pub const FACTOR: u32 = PATCH_SIZE * MERGE_SIZE;
/// Largest aspect ratio the processors accept.
pub const MAX_RATIO: f64 = 200.0;

/// The patch layout of a vision tower: frames are cut into `patch_size`² patches,
/// `temporal_patch_size` frames deep, and `merge_size`² patches make one token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PatchGeometry {
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
}

impl PatchGeometry {
    /// Qwen2.5-VL's: patch 14, temporal patch 2, merge 2.
    pub const QWEN2_5_VL: PatchGeometry = PatchGeometry {
        patch_size: PATCH_SIZE as usize,
        temporal_patch_size: TEMPORAL_PATCH_SIZE,
        merge_size: MERGE_SIZE as usize,
    };

    /// Values per patch row: 3 channels × temporal × patch².
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Resize granularity: patch × merge.
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }
}

/// Which Hugging Face preprocessing a plan reproduces.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub enum VideoProcessor {
    /// Qwen2.5-VL: qwen-vl-utils 0.0.14's sampling and resize (torchvision's float
    /// bicubic), then `Qwen2VLVideoProcessor`: patch 14, temporal 2, merge 2, CLIP's
    /// mean/std.
    #[default]
    QwenVlUtils,
    /// Qwen3-VL: transformers 5.17's `Qwen3VLVideoProcessor` (sampling from the
    /// stream's frame count and rate, resize of the uint8 frames).
    Qwen3Vl(Qwen3VideoProcessor),
}

impl VideoProcessor {
    pub fn geometry(&self) -> PatchGeometry {
        match self {
            VideoProcessor::QwenVlUtils => PatchGeometry::QWEN2_5_VL,
            VideoProcessor::Qwen3Vl(p) => p.geometry(),
        }
    }

    pub fn normalization(&self) -> Normalization {
        match self {
            VideoProcessor::QwenVlUtils => Normalization::clip(),
            VideoProcessor::Qwen3Vl(p) => p.normalization,
        }
    }

    /// The resize arithmetic: qwen-vl-utils resizes float32 frames, HF's video
    /// processors (torchvision v2) the uint8 frames with torch's integer kernel.
    pub fn resize(&self) -> Resize {
        match self {
            VideoProcessor::QwenVlUtils => Resize::BicubicFloat,
            VideoProcessor::Qwen3Vl(_) => Resize::BicubicUint8,
        }
    }
}

/// How to sample a video. Defaults are qwen-vl-utils' defaults.
///
/// With [`VideoProcessor::Qwen3Vl`], `fps`, `min_frames`, `max_frames` (`None`: the
/// processor's), `nframes` (HF's `num_frames`, used as given), `frames`, `timestamps`
/// and `color` apply; `start`/`end`, `min_pixels`, `max_pixels`, `total_pixels` and
/// `resized` have no equivalent there and are refused ([`Error::Sampling`]) unless
/// left at their defaults.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SamplingOptions {
    /// Frames per second to sample.
    pub fps: f64,
    pub min_frames: usize,
    /// Upper bound on frames; `None`: min(768, frames in range) (Qwen3-VL: the
    /// processor's `max_frames`).
    pub max_frames: Option<usize>,
    /// An exact frame count instead of `fps` (qwen-vl-utils: rounded to even).
    pub nframes: Option<usize>,
    /// Explicit frame indices (presentation order); overrides fps/nframes.
    pub frames: Option<Vec<usize>>,
    /// Explicit times in seconds, each mapped to the nearest frame.
    pub timestamps: Option<Vec<f64>>,
    /// Start of the sampled range in seconds.
    pub start: Option<f64>,
    /// End of the sampled range in seconds.
    pub end: Option<f64>,
    /// Lower bound on pixels per frame after resizing.
    pub min_pixels: f64,
    /// Upper bound on pixels per frame; `None`: derived from `total_pixels`.
    pub max_pixels: Option<f64>,
    /// Pixel budget of the whole video (qwen-vl-utils: 128000 tokens × 28² × 0.9).
    pub total_pixels: f64,
    /// A fixed size (height, width), rounded to multiples of 28.
    pub resized: Option<(u32, u32)>,
    /// How YUV becomes RGB (the reference readers' arithmetic by default).
    pub color: ColorMode,
    /// The preprocessing to reproduce (qwen-vl-utils for Qwen2.5-VL by default).
    pub processor: VideoProcessor,
}

impl SamplingOptions {
    /// Defaults for `processor`: for Qwen3-VL its `fps`, `min_frames` and
    /// `max_frames`.
    pub fn for_processor(processor: &VideoProcessor) -> Self {
        let mut o = Self {
            processor: processor.clone(),
            ..Self::default()
        };
        if let VideoProcessor::Qwen3Vl(p) = processor {
            o.fps = p.fps;
            o.min_frames = p.min_frames;
            o.max_frames = Some(p.max_frames);
        }
        o
    }
}

/// qwen-vl-utils' VIDEO_MIN_TOKEN_NUM × 28².
pub const DEFAULT_MIN_PIXELS: u64 = 128 * 28 * 28;
/// qwen-vl-utils' VIDEO_MAX_TOKEN_NUM × 28².
pub const FRAME_MAX_PIXELS: f64 = (768 * 28 * 28) as f64;

impl Default for SamplingOptions {
    fn default() -> Self {
        Self {
            fps: 2.0,
            min_frames: 4,
            max_frames: None,
            nframes: None,
            frames: None,
            timestamps: None,
            start: None,
            end: None,
            min_pixels: DEFAULT_MIN_PIXELS as f64,
            max_pixels: None,
            total_pixels: (128_000u64 * 28 * 28) as f64 * 0.9,
            resized: None,
            color: ColorMode::default(),
            processor: VideoProcessor::default(),
        }
    }
}

/// A contiguous run of packets (decode order) to feed one decoder, starting at a GOP.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DecodeRange {
    pub packets: Range<usize>,
}

/// The outcome of planning: frames, geometry and decode work.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SamplePlan {
    /// Sampled frame indices (presentation order), one per output slot.
    pub frames: Vec<usize>,
    /// Presentation time of each sampled frame, in seconds.
    pub timestamps: Vec<f64>,
    /// One time per temporal patch, in seconds. Qwen3-VL: its processor's
    /// `_calculate_timestamps` (indices padded with the last, `index / stream fps`,
    /// mean of each patch's first and last frame), the times of its prompt's
    /// `<t seconds>`. Qwen2.5-VL: the mean of the patch's first and last frame's
    /// presentation times (padded the same way).
    pub group_timestamps: Vec<f64>,
    /// Effective sampling rate (qwen-vl-utils' `sample_fps`; Qwen3-VL: HF's
    /// `sampled_fps`, sampled frames / frames × stream fps).
    pub sample_fps: f64,
    pub resized_height: u32,
    pub resized_width: u32,
    /// Patch grid (t, h, w): what the processors call video_grid_thw.
    pub grid_thw: [usize; 3],
    /// Seconds per temporal patch: temporal_patch_size / sample_fps.
    pub second_per_grid_t: f64,
    /// Packet ranges to decode, ascending and disjoint.
    pub decode: Vec<DecodeRange>,
    /// How the frames' YUV becomes RGB.
    pub color: ColorMode,
    /// Patch layout of the pixel values.
    pub geometry: PatchGeometry,
    /// Rescale and normalization of the pixel values.
    pub normalization: Normalization,
    /// Resize arithmetic.
    pub resize: Resize,
}

impl SamplePlan {
    /// Plans sampling of a demuxed stream.
    pub fn new(info: &StreamInfo, index: &PacketIndex, options: &SamplingOptions) -> Result<Self> {
        let total = index.len();
        let video_fps = info.frame_rate;
        if !(video_fps.is_finite() && video_fps > 0.0) {
            return Err(Error::Sampling(format!(
                "stream frame rate {video_fps} is not usable"
            )));
        }
        let processor = &options.processor;
        if let VideoProcessor::Qwen3Vl(p) = processor {
            p.check(options)?;
        }
        let geometry = processor.geometry();
        let temporal = geometry.temporal_patch_size;
        let (frames, sample_fps) = if let Some(frames) = &options.frames {
            (explicit_frames(frames, total)?, None)
        } else if let Some(times) = &options.timestamps {
            (frames_at_times(times, info, index)?, None)
        } else {
            match processor {
                VideoProcessor::QwenVlUtils => {
                    let selection = select_frames(options, total, video_fps)?;
                    (selection.indices, Some(selection.sample_fps))
                }
                VideoProcessor::Qwen3Vl(p) => {
                    let frames = qwen3::sample_frames(p, options, total, video_fps)?;
                    let sampled = frames.len() as f64 / total as f64 * video_fps;
                    (frames, Some(sampled))
                }
            }
        };
        let timestamps: Vec<f64> = frames
            .iter()
            .map(|&f| index.frame_time(f, info.time_base))
            .collect();
        let group_timestamps = match processor {
            VideoProcessor::QwenVlUtils => group_means(&timestamps, temporal),
            VideoProcessor::Qwen3Vl(_) => qwen3::group_timestamps(&frames, video_fps, temporal),
        };
        let sample_fps = sample_fps.unwrap_or_else(|| spacing_fps(&timestamps, options.fps));
        let (frame_h, frame_w) = info.display_size();
        let (resized_height, resized_width) = match processor {
            VideoProcessor::QwenVlUtils => {
                resized_size(options, frames.len(), frame_h.into(), frame_w.into())?
            }
            VideoProcessor::Qwen3Vl(p) => {
                qwen3::resized_size(p, frames.len(), frame_h.into(), frame_w.into())?
            }
        };
        let patch = geometry.patch_size as u32;
        let grid_thw = [
            frames.len().div_ceil(temporal),
            (resized_height / patch) as usize,
            (resized_width / patch) as usize,
        ];
        Ok(Self {
            decode: decode_ranges(index, &frames),
            frames,
            timestamps,
            group_timestamps,
            sample_fps,
            resized_height,
            resized_width,
            grid_thw,
            second_per_grid_t: temporal as f64 / sample_fps,
            color: options.color,
            geometry,
            normalization: processor.normalization(),
            resize: processor.resize(),
        })
    }

    /// Values per row of the pixel values (3 × temporal × patch²: 1176 for Qwen2.5-VL,
    /// 1536 for Qwen3-VL).
    pub fn patch_dim(&self) -> usize {
        self.geometry.patch_dim()
    }

    /// Output slots: sampled frames padded to whole temporal patches.
    pub fn slots(&self) -> usize {
        self.grid_thw[0] * self.geometry.temporal_patch_size
    }

    /// Number of vision tokens after the merge.
    pub fn tokens(&self) -> usize {
        let m = self.geometry.merge_size;
        self.grid_thw.iter().product::<usize>() / (m * m)
    }

    /// Packets the plan decodes.
    pub fn decoded_packets(&self) -> usize {
        self.decode.iter().map(|r| r.packets.len()).sum()
    }
}

fn explicit_frames(frames: &[usize], total: usize) -> Result<Vec<usize>> {
    if frames.is_empty() {
        return Err(Error::Sampling("empty frame list".into()));
    }
    if let Some(&bad) = frames.iter().find(|&&f| f >= total) {
        return Err(Error::Sampling(format!(
            "frame {bad} is past the last frame ({})",
            total - 1
        )));
    }
    Ok(frames.to_vec())
}

/// Maps each time to the frame shown at that time (the last frame starting at or before it).
fn frames_at_times(times: &[f64], info: &StreamInfo, index: &PacketIndex) -> Result<Vec<usize>> {
    if times.is_empty() {
        return Err(Error::Sampling("empty timestamp list".into()));
    }
    let starts: Vec<f64> = (0..index.len())
        .map(|f| index.frame_time(f, info.time_base))
        .collect();
    times
        .iter()
        .map(|&t| {
            if !(t.is_finite() && t >= 0.0 && t <= info.duration + 1e-9) {
                return Err(Error::Sampling(format!(
                    "timestamp {t} s is outside the video (0 to {:.3} s)",
                    info.duration
                )));
            }
            Ok(starts.partition_point(|&s| s <= t + 1e-9).max(1) - 1)
        })
        .collect()
}

/// Per temporal patch of `times` (padded with the last to whole patches of
/// `temporal`): the mean of the patch's first and last time.
pub fn group_means(times: &[f64], temporal: usize) -> Vec<f64> {
    let temporal = temporal.max(1);
    times
        .chunks(temporal)
        .map(|g| {
            let last = *g.last().expect("chunks are not empty");
            // A short last patch is padded with its last time.
            (g[0] + last) / 2.0
        })
        .collect()
}

/// Rate implied by explicit frames: spacing of their timestamps, else `fallback`.
fn spacing_fps(timestamps: &[f64], fallback: f64) -> f64 {
    match (timestamps.first(), timestamps.last()) {
        (Some(a), Some(b)) if timestamps.len() > 1 && b > a => {
            (timestamps.len() - 1) as f64 / (b - a)
        }
        _ => fallback,
    }
}

/// Frames chosen by fps or count sampling.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub start_frame: usize,
    pub end_frame: usize,
    pub indices: Vec<usize>,
    pub sample_fps: f64,
}

/// qwen-vl-utils' torchcodec/decord reader: range, count, then
/// `torch.linspace(start, end, n).round()` in float32.
pub fn select_frames(options: &SamplingOptions, total: usize, video_fps: f64) -> Result<Selection> {
    let (start_frame, end_frame, count) =
        frame_range(options.start, options.end, total, video_fps)?;
    let n = smart_nframes(options, count, video_fps)?;
    let indices = linspace_f32(start_frame as f32, end_frame as f32, n)
        .into_iter()
        .map(|v| v.round_ties_even() as usize)
        .collect();
    Ok(Selection {
        start_frame,
        end_frame,
        indices,
        sample_fps: n as f64 / (count as f64).max(1e-6) * video_fps,
    })
}

/// qwen-vl-utils `fetch_video` sizing for `frames` sampled frames of frame_h × frame_w.
pub fn resized_size(
    options: &SamplingOptions,
    frames: usize,
    frame_h: u64,
    frame_w: u64,
) -> Result<(u32, u32)> {
    match options.resized {
        // Fixed sizes use the image limits (4 to 16384 tokens), not the video ones.
        Some((h, w)) => smart_resize(
            h.into(),
            w.into(),
            f64::from(4 * FACTOR * FACTOR),
            f64::from(16384 * FACTOR * FACTOR),
        ),
        None => {
            let budget = (options.total_pixels / frames as f64 * TEMPORAL_PATCH_SIZE as f64)
                .min(FRAME_MAX_PIXELS);
            let mut max_pixels = budget.max((options.min_pixels * 1.05).trunc());
            if let Some(asked) = options.max_pixels {
                max_pixels = max_pixels.min(asked);
            }
            smart_resize(frame_h, frame_w, options.min_pixels, max_pixels)
        }
    }
}

/// qwen-vl-utils `calculate_video_frame_range`: (start frame, end frame, count).
pub fn frame_range(
    start: Option<f64>,
    end: Option<f64>,
    total: usize,
    video_fps: f64,
) -> Result<(usize, usize, usize)> {
    if total == 0 {
        return Err(Error::Sampling("the video has no frames".into()));
    }
    if start.is_none() && end.is_none() {
        return Ok((0, total - 1, total));
    }
    let max_duration = total as f64 / video_fps;
    let start_frame = match start {
        Some(s) => (s.clamp(0.0, max_duration) * video_fps).ceil() as usize,
        None => 0,
    };
    let end_frame = match end {
        Some(e) => ((e.clamp(0.0, max_duration) * video_fps).floor() as usize).min(total - 1),
        None => total - 1,
    };
    if start_frame >= end_frame {
        return Err(Error::Sampling(format!(
            "time range selects no frames (start frame {start_frame}, end frame {end_frame}, video {max_duration:.2} s)"
        )));
    }
    Ok((start_frame, end_frame, end_frame - start_frame + 1))
}

fn floor_by_factor(x: f64, factor: f64) -> f64 {
    (x / factor).floor() * factor
}

/// qwen-vl-utils `smart_nframes` for `total` frames in the selected range.
pub fn smart_nframes(options: &SamplingOptions, total: usize, video_fps: f64) -> Result<usize> {
    let n = if let Some(n) = options.nframes {
        (n as f64 / 2.0).round_ties_even() * 2.0
    } else {
        if !(options.fps.is_finite() && options.fps > 0.0) {
            return Err(Error::Sampling(format!(
                "fps must be positive, got {}",
                options.fps
            )));
        }
        let min_frames = (options.min_frames as f64 / 2.0).ceil() * 2.0;
        let max_frames = floor_by_factor(options.max_frames.unwrap_or(768.min(total)) as f64, 2.0);
        let n = total as f64 / video_fps * options.fps;
        let n = n.max(min_frames).min(max_frames).min(total as f64);
        floor_by_factor(n, 2.0)
    };
    if !(2.0 <= n && n <= total as f64) {
        return Err(Error::Sampling(format!(
            "the plan needs between 2 and {total} frames, got {n} (video too short for the request?)"
        )));
    }
    Ok(n as usize)
}

/// `torch.linspace(start, end, steps)` in float32, as torch's CPU kernel computes it.
pub fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    match steps {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (steps - 1) as f32;
            let halfway = steps / 2;
            (0..steps)
                .map(|i| {
                    if i < halfway {
                        step.mul_add(i as f32, start)
                    } else {
                        (-step).mul_add((steps - i - 1) as f32, end)
                    }
                })
                .collect()
        }
    }
}

/// qwen-vl-utils `smart_resize` with factor 28: (height, width).
pub fn smart_resize(
    height: u64,
    width: u64,
    min_pixels: f64,
    max_pixels: f64,
) -> Result<(u32, u32)> {
    let bad = |reason: String| Error::Dimensions {
        width,
        height,
        reason,
    };
    if height == 0 || width == 0 {
        return Err(bad("empty frame".into()));
    }
    let (h, w) = (height as f64, width as f64);
    if h.max(w) / h.min(w) > MAX_RATIO {
        return Err(bad(format!(
            "aspect ratio {:.1} exceeds {MAX_RATIO}",
            h.max(w) / h.min(w)
        )));
    }
    if min_pixels > max_pixels {
        return Err(bad(format!(
            "min_pixels {min_pixels} exceeds max_pixels {max_pixels}"
        )));
    }
    let f = f64::from(FACTOR);
    let mut h_bar = f.max((h / f).round_ties_even() * f);
    let mut w_bar = f.max((w / f).round_ties_even() * f);
    if h_bar * w_bar > max_pixels {
        let beta = ((h * w) / max_pixels).sqrt();
        h_bar = floor_by_factor(h / beta, f);
        w_bar = floor_by_factor(w / beta, f);
    } else if h_bar * w_bar < min_pixels {
        let beta = (min_pixels / (h * w)).sqrt();
        h_bar = (h * beta / f).ceil() * f;
        w_bar = (w * beta / f).ceil() * f;
    }
    if h_bar < f || w_bar < f || h_bar > 65536.0 || w_bar > 65536.0 {
        return Err(bad(format!(
            "no {FACTOR}-aligned size fits the pixel budget (got {h_bar}x{w_bar})"
        )));
    }
    Ok((h_bar as u32, w_bar as u32))
}

/// Packet ranges that decode every planned frame: from the GOP start of each frame
/// (the previous GOP's for leading pictures of open GOPs) up to the frame's own
/// packet. Nothing after the last needed packet is decoded, and GOPs without a needed
/// frame are skipped. Overlapping or touching ranges are merged.
pub fn decode_ranges(index: &PacketIndex, frames: &[usize]) -> Vec<DecodeRange> {
    let mut spans: Vec<(usize, usize)> = frames
        .iter()
        .map(|&f| {
            let packet = index.frame_packet(f);
            let mut gop = index.gop_of(packet);
            if index.is_leading(packet) && gop > 0 {
                gop -= 1;
            }
            (index.gop_start(gop), packet + 1)
        })
        .collect();
    spans.sort_unstable();
    let mut out: Vec<DecodeRange> = Vec::new();
    for (start, end) in spans {
        match out.last_mut() {
            Some(last) if start <= last.packets.end => {
                last.packets.end = last.packets.end.max(end);
            }
            _ => out.push(DecodeRange {
                packets: start..end,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sampling_of_a_30s_30fps_video() {
        let opts = SamplingOptions::default();
        assert_eq!(smart_nframes(&opts, 900, 30.0).unwrap(), 60);
        // Short clip: 20 frames at 30 fps → 1.33 frames at 2 fps → min 4.
        assert_eq!(smart_nframes(&opts, 20, 30.0).unwrap(), 4);
        // Too short to sample 2 frames.
        assert!(smart_nframes(&opts, 1, 30.0).is_err());
    }

    #[test]
    fn smart_resize_matches_qwen_examples() {
        // 1080p with 60 frames: budget min(602112, 90316800/60*2) = 602112.
        let max = (90316800.0f64 / 60.0 * 2.0).min(FRAME_MAX_PIXELS);
        assert_eq!(
            smart_resize(1080, 1920, DEFAULT_MIN_PIXELS as f64, max).unwrap(),
            (560, 1008)
        );
        // Upscaled to min_pixels.
        assert_eq!(
            smart_resize(240, 320, DEFAULT_MIN_PIXELS as f64, max).unwrap(),
            (280, 392)
        );
        assert!(smart_resize(10, 3000, DEFAULT_MIN_PIXELS as f64, max).is_err());
    }

    #[test]
    fn linspace_uses_the_fused_formula() {
        let v = linspace_f32(0.0, 899.0, 60);
        assert_eq!(v[0], 0.0);
        assert_eq!(v[59], 899.0);
        assert!((v[30] - 30.0 * 899.0 / 59.0).abs() < 1e-3);
    }
}
