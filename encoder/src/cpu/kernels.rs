//! Fused, rayon-parallel CPU kernels over plain slices, generic over the model dtype.
//!
//! Each kernel mirrors transformers' dtype behaviour for that op: inputs are widened to
//! f32, computed in f32 and narrowed back (RNE) at the same points where torch rounds.

use std::cell::RefCell;

use multiversion::multiversion;
use rayon::prelude::*;

use crate::dtype::Elem;
use crate::plan::RopeTable;

/// Rows per rayon task in the row-wise kernels.
const ROW_CHUNK: usize = 64;

/// Qwen2_5_VLRMSNorm: `w * (x32 * rsqrt(mean(x32²) + eps)).to(dtype)`.
pub(crate) fn rms_norm<T: Elem>(x: &[T], w: &[T], eps: f32) -> Vec<T> {
    let h = w.len();
    let w32: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
    let mut out = vec![T::from_f32(0.0); x.len()];
    out.par_chunks_mut(ROW_CHUNK * h)
        .zip(x.par_chunks(ROW_CHUNK * h))
        .for_each(|(o, x)| {
            for (o, x) in o.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
                rms_norm_row(o, x, &w32, eps);
            }
        });
    out
}

#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
fn rms_norm_row<T: Elem>(o: &mut [T], x: &[T], w: &[f32], eps: f32) {
    const L: usize = 8;
    let mut acc = [0f32; L];
    let mut chunks = x.chunks_exact(L);
    for c in &mut chunks {
        for l in 0..L {
            let v = c[l].to_f32();
            acc[l] += v * v;
        }
    }
    let mut ss: f32 = acc.iter().sum();
    for v in chunks.remainder() {
        let v = v.to_f32();
        ss += v * v;
    }
    let r = 1.0 / (ss / x.len() as f32 + eps).sqrt();
    for ((o, &xv), &wv) in o.iter_mut().zip(x).zip(w) {
        *o = T::from_f32(wv * T::round(xv.to_f32() * r));
    }
}

/// Widens to f32 (parallel).
pub(crate) fn widen<T: Elem>(x: &[T]) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(1 << 14)
        .zip(x.par_chunks(1 << 14))
        .for_each(|(o, x)| {
            for (o, &x) in o.iter_mut().zip(x) {
                *o = x.to_f32();
            }
        });
    out
}

/// GEMM epilogue: `out = T(residual + T(y + bias))` per row (the bias and the residual
/// optional), i.e. torch's `addmm` result rounded to the model dtype, then the residual
/// add in the model dtype.
pub(crate) fn epilogue<T: Elem>(
    y: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[T]>,
    width: usize,
) -> Vec<T> {
    let mut out = vec![T::from_f32(0.0); y.len()];
    out.par_chunks_mut(ROW_CHUNK * width)
        .zip(y.par_chunks(ROW_CHUNK * width))
        .enumerate()
        .for_each(|(c, (o, y))| {
            let off = c * ROW_CHUNK * width;
            let r = residual.map(|r| &r[off..off + o.len()]);
            for (i, (o, y)) in o
                .chunks_exact_mut(width)
                .zip(y.chunks_exact(width))
                .enumerate()
            {
                let r = r.map(|r| &r[i * width..(i + 1) * width]);
                epilogue_row(o, y, bias, r);
            }
        });
    out
}

#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
fn epilogue_row<T: Elem>(o: &mut [T], y: &[f32], bias: Option<&[f32]>, r: Option<&[T]>) {
    match (bias, r) {
        (Some(b), Some(r)) => {
            for (((o, &y), &b), &r) in o.iter_mut().zip(y).zip(b).zip(r) {
                *o = T::from_f32(r.to_f32() + T::round(y + b));
            }
        }
        (Some(b), None) => {
            for ((o, &y), &b) in o.iter_mut().zip(y).zip(b) {
                *o = T::from_f32(y + b);
            }
        }
        (None, Some(r)) => {
            for ((o, &y), &r) in o.iter_mut().zip(y).zip(r) {
                *o = T::from_f32(r.to_f32() + T::round(y));
            }
        }
        (None, None) => {
            for (o, &y) in o.iter_mut().zip(y) {
                *o = T::from_f32(y);
            }
        }
    }
}

