//! Rescale + normalize and the Qwen-VL patch layout, for any [`PatchGeometry`].
//!
//! Frames (F, padded to a multiple of the temporal patch T with copies of the last) of
//! size H×W become `[t·h·w, 3·T·P²]` float32 rows, t = F/T, h = H/P, w = W/P (P the
//! patch size: Qwen2.5-VL 14 → 1176 columns, Qwen3-VL 16 → 1536). Rows run over
//! (t, block_row, block_col, in_row, in_col) with M×M blocks (M the merge size); the
//! columns over (channel, temporal, y, x) = ((c·T + tp)·P + py)·P + px.

use serde::Serialize;

use super::RgbImage;
use crate::plan::PatchGeometry;

/// Per-channel normalization, applied as `(x - 255·mean) / (255·std)` in float32 the
/// way HF's fused rescale-and-normalize does.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
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
    /// Row-major `[rows, patch_dim]`.
    pub data: Vec<f32>,
    /// (t, h, w) in patches.
    pub grid_thw: [usize; 3],
}

impl PixelValues {
    /// Zeroed storage for a grid of rows of `patch_dim` values.
    pub fn new(grid_thw: [usize; 3], patch_dim: usize) -> Self {
        Self {
            data: vec![0.0; grid_thw.iter().product::<usize>() * patch_dim],
            grid_thw,
        }
    }

    pub fn rows(&self) -> usize {
        self.grid_thw.iter().product()
    }

    /// Values per row (3 × temporal × patch²).
    pub fn patch_dim(&self) -> usize {
        self.data.len().checked_div(self.rows()).unwrap_or(0)
    }

    /// Writes frame `slot` of the video (already resized to h·P × w·P). Frames of
    /// different temporal patches touch disjoint rows; the frames of one temporal patch
    /// touch disjoint columns, so slots can be written in any order.
    pub fn write_frame(
        &mut self,
        geometry: &PatchGeometry,
        slot: usize,
        frame: &RgbImage,
        norm: &Normalization,
    ) {
        write_frame(&mut self.data, self.grid_thw, geometry, slot, frame, norm);
    }
}

/// Writes one frame's values into `data` (`[t·h·w, patch_dim]` for `grid`).
pub fn write_frame(
    data: &mut [f32],
    grid: [usize; 3],
    geometry: &PatchGeometry,
    slot: usize,
    frame: &RgbImage,
    norm: &Normalization,
) {
    let [t, h, w] = grid;
    let p = geometry.patch_size;
    let m = geometry.merge_size;
    let tps = geometry.temporal_patch_size;
    let dim = geometry.patch_dim();
    assert_eq!(
        (frame.height, frame.width),
        (h * p, w * p),
        "frame size must match the grid"
    );
    assert!(h % m == 0 && w % m == 0, "grid must be whole merge blocks");
    let (tt, tp) = (slot / tps, slot % tps);
    assert!(tt < t, "slot {slot} outside {t} temporal patches");
    assert_eq!(data.len(), t * h * w * dim, "storage must match the grid");
    let rows_per_t = h * w;
    // Each column's offset within the frame's rows: block column, in-block column and
    // patch column.
    let columns: Vec<(usize, usize)> = (0..frame.width)
        .map(|x| {
            let (gx, px) = (x / p, x % p);
            let (bw, iw) = (gx / m, gx % m);
            (bw * m * m + iw, px)
        })
        .collect();
    for y in 0..frame.height {
        let (gy, py) = (y / p, y % p);
        let (bh, ih) = (gy / m, gy % m);
        let row_y = tt * rows_per_t + bh * (w / m) * m * m + ih * m;
        let col_y = (tp * p + py) * p;
        let src = &frame.data[y * frame.width * 3..][..frame.width * 3];
        for (pixel, &(row_x, px)) in src.chunks_exact(3).zip(&columns) {
            let base = (row_y + row_x) * dim + col_y + px;
            for c in 0..3 {
                let v = (f32::from(pixel[c]) - norm.mean255[c]) / norm.std255[c];
                data[base + c * tps * p * p] = v;
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
        let g = PatchGeometry::QWEN2_5_VL;
        let mut pv = PixelValues::new([1, 2, 2], g.patch_dim());
        pv.write_frame(&g, 1, &frame, &norm);
        let hot: Vec<usize> = pv
            .data
            .iter()
            .enumerate()
            .filter(|(_, &v)| v > 0.0)
            .map(|(i, _)| i)
            .collect();
        // row = in_col 1 → 1; column = ((c=2)*2 + tp=1)*196 + 3*14 + 3.
        assert_eq!(hot, [1176 + (2 * 2 + 1) * 196 + 3 * 14 + 3]);
    }

    #[test]
    fn layout_matches_the_hf_reshape_for_patch_16() {
        // 64x32 frames, patch 16, merge 2: grid (1, 2, 4), two 2x2 blocks across.
        let g = PatchGeometry {
            patch_size: 16,
            temporal_patch_size: 2,
            merge_size: 2,
        };
        let mut frame = RgbImage::new(64, 32);
        // block (0, 1), in-block (1, 0), patch pixel (x 5, y 7)
        let (x, y) = (32 + 5, 16 + 7);
        frame.data[(y * 64 + x) * 3 + 1] = 255;
        let norm = Normalization::new([0.0; 3], [1.0 / 255.0; 3]);
        let mut pv = PixelValues::new([1, 2, 4], g.patch_dim());
        pv.write_frame(&g, 0, &frame, &norm);
        let hot: Vec<usize> = pv
            .data
            .iter()
            .enumerate()
            .filter(|(_, &v)| v > 0.0)
            .map(|(i, _)| i)
            .collect();
        // row = block 1 · 4 + in_row 1 · 2 + in_col 0 = 6; column ((c=1)·2 + 0)·256 + 7·16 + 5.
        assert_eq!(pv.patch_dim(), 1536);
        assert_eq!(hot, [6 * 1536 + 2 * 256 + 7 * 16 + 5]);
    }
}
