//! Rescale + normalize and the Qwen2.5-VL patch layout.
//!
//! Frames (F, even; an odd count repeats the last frame) of size H×W become
//! `[t·h·w, 1176]` float32 rows, t = F/2, h = H/14, w = W/14. Rows run over
//! (t, block_row, block_col, in_row, in_col) with 2×2 blocks; the 1176 columns over
//! (channel, temporal, y, x) = ((c·2 + tp)·14 + py)·14 + px.

use super::RgbImage;
use crate::plan::{MERGE_SIZE, PATCH_SIZE, TEMPORAL_PATCH_SIZE};

/// Values per patch row: 3 channels × 2 frames × 14 × 14.
pub const PATCH_DIM: usize = 3 * TEMPORAL_PATCH_SIZE * (PATCH_SIZE * PATCH_SIZE) as usize;

/// Per-channel normalization, applied as `(x - 255·mean) / (255·std)` in float32 the
/// way HF's fused rescale-and-normalize does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalization {
    pub mean255: [f32; 3],
    pub std255: [f32; 3],
}

impl Normalization {
    /// From mean/std given for 0..1 values.
    pub fn new(mean: [f32; 3], std: [f32; 3]) -> Self {
        Self {
            mean255: mean.map(|m| m * 255.0),
            std255: std.map(|s| s * 255.0),
        }
    }

    /// CLIP's statistics, used by Qwen2.5-VL.
    // The reference's decimal constants, rounded to f32 as torch.tensor(...) rounds them.
    #[allow(clippy::excessive_precision)]
    pub fn clip() -> Self {
        Self::new(
            [0.481_454_66, 0.457_827_5, 0.408_210_73],
            [0.268_629_54, 0.261_302_58, 0.275_777_11],
        )
    }
}

/// Model-ready pixels of one video.
#[derive(Clone, Debug, PartialEq)]
pub struct PixelValues {
    /// Row-major `[rows, PATCH_DIM]`.
    pub data: Vec<f32>,
    /// (t, h, w) in patches.
    pub grid_thw: [usize; 3],
}

impl PixelValues {
    /// Zeroed storage for a grid.
    pub fn new(grid_thw: [usize; 3]) -> Self {
        Self {
            data: vec![0.0; grid_thw.iter().product::<usize>() * PATCH_DIM],
            grid_thw,
        }
    }

    pub fn rows(&self) -> usize {
        self.grid_thw.iter().product()
    }

    /// Writes frame `slot` of the video (already resized to h·14 × w·14). Frames of
    /// different temporal patches touch disjoint rows; the two frames of one temporal
    /// patch touch disjoint columns, so slots can be written in any order.
    pub fn write_frame(&mut self, slot: usize, frame: &RgbImage, norm: &Normalization) {
        write_frame(&mut self.data, self.grid_thw, slot, frame, norm);
    }
}

/// Writes one frame's values into `data` (`[t·h·w, PATCH_DIM]` for `grid`).
pub fn write_frame(
    data: &mut [f32],
    grid: [usize; 3],
    slot: usize,
    frame: &RgbImage,
    norm: &Normalization,
) {
    let [t, h, w] = grid;
    let p = PATCH_SIZE as usize;
    let m = MERGE_SIZE as usize;
    assert_eq!(
        (frame.height, frame.width),
        (h * p, w * p),
        "frame size must match the grid"
    );
    let (tt, tp) = (slot / TEMPORAL_PATCH_SIZE, slot % TEMPORAL_PATCH_SIZE);
    assert!(tt < t, "slot {slot} outside {t} temporal patches");
    let rows_per_t = h * w;
    for y in 0..frame.height {
        let (gy, py) = (y / p, y % p);
        let (bh, ih) = (gy / m, gy % m);
        for x in 0..frame.width {
            let (gx, px) = (x / p, x % p);
            let (bw, iw) = (gx / m, gx % m);
            let row = tt * rows_per_t + ((bh * (w / m) + bw) * m + ih) * m + iw;
            let base = row * PATCH_DIM + (tp * p + py) * p + px;
            let pixel = &frame.data[(y * frame.width + x) * 3..][..3];
            for c in 0..3 {
                let v = (f32::from(pixel[c]) - norm.mean255[c]) / norm.std255[c];
                data[base + c * TEMPORAL_PATCH_SIZE * p * p] = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_hf_reshape() {
        // 28x28 frames: grid (1, 2, 2); mark one pixel and find it.
        let mut frame = RgbImage::new(28, 28);
        let (x, y) = (17, 3); // block (0, 0), in-block (0, 1), patch pixel (3, 3)
        frame.data[(y * 28 + x) * 3 + 2] = 255;
        let norm = Normalization::new([0.0; 3], [1.0 / 255.0; 3]);
        let mut pv = PixelValues::new([1, 2, 2]);
        pv.write_frame(1, &frame, &norm);
        let hot: Vec<usize> = pv
            .data
            .iter()
            .enumerate()
            .filter(|(_, &v)| v > 0.0)
            .map(|(i, _)| i)
            .collect();
        // row = in_col 1 → 1; column = ((c=2)*2 + tp=1)*196 + 3*14 + 3.
        assert_eq!(hot, [PATCH_DIM + (2 * 2 + 1) * 196 + 3 * 14 + 3]);
    }
}