/// `silu(gate) * up` from the f32 output of the stacked gate|up GEMM (rows
/// `[gate (inter) | up (inter)]`) plus its bias: both projections rounded to T, then
/// silu and the product each rounded, like the torch ops in the model dtype.
pub(crate) fn silu_mul<T: Elem>(y: &[f32], bias: &[f32], inter: usize) -> Vec<T> {
    let rows = y.len() / (2 * inter);
    let (bg, bu) = bias.split_at(inter);
    let mut out = vec![T::from_f32(0.0); rows * inter];
    out.par_chunks_mut(ROW_CHUNK * inter)
        .zip(y.par_chunks(ROW_CHUNK * 2 * inter))
        .for_each(|(o, y)| {
            for (o, y) in o.chunks_exact_mut(inter).zip(y.chunks_exact(2 * inter)) {
                let (g, u) = y.split_at(inter);
                silu_mul_row(o, g, u, bg, bu);
            }
        });
    out
}

#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
fn silu_mul_row<T: Elem>(o: &mut [T], g: &[f32], u: &[f32], bg: &[f32], bu: &[f32]) {
    for ((((o, &g), &u), &bg), &bu) in o.iter_mut().zip(g).zip(u).zip(bg).zip(bu) {
        let g = T::round(g + bg);
        let u = T::round(u + bu);
        let s = T::round(g / (1.0 + exp_f32(-g)));
        *o = T::from_f32(s * u);
    }
}

/// Exact GELU (`nn.GELU()`, erf form) of `T(y + bias)`, computed in f32.
pub(crate) fn gelu_erf<T: Elem>(y: &[f32], bias: &[f32]) -> Vec<T> {
    map_biased::<T>(y, bias, |v| {
        let e = candle_core::cpu::erf::erf_f32(v * std::f32::consts::FRAC_1_SQRT_2);
        v * 0.5 * (1.0 + e)
    })
}

/// `T(f(T(y + bias)))` element-wise over rows of `bias.len()` values (parallel).
fn map_biased<T: Elem>(y: &[f32], bias: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<T> {
    let w = bias.len();
    let mut out = vec![T::from_f32(0.0); y.len()];
    out.par_chunks_mut(ROW_CHUNK * w)
        .zip(y.par_chunks(ROW_CHUNK * w))
        .for_each(|(o, y)| {
            for (o, y) in o.chunks_exact_mut(w).zip(y.chunks_exact(w)) {
                for ((o, &y), &b) in o.iter_mut().zip(y).zip(bias) {
                    *o = T::from_f32(f(T::round(y + b)));
                }
            }
        });
    out
}

/// `nn.LayerNorm` (biased variance, weight and bias) of `T` rows, computed in f32 from
/// the `T` values and rounded to `T` once, as torch's kernels do for 16-bit inputs:
/// `y = (x · rstd − mean · rstd) · w + b`.
pub(crate) fn layer_norm<T: Elem>(x: &[T], w: &[T], b: &[T], eps: f32) -> Vec<T> {
    let h = w.len();
    let w32: Vec<f32> = w.iter().map(|v| v.to_f32()).collect();
    let b32: Vec<f32> = b.iter().map(|v| v.to_f32()).collect();
    let mut out = vec![T::from_f32(0.0); x.len()];
    out.par_chunks_mut(ROW_CHUNK * h)
        .zip(x.par_chunks(ROW_CHUNK * h))
        .for_each(|(o, x)| {
            for (o, x) in o.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
                let n = h as f64;
                let mean = x.iter().map(|v| v.to_f32() as f64).sum::<f64>() / n;
                let var = x
                    .iter()
                    .map(|v| (v.to_f32() as f64 - mean).powi(2))
                    .sum::<f64>()
                    / n;
                let rstd = (1.0 / (var + eps as f64).sqrt()) as f32;
                let shift = -(mean as f32) * rstd;
                for (((o, x), &w), &b) in o.iter_mut().zip(x).zip(&w32).zip(&b32) {
                    *o = T::from_f32((x.to_f32() * rstd + shift) * w + b);
                }
            }
        });
    out
}

