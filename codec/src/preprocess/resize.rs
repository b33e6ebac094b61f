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

use super::RgbImage;

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

/// Accumulations (after the first tap) done as a separate multiply and add.
#[inline]
fn unfused_steps(taps: usize) -> usize {
    4 * (taps.saturating_sub(1) / 4)
}

/// Horizontal pass over one row: `src` has `stride`-spaced samples.
#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
fn horizontal_row(src: &[f32], taps: &[Taps], out: &mut [f32]) {
    for (o, t) in out.iter_mut().zip(taps) {
        let s = &src[t.start..t.start + t.weights.len()];
        let plain = unfused_steps(t.weights.len());
        let mut acc = s[0] * t.weights[0];
        for j in 1..t.weights.len() {
            acc = if j - 1 < plain {
                acc + s[j] * t.weights[j]
            } else {
                s[j].mul_add(t.weights[j], acc)
            };
        }
        *o = acc;
    }
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
    let (w, h) = (img.width, img.height);
    if (out_w, out_h) == (w, h) {
        return img.clone();
    }
    // Planar float copy of each channel (torch works on NCHW float32).
    let mut planes: Vec<Vec<f32>> = (0..3)
        .map(|c| {
            img.data
                .iter()
                .skip(c)
                .step_by(3)
                .map(|&v| f32::from(v))
                .collect()
        })
        .collect();
    let mut cur_w = w;
    if out_w != w {
        let t = taps(w, out_w);
        for plane in &mut planes {
            let mut next = vec![0f32; h * out_w];
            for (src, dst) in plane.chunks_exact(w).zip(next.chunks_exact_mut(out_w)) {
                horizontal_row(src, &t, dst);
            }
            *plane = next;
        }
        cur_w = out_w;
    }
    if out_h != h {
        let t = taps(h, out_h);
        for plane in &mut planes {
            let mut next = vec![0f32; out_h * cur_w];
            for (taps, dst) in t.iter().zip(next.chunks_exact_mut(cur_w)) {
                vertical_row(plane, cur_w, taps, dst);
            }
            *plane = next;
        }
    }
    let mut out = RgbImage::new(out_w, out_h);
    for (c, plane) in planes.iter().enumerate() {
        for (i, &v) in plane.iter().enumerate() {
            out.data[i * 3 + c] = v.clamp(0.0, 255.0).round_ties_even() as u8;
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
    fn torch_weights_for_a_known_position() {
        // torch 2.11: F.interpolate(eye(240), size=336, bicubic, antialias) column 0.
        let t = &taps(240, 336)[0];
        assert_eq!(t.start, 0);
        assert_eq!(t.weights, [1.0582524538040161, -0.05825241655111313]);
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
