//! Qwen3-VL's video processor, HF transformers 5.17 `Qwen3VLVideoProcessor`:
//! frame sampling from the stream's metadata (`sample_frames`), `smart_resize` over
//! t·h·w with factor patch × merge (32) and the optional per-frame pixel cap
//! (`resize`), and the prompt's per-temporal-patch timestamps
//! (`Qwen3VLProcessor._calculate_timestamps`).
//!
//! Every formula is the reference's, with Python's float64 operations and rounding
//! (numpy's `linspace(...).round()` and Python's `round` are half to even).

use serde::Serialize;

use super::{PatchGeometry, SamplingOptions};
use crate::preprocess::Normalization;
use crate::{Error, Result};

/// The parameters of a `Qwen3VLVideoProcessor` (a model folder's
/// `video_preprocessor_config.json`); [`Default`] gives the class defaults.
///
/// `fps`, `min_frames` and `max_frames` are the folder's sampling defaults. Planning
/// reads the request's [`SamplingOptions::fps`], [`SamplingOptions::min_frames`] and
/// [`SamplingOptions::max_frames`] (`None`: this `max_frames`), which
/// [`SamplingOptions::for_processor`] starts from these values.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Qwen3VideoProcessor {
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
    /// `size["shortest_edge"]`: the least pixels over all sampled frames (t·h·w).
    pub shortest_edge: u64,
    /// `size["longest_edge"]`: the most pixels over all sampled frames (t·h·w).
    pub longest_edge: u64,
    pub fps: f64,
    pub min_frames: usize,
    pub max_frames: usize,
    /// Caps each frame's pixels as qwen-vl-utils does (5.17's `None` acts as `false`).
    pub cap_pixels_per_frame: bool,
    /// Per-frame token ceiling of the cap.
    pub max_video_tokens: u64,
    /// `image_mean` / `image_std` (with `rescale_factor` 1/255, fused as HF does).
    pub normalization: Normalization,
}

impl Default for Qwen3VideoProcessor {
    fn default() -> Self {
        Self {
            patch_size: 16,
            temporal_patch_size: 2,
            merge_size: 2,
            shortest_edge: 128 * 32 * 32,
            longest_edge: 32 * 32 * 768,
            fps: 2.0,
            min_frames: 4,
            max_frames: 768,
            cap_pixels_per_frame: false,
            max_video_tokens: 768,
            normalization: Normalization::new([0.5; 3], [0.5; 3]),
        }
    }
}

impl Qwen3VideoProcessor {
    /// The size the published Qwen3-VL folders give (`shortest_edge` 4096,
    /// `longest_edge` 25165824), other values the class defaults.
    pub fn published() -> Self {
        Self {
            shortest_edge: 4096,
            longest_edge: 25_165_824,
            ..Self::default()
        }
    }

    pub fn geometry(&self) -> PatchGeometry {
        PatchGeometry {
            patch_size: self.patch_size,
            temporal_patch_size: self.temporal_patch_size,
            merge_size: self.merge_size,
        }
    }

    /// Refuses the options Qwen3-VL's processor has no equivalent of, and nonsense
    /// parameters.
    pub(super) fn check(&self, options: &SamplingOptions) -> Result<()> {
        let g = self.geometry();
        if g.patch_size == 0 || g.temporal_patch_size == 0 || g.merge_size == 0 {
            return Err(Error::Sampling(format!(
                "patch size {}, temporal patch size {} and merge size {} must be positive",
                g.patch_size, g.temporal_patch_size, g.merge_size
            )));
        }
        let defaults = SamplingOptions::default();
        let mut refused = Vec::new();
        if options.start.is_some() || options.end.is_some() {
            refused.push("start/end");
        }
        if options.min_pixels != defaults.min_pixels {
            refused.push("min_pixels");
        }
        if options.max_pixels.is_some() {
            refused.push("max_pixels");
        }
        if options.total_pixels != defaults.total_pixels {
            refused.push("total_pixels");
        }
        if options.resized.is_some() {
            refused.push("resized_height/resized_width");
        }
        if !refused.is_empty() {
            return Err(Error::Sampling(format!(
                "{} (qwen-vl-utils options) have no equivalent in Qwen3-VL's video processor: \
                 its pixel budget is size.shortest_edge/longest_edge over all frames, and it \
                 samples the whole video (use explicit frames or timestamps for a part)",
                refused.join(", ")
            )));
        }
        Ok(())
    }
}