/// `F.gelu(approximate="tanh")` of `T(y + bias)`, computed in f32 as torch's kernel
/// does: `0.5·x·(1 + tanh(√2·(2/√π)·0.5·(x + 0.044715·x³)))`.
pub(crate) fn gelu_tanh<T: Elem>(y: &[f32], bias: &[f32]) -> Vec<T> {
    const BETA: f32 = std::f32::consts::SQRT_2 * std::f32::consts::FRAC_2_SQRT_PI * 0.5;
    const KAPPA: f32 = 0.044715;
    map_biased::<T>(y, bias, |x| {
        let inner = BETA * (x + KAPPA * (x * x * x));
        0.5 * x * (1.0 + inner.tanh())
    })
}

/// Adds the interpolated position table to `x` in place (Qwen3-VL):
/// `x = T(x + T(((w0·t0 + w1·t1) + w2·t2) + w3·t3))`, the four table rows of each patch
/// weighted and summed in f32 in that order (transformers: `(pos_embed(idx) ·
/// weights).sum(1)`, then `.to(dtype)` and the add in the model dtype).
pub(crate) fn pos_embed_add<T: Elem>(x: &mut [T], table: &[T], idx: &[u32], wts: &[f32]) {
    let h = x.len() / (idx.len() / 4).max(1);
    x.par_chunks_mut(ROW_CHUNK * h)
        .zip(
            idx.par_chunks(ROW_CHUNK * 4)
                .zip(wts.par_chunks(ROW_CHUNK * 4)),
        )
        .for_each(|(x, (idx, wts))| {
            for ((x, idx), wts) in x
                .chunks_exact_mut(h)
                .zip(idx.chunks_exact(4))
                .zip(wts.chunks_exact(4))
            {
                let rows: [&[T]; 4] =
                    std::array::from_fn(|k| &table[idx[k] as usize * h..(idx[k] as usize + 1) * h]);
                for (c, x) in x.iter_mut().enumerate() {
                    let mut p = wts[0] * rows[0][c].to_f32();
                    for k in 1..4 {
                        p += wts[k] * rows[k][c].to_f32();
                    }
                    *x = T::from_f32(x.to_f32() + T::round(p));
                }
            }
        });
}

/// Gathers rows of a GEMM output with its bias, rounded to `T`, as f32:
/// `out[j] = T(y[order[j]] + bias)`.
pub(crate) fn gather_rows_bias<T: Elem>(y: &[f32], bias: &[f32], order: &[u32]) -> Vec<f32> {
    let width = bias.len();
    let mut out = vec![0f32; order.len() * width];
    out.par_chunks_mut(ROW_CHUNK * width)
        .zip(order.par_chunks(ROW_CHUNK))
        .for_each(|(o, ord)| {
            for (o, &i) in o.chunks_exact_mut(width).zip(ord) {
                let s = &y[i as usize * width..(i as usize + 1) * width];
                for ((o, &s), &b) in o.iter_mut().zip(s).zip(bias) {
                    *o = T::round(s + b);
                }
            }
        });
    out
}

/// Gathers rows: `out[j] = src[order[j]]`, converting the element type.
pub(crate) fn gather_rows<S: Elem, D: Elem>(src: &[S], width: usize, order: &[u32]) -> Vec<D> {
    let mut out = vec![D::from_f32(0.0); order.len() * width];
    out.par_chunks_mut(ROW_CHUNK * width)
        .zip(order.par_chunks(ROW_CHUNK))
        .for_each(|(o, ord)| {
            for (o, &i) in o.chunks_exact_mut(width).zip(ord) {
                let s = &src[i as usize * width..(i as usize + 1) * width];
                for (o, &s) in o.iter_mut().zip(s) {
                    *o = D::from_f32(s.to_f32());
                }
            }
        });
    out
}

