//! Bicubic antialiased resizes, bit-identical to torchvision 0.26 on torch 2.11's CPU
//! kernels, in the two arithmetics the reference processors reach ([`Resize`]):
//!
//! **Float** ([`resize_planes`]): `torchvision.transforms.functional.resize` (uint8 →
//! float32 → `F.interpolate(mode="bicubic", antialias=True, align_corners=False)` →
//! clamp → round), what qwen-vl-utils calls.
//!
//! The kernel is separable (horizontal pass first, a pass skipped when its size does
//! not change) with Keys' cubic (a = -0.5) stretched by the downscale factor. Two
//! compiler effects in torch's x86-64 build are reproduced because they change the
//! float32 results (docs/preprocessing.md has the probes that found them):
//! - the filter polynomial is evaluated with fused multiply-adds;
//! - in the tap loop the first 4·⌊(n−1)/4⌋ accumulations after the first tap are
//!   separate multiply and add (a 4-wide vectorized multiply with in-order adds); the
//!   remaining ones are fused.
//!
//! **Uint8** ([`resize_bicubic_aa_u8`]): `torchvision.transforms.v2.functional.resize`
//! on a uint8 tensor, what HF's video processors (Qwen3-VL) call. torchvision v2 hands
//! uint8 straight to torch for bicubic, whose uint8 kernel is integer arithmetic in the
//! manner of Pillow: the same Keys cubic weights computed in float64, normalized,
//! scaled to int16 at the largest precision that keeps the biggest weight below 2^15,
//! then per output `clamp((2^(p−1) + Σ x·w) >> p, 0, 255)`, horizontal pass first into
//! a uint8 image, then the vertical pass. torch's AVX2 kernel and its generic kernel
//! give the same bytes (the golden generator checks both).

use multiversion::multiversion;
use serde::Serialize;

use super::{Planes, RgbImage};

/// The resize arithmetic of a reference processor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Resize {
    /// torchvision's resize of float32 frames, rounded to uint8 (qwen-vl-utils).
    BicubicFloat,
    /// torch's integer kernel on uint8 frames (torchvision v2: HF's video processors).
    BicubicUint8,
}

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

/// Keys' cubic with a = -0.5 in float64 (torch's `aa_filter<double>`), in the fused
/// evaluation order of its x86-64 builds, as the float32 filter. The int16 rounding of
/// the weights hides the last bit: fused and unfused evaluation gave the same int16
/// tables for all 217128 (input, output) size pairs probed (inputs 1 to 8000, outputs
/// multiples of 32 up to 4000).
fn cubic64(x: f64) -> f64 {
    const A: f64 = -0.5;
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

/// The int16 filter taps of torch's uint8 antialiased bicubic resize for every output
/// position (`_compute_index_ranges_int16_weights`), held as i32 for uploading to a
/// GPU. An unchanged size is a pass torch skips; it is not a table.
#[derive(Clone, Debug, PartialEq)]
pub struct IntTapTable {
    pub starts: Vec<i32>,
    pub counts: Vec<i32>,
    /// `max_taps` weights per output position, each within i16.
    pub weights: Vec<i32>,
    pub max_taps: usize,
    /// Fraction bits of the weights.
    pub precision: u32,
}

impl IntTapTable {
    pub fn new(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        // interp_size 4: support (4 · 0.5) · scale when downscaling.
        let support = if scale >= 1.0 { 2.0 * scale } else { 2.0 };
        let max_taps = support.ceil() as usize * 2 + 1;
        let invscale = if scale >= 1.0 { 1.0 / scale } else { 1.0 };
        let mut starts = Vec::with_capacity(out_size);
        let mut counts = Vec::with_capacity(out_size);
        let mut float_weights = vec![0f64; out_size * max_taps];
        let mut wt_max = 0f64;
        for i in 0..out_size {
            let center = scale * (i as f64 + 0.5);
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xsize = (((center + support + 0.5) as i64).min(in_size as i64) - xmin)
                .clamp(0, max_taps as i64) as usize;
            let w = &mut float_weights[i * max_taps..][..xsize];
            let mut total = 0f64;
            for (j, w) in w.iter_mut().enumerate() {
                *w = cubic64(((j as i64 + xmin) as f64 - center + 0.5) * invscale);
                total += *w;
            }
            if total != 0.0 {
                for w in w.iter_mut() {
                    *w /= total;
                    wt_max = wt_max.max(*w);
                }
            }
            starts.push(xmin as i32);
            counts.push(xsize as i32);
        }
        let mut precision = 0u32;
        while precision < 22 {
            let next = (0.5 + wt_max * f64::from(1u32 << (precision + 1))) as i32;
            if next >= 1 << 15 {
                break;
            }
            precision += 1;
        }
        let unit = f64::from(1u32 << precision);
        let weights = float_weights
            .iter()
            .map(|&w| {
                let v = w * unit;
                if v < 0.0 {
                    (-0.5 + v) as i32
                } else {
                    (0.5 + v) as i32
                }
            })
            .collect();
        Self {
            starts,
            counts,
            weights,
            max_taps,
            precision,
        }
    }

    /// The taps of output position `i`: first input index and weights.
    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let n = self.counts[i] as usize;
        (
            self.starts[i] as usize,
            &self.weights[i * self.max_taps..][..n],
        )
    }

    /// One output value from its taps' inputs (`x(j)` the j-th input).
    #[inline(always)]
    fn apply(&self, weights: &[i32], x: impl Fn(usize) -> u8) -> u8 {
        let mut acc: i32 = 1 << (self.precision - 1);
        for (j, &w) in weights.iter().enumerate() {
            acc += i32::from(x(j)) * w;
        }
        (acc >> self.precision).clamp(0, 255) as u8
    }
}