/// `sample_frames` for a video of `total` frames at `video_fps` (the stream's average
/// rate; HF's `metadata.fps`): `nframes` is HF's `num_frames` (used as given, as HF
/// does), else `n = int(total / video_fps · fps)` clamped to `min_frames`, `max_frames`
/// and `total`; then `np.linspace(0, total − 1, n).round()`.
pub fn sample_frames(
    processor: &Qwen3VideoProcessor,
    options: &SamplingOptions,
    total: usize,
    video_fps: f64,
) -> Result<Vec<usize>> {
    if total == 0 {
        return Err(Error::Sampling("the video has no frames".into()));
    }
    let n = match options.nframes {
        Some(n) => n,
        None => {
            if !(options.fps.is_finite() && options.fps > 0.0) {
                return Err(Error::Sampling(format!(
                    "fps must be positive, got {}",
                    options.fps
                )));
            }
            let max_frames = options.max_frames.unwrap_or(processor.max_frames);
            // Python's int() truncates toward zero; the value is positive here.
            let n = (total as f64 / video_fps * options.fps).trunc() as usize;
            n.max(options.min_frames).min(max_frames).min(total)
        }
    };
    if n == 0 {
        return Err(Error::Sampling("the plan samples no frames".into()));
    }
    Ok(linspace_rounded(total - 1, n))
}

/// `np.linspace(0, last, n).round().astype(int)`: numpy computes `i · step` with
/// `step = last / (n − 1)` in float64 and sets the last element to `last` exactly.
pub fn linspace_rounded(last: usize, n: usize) -> Vec<usize> {
    if n == 1 {
        return vec![0];
    }
    let step = last as f64 / (n - 1) as f64;
    (0..n)
        .map(|i| {
            if i + 1 == n {
                last
            } else {
                (i as f64 * step).round_ties_even() as usize
            }
        })
        .collect()
}

/// `resize`'s target size for `frames` sampled frames (before temporal padding) of
/// `height` × `width`: the optional per-frame cap, then [`smart_resize`].
pub fn resized_size(
    processor: &Qwen3VideoProcessor,
    frames: usize,
    height: u64,
    width: u64,
) -> Result<(u32, u32)> {
    let g = processor.geometry();
    let factor = g.factor() as u64;
    let mut max_pixels = processor.longest_edge;
    if processor.cap_pixels_per_frame && frames > 0 {
        let frame_cap = processor.max_video_tokens * factor * factor;
        let floor = (processor.shortest_edge as f64 * 1.05).trunc() as u64;
        let per_frame = frame_cap
            .min(processor.longest_edge / frames as u64)
            .max(floor);
        max_pixels = per_frame * frames as u64;
    }
    smart_resize(
        frames,
        height,
        width,
        g.temporal_patch_size as u64,
        factor,
        processor.shortest_edge,
        max_pixels,
    )
}