/// exp for f32 with ~1 ulp error, written so that the compiler vectorizes loops over it
/// (Cephes-style: range reduction by ln 2, degree-6 polynomial, exponent by bit shift).
#[inline(always)]
pub(crate) fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest by the 1.5 * 2^23 trick (|x * log2 e| < 2^22): `f32::round` is a
    // libm call on baseline x86-64 and would stop the loops around this from vectorizing.
    const MAGIC: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_54, 88.376_26);
    let n = (x * LOG2E + MAGIC) - MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_66;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n for n in [-126, 127]; x = -87.34 gives n = -126.
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    y * scale
}

/// `dst = T(rope(T(x + b)))` for one head of one row (rotate_half form, f32 math).
#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
fn rope_row<T: Elem>(dst: &mut [f32], x: &[f32], b: &[f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let (x1, x2) = x.split_at(half);
    let (b1, b2) = b.split_at(half);
    let (d1, d2) = dst.split_at_mut(half);
    for j in 0..half {
        let a = T::round(x1[j] + b1[j]);
        let c = T::round(x2[j] + b2[j]);
        d1[j] = T::round(a * cos[j] + (-c) * sin[j]);
        d2[j] = T::round(c * cos[j] + a * sin[j]);
    }
}

/// `dst = T(x + b)` (as f32).
#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
fn bias_round_row<T: Elem>(dst: &mut [f32], x: &[f32], b: &[f32]) {
    for ((o, &x), &b) in dst.iter_mut().zip(x).zip(b) {
        *o = T::round(x + b);
    }
}

thread_local! {
    /// Per-thread attention scratch (scores, row sums), reused across tasks and calls.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// In place: `row = exp(row * scale - max)`; returns the sum (f32). Lane-parallel partial
/// max/sum so that the loops vectorize.
#[multiversion(targets("x86_64+avx2+fma", "aarch64+neon"))]
fn softmax_unnormalized(row: &mut [f32], scale: f32) -> f32 {
    const L: usize = 8;
    let mut m = [f32::NEG_INFINITY; L];
    let mut chunks = row.chunks_exact_mut(L);
    for c in &mut chunks {
        for l in 0..L {
            c[l] *= scale;
            m[l] = m[l].max(c[l]);
        }
    }
    let mut mx = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for v in chunks.into_remainder() {
        *v *= scale;
        mx = mx.max(*v);
    }
    let mut acc = [0f32; L];
    let mut chunks = row.chunks_exact_mut(L);
    for c in &mut chunks {
        for l in 0..L {
            let e = exp_f32(c[l] - mx);
            acc[l] += e;
            c[l] = e;
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for v in chunks.into_remainder() {
        let e = exp_f32(*v - mx);
        sum += e;
        *v = e;
    }
    sum
}

/// Safe wrapper of `gemm::gemm` for f32, single-threaded (callers parallelize):
/// `dst[m×n] = a[m×k] · b[k×n]`, with the given row/column strides, after checking bounds.
#[allow(clippy::too_many_arguments)]
fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_rs: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, rs: usize, cols: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(last(m, dst_rs, n, 1) < dst.len());
    if k > 0 {
        assert!(last(m, a_rs, k, a_cs) < a.len());
        assert!(last(k, b_rs, n, b_cs) < b.len());
    }
    // SAFETY: every element the call reads or writes lies inside the slices (checked
    // above), `dst` is borrowed mutably and does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            false,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Buffers of [`attention`], reused across the blocks of one forward pass.
#[derive(Default)]
pub(crate) struct AttentionScratch {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    o: Vec<f32>,
}

/// Segmented, non-causal multi-head attention with the 2D rotary embedding.
///
/// `qkv` is the f32 output of the qkv GEMM, `[rows, 3 * heads * head_dim]`
/// (`q | k | v`, head-major inside each), without its bias `qkv_bias`; the biased
/// projection is rounded to `T` first, as torch's `Linear` output. Rows are in window
/// order; `cu` gives the segments (windows or temporal slices) as cumulative row
/// offsets. Returns `[rows, heads * head_dim]` in `T`.
///
/// Numerics follow transformers' `apply_rotary_pos_emb_vision` (rope in f32, result
/// rounded to `T`) and torch's CPU SDPA kernel (scores, softmax and the P·V accumulation
/// in f32; for 16-bit `T` the unnormalized probabilities are rounded to `T` before P·V,
/// the row sums are not). Every (segment, head, block of 128 queries) is one rayon task,
/// running two small GEMMs, so all windows of one block run in parallel without gathers.
pub(crate) fn attention<T: Elem>(
    qkv: &[f32],
    qkv_bias: &[f32],
    rope: &RopeTable,
    cu: &[usize],
    heads: usize,
    head_dim: usize,
    scratch: &mut AttentionScratch,
) -> Vec<T> {
    const Q_BLOCK: usize = 128;
    let hid = heads * head_dim;
    let rows = qkv.len() / (3 * hid);
    let d = head_dim;
    let half = d / 2;
    debug_assert_eq!(rope.half, half);
    // transformers: `head_dim**-0.5` in double, used as float by the kernel.
    let scale = (d as f64).powf(-0.5) as f32;

    // 1. Head-major f32 planes [heads][rows][d] of rope(q), rope(k), v.
    let plane = rows * d;
    let AttentionScratch {
        q: qh,
        k: kh,
        v: vh,
        o: oh,
    } = scratch;
    for b in [&mut *qh, &mut *kh, &mut *vh, &mut *oh] {
        // Every element is overwritten below: phase 1 fills q/k/v, the tasks fill o.
        b.resize(heads * plane, 0.0);
    }
    let chunk = ROW_CHUNK * d;
    qh.par_chunks_mut(plane)
        .zip(kh.par_chunks_mut(plane))
        .zip(vh.par_chunks_mut(plane))
        .enumerate()
        .flat_map(|(h, ((q, k), v))| {
            q.par_chunks_mut(chunk)
                .zip(k.par_chunks_mut(chunk))
                .zip(v.par_chunks_mut(chunk))
                .enumerate()
                .map(move |(c, ((q, k), v))| (h, c, q, k, v))
        })
        .for_each(|(h, c, q, k, v)| {
            let r0 = c * ROW_CHUNK;
            for (i, ((q, k), v)) in q
                .chunks_exact_mut(d)
                .zip(k.chunks_exact_mut(d))
                .zip(v.chunks_exact_mut(d))
                .enumerate()
            {
                let r = r0 + i;
                let src = &qkv[r * 3 * hid..(r + 1) * 3 * hid];
                let cos = &rope.cos[r * half..(r + 1) * half];
                let sin = &rope.sin[r * half..(r + 1) * half];
                let (qo, ko, vo) = (h * d, hid + h * d, 2 * hid + h * d);
                rope_row::<T>(q, &src[qo..qo + d], &qkv_bias[qo..qo + d], cos, sin);
                rope_row::<T>(k, &src[ko..ko + d], &qkv_bias[ko..ko + d], cos, sin);
                bias_round_row::<T>(v, &src[vo..vo + d], &qkv_bias[vo..vo + d]);
            }
        });

    // 2. One task per (head, segment, query block), each owning its output rows.
    let mut tasks = Vec::new();
    for (h, mut rest) in oh.chunks_mut(plane).enumerate() {
        for seg in cu.windows(2) {
            let (s0, len) = (seg[0], seg[1] - seg[0]);
            let (seg_out, tail) = rest.split_at_mut(len * d);
            rest = tail;
            for (qb, o) in seg_out.chunks_mut(Q_BLOCK * d).enumerate() {
                tasks.push((h, s0, len, qb * Q_BLOCK, o));
            }
        }
    }
    let round_p = T::REEL_DTYPE != crate::DType::F32;
    tasks.into_par_iter().for_each(|(h, s0, len, q0, o)| {
        let qn = o.len() / d;
        let base = h * plane;
        let qs = &qh[base + (s0 + q0) * d..base + (s0 + q0 + qn) * d];
        let ks = &kh[base + s0 * d..base + (s0 + len) * d];
        let vs = &vh[base + s0 * d..base + (s0 + len) * d];
        SCRATCH.with_borrow_mut(|(s, sums)| {
            s.resize(qn * len, 0.0);
            sums.resize(qn, 0.0);
            // S = Q · Kᵀ (gemm overwrites s: read_dst is false).
            gemm_f32(qn, len, d, s, len, qs, d, 1, ks, 1, d);
            for (row, sum) in s.chunks_exact_mut(len).zip(sums.iter_mut()) {
                *sum = softmax_unnormalized(row, scale);
                if round_p {
                    for v in row.iter_mut() {
                        *v = T::round(*v);
                    }
                }
            }
            // O = P · V, then normalize by the row sums.
            gemm_f32(qn, d, len, o, d, s, len, 1, vs, d, 1);
            for (o, &sum) in o.chunks_exact_mut(d).zip(sums.iter()) {
                let inv = 1.0 / sum;
                for v in o {
                    *v *= inv;
                }
            }
        });
    });

    // 3. Back to row-major [rows, heads * d] in T.
    let mut out = vec![T::from_f32(0.0); rows * hid];
    out.par_chunks_mut(ROW_CHUNK * hid)
        .enumerate()
        .for_each(|(c, o)| {
            for (i, o) in o.chunks_exact_mut(hid).enumerate() {
                let r = c * ROW_CHUNK + i;
                for (h, o) in o.chunks_exact_mut(d).enumerate() {
                    let src = &oh[h * plane + r * d..h * plane + (r + 1) * d];
                    for (o, &v) in o.iter_mut().zip(src) {
                        *o = T::from_f32(v);
                    }
                }
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_accuracy() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let e = exp_f32(x) as f64;
            let r = (x as f64).exp();
            worst = worst.max(((e - r) / r).abs());
            x += 0.0137;
        }
        assert!(worst < 3e-7, "exp_f32 worst relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert!(exp_f32(-200.0) < 1e-37);
    }

    /// Naive attention in f64 for one segment layout.
    #[test]
    fn attention_matches_naive() {
        let (heads, d) = (2, 8);
        let hid = heads * d;
        let cu = [0usize, 5, 12, 12 + 130];
        let rows = *cu.last().unwrap();
        let mut seed = 1u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let qkv: Vec<f32> = (0..rows * 3 * hid).map(|_| rnd() * 2.0).collect();
        let rope = RopeTable {
            half: d / 2,
            cos: (0..rows * d / 2).map(|i| (i as f32 * 0.1).cos()).collect(),
            sin: (0..rows * d / 2).map(|i| (i as f32 * 0.1).sin()).collect(),
        };
        let zero_bias = vec![0f32; 3 * hid];
        let mut scratch = AttentionScratch::default();
        let out = attention::<f32>(&qkv, &zero_bias, &rope, &cu, heads, d, &mut scratch);
        let rot = |r: usize, off: usize| -> Vec<f64> {
            let x = &qkv[r * 3 * hid + off..r * 3 * hid + off + d];
            let (c, s) = (&rope.cos[r * d / 2..], &rope.sin[r * d / 2..]);
            let mut o = vec![0f64; d];
            for j in 0..d / 2 {
                let (a, b) = (x[j] as f64, x[j + d / 2] as f64);
                o[j] = a * c[j] as f64 - b * s[j] as f64;
                o[j + d / 2] = b * c[j] as f64 + a * s[j] as f64;
            }
            o
        };
        let mut worst = 0f64;
        for seg in cu.windows(2) {
            for h in 0..heads {
                for i in seg[0]..seg[1] {
                    let q = rot(i, h * d);
                    let sc: Vec<f64> = (seg[0]..seg[1])
                        .map(|j| {
                            let k = rot(j, hid + h * d);
                            q.iter().zip(&k).map(|(a, b)| a * b).sum::<f64>() / (d as f64).sqrt()
                        })
                        .collect();
                    let mx = sc.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = sc.iter().map(|s| (s - mx).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for c in 0..d {
                        let v: f64 = (seg[0]..seg[1])
                            .zip(&e)
                            .map(|(j, p)| p / z * qkv[j * 3 * hid + 2 * hid + h * d + c] as f64)
                            .sum();
                        worst = worst.max((v - out[i * hid + h * d + c] as f64).abs());
                    }
                }
            }
        }
        assert!(worst < 1e-5, "attention max abs error {worst}");
    }
}
