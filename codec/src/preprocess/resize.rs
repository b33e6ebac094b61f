//! Bicubic antialiased resize, bit-identical to `torchvision.transforms.functional.resize`
//! (uint8 → float32 → `F.interpolate(mode="bicubic", antialias=True,
//! align_corners=False)` → clamp → round) as run by torch 2.11's CPU kernel, which is
//! what qwen-vl-utils calls.
//!
//! The kernel is separable (horizontal pass first, a pass skipped when its size does
//! not change) with Keys' cubic (a = -0.5) stretched by the downscale factor. Two
//! compiler effects in torch's x86-64 build are reproduced because they change the
//! float32 results (docs/preprocessing.md has the probes that found them):
//! - the filter polynomial is evaluated with fused multiply-adds;
//! - in the tap loop the first 4·⌊(n−1)/4⌋ accumulations after the first tap are
//!   separate multiply and add (a 4-wide vectorized multiply with in-order adds); the
//!   remaining ones are fused.

use multiversion::multiversion;

use super::{Planes, RgbImage};

/// Filter taps of one output position.
#[derive(Clone, Debug, PartialEq)]
struct Taps {
    start: usize,
    weights: Vec<f32>,
}

/// Keys' cubic with a = -0.5, in torch's fused evaluation order.
fn cubic(x: f32) -> f32 {
    const A: f32 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0).mul_add(x, -(A + 3.0)) * x).mul_add(x, 1.0)
    } else if x < 2.0 {
        A.mul_add(x, -5.0 * A)
            .mul_add(x, 8.0 * A)
            .mul_add(x, -4.0 * A)
    } else {
        0.0
    }
}

/// torch's `_compute_indices_min_size_weights_aa` for every output position.
fn taps(in_size: usize, out_size: usize) -> Vec<Taps> {
    let scale = in_size as f32 / out_size as f32;
    let support: f32 = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
    let max_taps = support.ceil() as usize * 2 + 1;
    let invscale = if scale >= 1.0 {
        (1.0 / f64::from(scale)) as f32
    } else {
        1.0
    };
    (0..out_size)
        .map(|i| {
            let center = (f64::from(scale) * (i as f64 + 0.5)) as f32;
            let xmin = ((f64::from(center - support) + 0.5) as i64).max(0);
            let xmax = ((f64::from(center + support) + 0.5) as i64).min(in_size as i64);
            let count = (xmax - xmin).clamp(0, max_taps as i64) as usize;
            let mut weights: Vec<f32> = (0..count)
                .map(|j| {
                    let offset = ((j as i64 + xmin) as f32 - center) as f64 + 0.5;
                    cubic((offset * f64::from(invscale)) as f32)
                })
                .collect();
            let total: f32 = weights.iter().fold(0.0, |acc, &w| acc + w);
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            Taps {
                start: xmin as usize,
                weights,
            }
        })
        .collect()
}

/// Filter taps of every output position in flat arrays, for uploading to a GPU.
/// An unchanged size gives one tap of weight 1 per position (the CPU skips the pass;
/// multiplying by 1 is exact).
#[derive(Clone, Debug, PartialEq)]
pub struct TapTable {
    pub starts: Vec<i32>,
    pub counts: Vec<i32>,
    /// `max_taps` weights per output position.
    pub weights: Vec<f32>,
    pub max_taps: usize,
}

impl TapTable {
    pub fn new(in_size: usize, out_size: usize) -> Self {
        let t = if in_size == out_size {
            (0..out_size)
                .map(|i| Taps {
                    start: i,
                    weights: vec![1.0],
                })
                .collect()
        } else {
            taps(in_size, out_size)
        };
        let max_taps = t.iter().map(|t| t.weights.len()).max().unwrap_or(1).max(1);
        let mut weights = vec![0.0; t.len() * max_taps];
        for (i, tap) in t.iter().enumerate() {
            weights[i * max_taps..i * max_taps + tap.weights.len()].copy_from_slice(&tap.weights);
        }
        Self {
            starts: t.iter().map(|t| t.start as i32).collect(),
            counts: t.iter().map(|t| t.weights.len() as i32).collect(),
            weights,
            max_taps,
        }
    }
}

/// Accumulations (after the first tap) done as a separate multiply and add.
#[inline]
fn unfused_steps(taps: usize) -> usize {
    4 * (taps.saturating_sub(1) / 4)
}

/// Vertical pass for one output row: combines whole input rows.
#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
fn vertical_row(src: &[f32], width: usize, taps: &Taps, out: &mut [f32]) {
    let rows = |j: usize| &src[(taps.start + j) * width..(taps.start + j + 1) * width];
    let plain = unfused_steps(taps.weights.len());
    let w0 = taps.weights[0];
    for (o, &s) in out.iter_mut().zip(rows(0)) {
        *o = s * w0;
    }
    for j in 1..taps.weights.len() {
        let w = taps.weights[j];
        if j - 1 < plain {
            for (o, &s) in out.iter_mut().zip(rows(j)) {
                *o += s * w;
            }
        } else {
            for (o, &s) in out.iter_mut().zip(rows(j)) {
                *o = s.mul_add(w, *o);
            }
        }
    }
}