/// Qwen3-VL's `smart_resize(num_frames, height, width, temporal_factor, factor,
/// min_pixels, max_pixels)`: (height, width).
pub fn smart_resize(
    frames: usize,
    height: u64,
    width: u64,
    temporal_factor: u64,
    factor: u64,
    min_pixels: u64,
    max_pixels: u64,
) -> Result<(u32, u32)> {
    let bad = |reason: String| Error::Dimensions {
        width,
        height,
        reason,
    };
    if (frames as u64) < temporal_factor {
        return Err(Error::Sampling(format!(
            "Qwen3-VL's processor needs at least {temporal_factor} sampled frames, got {frames} \
             (a video this short cannot be processed)"
        )));
    }
    if height == 0 || width == 0 {
        return Err(bad("empty frame".into()));
    }
    let f = factor as f64;
    let (mut h, mut w) = (height, width);
    if h < factor || w < factor {
        let scale = (f / h as f64).max(f / w as f64);
        h = (h as f64 * scale).trunc() as u64;
        w = (w as f64 * scale).trunc() as u64;
    }
    let ratio = h.max(w) as f64 / h.min(w) as f64;
    if ratio > super::MAX_RATIO {
        return Err(bad(format!("aspect ratio {ratio:.1} exceeds 200")));
    }
    let (hf, wf) = (h as f64, w as f64);
    let mut h_bar = (hf / f).round_ties_even() as u64 * factor;
    let mut w_bar = (wf / f).round_ties_even() as u64 * factor;
    let t_bar = (frames as f64 / temporal_factor as f64).round_ties_even() as u64 * temporal_factor;
    let volume = (frames as u64 * h * w) as f64;
    if t_bar * h_bar * w_bar > max_pixels {
        if max_pixels == 0 {
            return Err(bad("the pixel budget (longest_edge) is 0".into()));
        }
        let beta = (volume / max_pixels as f64).sqrt();
        h_bar = factor.max((hf / beta / f).floor() as u64 * factor);
        w_bar = factor.max((wf / beta / f).floor() as u64 * factor);
    } else if t_bar * h_bar * w_bar < min_pixels {
        let beta = (min_pixels as f64 / volume).sqrt();
        h_bar = (hf * beta / f).ceil() as u64 * factor;
        w_bar = (wf * beta / f).ceil() as u64 * factor;
    }
    if h_bar > 65536 || w_bar > 65536 {
        return Err(bad(format!(
            "resized size {h_bar}x{w_bar} is too large (shortest_edge {min_pixels} over {frames} frames)"
        )));
    }
    Ok((h_bar as u32, w_bar as u32))
}

/// `Qwen3VLProcessor._calculate_timestamps`: the frame indices padded with the last to
/// a multiple of `temporal`, each `index / video_fps`, then per temporal patch the mean
/// of its first and last frame's time.
pub fn group_timestamps(frames: &[usize], video_fps: f64, temporal: usize) -> Vec<f64> {
    let times: Vec<f64> = frames.iter().map(|&i| i as f64 / video_fps).collect();
    super::group_means(&times, temporal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_sample_a_3s_clip() {
        let p = Qwen3VideoProcessor::default();
        let o = SamplingOptions::for_processor(&super::super::VideoProcessor::Qwen3Vl(p.clone()));
        assert_eq!(
            sample_frames(&p, &o, 90, 30.0).unwrap(),
            [0, 18, 36, 53, 71, 89]
        );
        assert_eq!(resized_size(&p, 6, 240, 320).unwrap(), (256, 320));
        assert_eq!(
            group_timestamps(&[0, 18, 36, 53, 71, 89], 30.0, 2),
            [0.3, 1.4833333333333334, 2.666666666666667]
        );
        assert!(matches!(
            resized_size(&p, 1, 240, 320),
            Err(Error::Sampling(_))
        ));
    }

    #[test]
    fn linspace_matches_numpy() {
        // np.linspace(0, 9, 4).round(): 0, 3, 6, 9; ties go to even (np.linspace(0, 5, 3)).
        assert_eq!(linspace_rounded(9, 4), [0, 3, 6, 9]);
        assert_eq!(linspace_rounded(5, 3), [0, 2, 5]);
        assert_eq!(linspace_rounded(0, 3), [0, 0, 0]);
        assert_eq!(linspace_rounded(7, 1), [0]);
    }
}