/// Resizes an RGB image as torch's uint8 bicubic antialias kernel does
/// (`tvF.resize(uint8, BICUBIC, antialias=True)` through torchvision v2).
pub fn resize_bicubic_aa_u8(img: &RgbImage, out_h: usize, out_w: usize) -> RgbImage {
    let (w, h) = (img.width, img.height);
    let mut cur = std::borrow::Cow::Borrowed(img);
    if out_w != w {
        let t = IntTapTable::new(w, out_w);
        let mut out = RgbImage::new(out_w, h);
        for (src, dst) in cur
            .data
            .chunks_exact(w * 3)
            .zip(out.data.chunks_exact_mut(out_w * 3))
        {
            for (x, px) in dst.chunks_exact_mut(3).enumerate() {
                let (start, weights) = t.taps(x);
                for (c, v) in px.iter_mut().enumerate() {
                    *v = t.apply(weights, |j| src[(start + j) * 3 + c]);
                }
            }
        }
        cur = std::borrow::Cow::Owned(out);
    }
    if out_h != h {
        let t = IntTapTable::new(h, out_h);
        let row = out_w * 3;
        let mut out = RgbImage::new(out_w, out_h);
        let mut acc = vec![0i32; row];
        for (y, dst) in out.data.chunks_exact_mut(row).enumerate() {
            let (start, weights) = t.taps(y);
            acc.fill(1 << (t.precision - 1));
            for (j, &wj) in weights.iter().enumerate() {
                let src = &cur.data[(start + j) * row..][..row];
                for (a, &s) in acc.iter_mut().zip(src) {
                    *a += i32::from(s) * wj;
                }
            }
            for (d, &a) in dst.iter_mut().zip(&acc) {
                *d = (a >> t.precision).clamp(0, 255) as u8;
            }
        }
        cur = std::borrow::Cow::Owned(out);
    }
    cur.into_owned()
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
    fn int_taps_sum_to_one_in_fixed_point() {
        for (i, o) in [
            (320, 196),
            (240, 256),
            (1080, 384),
            (97, 64),
            (7, 300),
            (4320, 32),
        ] {
            let t = IntTapTable::new(i, o);
            assert!((1..=22).contains(&t.precision));
            for x in 0..o {
                let (start, w) = t.taps(x);
                assert!(start + w.len() <= i);
                let sum: i32 = w.iter().sum();
                assert!(
                    (sum - (1 << t.precision)).abs() <= w.len() as i32,
                    "{i}->{o}"
                );
                assert!(w.iter().all(|&v| i16::try_from(v).is_ok()));
            }
        }
    }

    #[test]
    fn constant_images_stay_constant_through_the_uint8_kernel() {
        let img = RgbImage::from_raw(37, 23, vec![77; 37 * 23 * 3]);
        for (h, w) in [(23, 20), (50, 37), (11, 90), (64, 64)] {
            let out = resize_bicubic_aa_u8(&img, h, w);
            assert_eq!((out.width, out.height), (w, h));
            assert!(out.data.iter().all(|&v| v == 77), "{h}x{w}");
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