/// Resizes an RGB image with torchvision's bicubic antialias numerics and rounds to u8.
pub fn resize_bicubic_aa(img: &RgbImage, out_h: usize, out_w: usize) -> RgbImage {
    if (img.height, img.width) == (out_h, out_w) {
        return img.clone();
    }
    resize_planes(&Planes::from_rgb(img), out_h, out_w)
}

/// Resizes planes of 8-bit values (as f32) and rounds the result to 8-bit RGB.
///
/// The horizontal pass runs as transpose → column pass → transpose, so both passes
/// use the row-combining kernel, which vectorizes across a row while keeping every
/// output element's own order of operations.
pub fn resize_planes(src: &Planes, out_h: usize, out_w: usize) -> RgbImage {
    let (w, h) = (src.width, src.height);
    let h_taps = (out_w != w).then(|| taps(w, out_w));
    let v_taps = (out_h != h).then(|| taps(h, out_h));
    let planes: [Vec<f32>; 3] = std::array::from_fn(|c| {
        let mut plane = std::borrow::Cow::Borrowed(&src.planes[c]);
        if let Some(t) = &h_taps {
            let columns = transpose(&plane, h, w);
            let resized = combine_rows(&columns, h, t);
            plane = std::borrow::Cow::Owned(transpose(&resized, out_w, h));
        }
        if let Some(t) = &v_taps {
            plane = std::borrow::Cow::Owned(combine_rows(&plane, out_w, t));
        }
        plane.into_owned()
    });
    Planes {
        width: out_w,
        height: out_h,
        planes,
    }
    .to_rgb()
}

/// Output row i = the taps of i applied to rows of `src` (`width` values per row).
fn combine_rows(src: &[f32], width: usize, taps: &[Taps]) -> Vec<f32> {
    let mut out = vec![0f32; taps.len() * width];
    for (t, dst) in taps.iter().zip(out.chunks_exact_mut(width)) {
        vertical_row(src, width, t, dst);
    }
    out
}

/// Transposes a rows × cols matrix: 8×8 register tiles (which LLVM turns into
/// shuffles) inside cache-sized tiles, scalar at the edges.
fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const B: usize = 8;
    const TILE: usize = 64;
    let mut out = vec![0f32; rows * cols];
    let (full_r, full_c) = (rows / B * B, cols / B * B);
    for r1 in (0..full_r).step_by(TILE) {
        for c1 in (0..full_c).step_by(TILE) {
            for r0 in (r1..(r1 + TILE).min(full_r)).step_by(B) {
                for c0 in (c1..(c1 + TILE).min(full_c)).step_by(B) {
                    let mut tile = [[0f32; B]; B];
                    for (i, row) in tile.iter_mut().enumerate() {
                        row.copy_from_slice(&src[(r0 + i) * cols + c0..][..B]);
                    }
                    for j in 0..B {
                        let dst = &mut out[(c0 + j) * rows + r0..][..B];
                        for (i, d) in dst.iter_mut().enumerate() {
                            *d = tile[i][j];
                        }
                    }
                }
            }
        }
    }
    for r in 0..rows {
        let start_c = if r < full_r { full_c } else { 0 };
        for c in start_c..cols {
            out[c * rows + r] = src[r * cols + c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_stay_in_bounds() {
        for (i, o) in [(320, 196), (240, 336), (1080, 392), (97, 56), (7, 300)] {
            for t in taps(i, o) {
                assert!(t.start + t.weights.len() <= i);
                let sum: f32 = t.weights.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "{i}->{o}: {sum}");
            }
        }
    }

    #[test]
    #[allow(clippy::excessive_precision)] // torch's float32 weights, printed as f64
    fn torch_weights_for_a_known_position() {
        // torch 2.11: F.interpolate(eye(240), size=336, bicubic, antialias) column 0.
        let t = &taps(240, 336)[0];
        assert_eq!(t.start, 0);
        assert_eq!(t.weights, [1.0582524538040161, -0.05825241655111313]);
    }

    #[test]
    fn transpose_handles_ragged_edges() {
        for (rows, cols) in [(1, 1), (8, 8), (13, 21), (64, 70), (130, 9)] {
            let src: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let t = transpose(&src, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        t[c * rows + r],
                        src[r * cols + c],
                        "{rows}x{cols} at ({r},{c})"
                    );
                }
            }
        }
    }

    #[test]
    fn constant_images_stay_constant() {
        let img = RgbImage::from_raw(37, 23, vec![77; 37 * 23 * 3]);
        for (h, w) in [(23, 20), (50, 37), (11, 90)] {
            let out = resize_bicubic_aa(&img, h, w);
            assert!(out.data.iter().all(|&v| v == 77), "{h}x{w}");
        }
    }
}
