//! Everything about a batch of grids that does not depend on the weights: the window
//! permutation, the attention segments, the 2D rotary table and the position-table
//! interpolation taps. Backend-neutral (plain host arrays), so the CUDA backend can
//! upload the same plan.
//!
//! Mirrors transformers 5.17 `vision_utils.get_vision_window_index`,
//! `get_vision_cu_seqlens`, `get_vision_position_ids`,
//! `get_vision_interpolation_indices_and_weights` and the towers' rotary embeddings.

use rayon::prelude::*;

use crate::config::VisionConfig;
use crate::error::{Error, Result};

/// The layout of one encoder batch (a list of `(t, h, w)` grids in patch units).
///
/// Rows of the hidden states inside the tower are in *window order*: merged tokens are
/// reordered by [`Plan::window_index`] (each token keeps its `merge_unit` consecutive
/// patch rows), so that every attention window, and every temporal slice, is a contiguous
/// range of rows. Towers without windows (Qwen3-VL) keep the input order: their window
/// index is the identity and their "windows" are the temporal slices.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The grids, in input order.
    pub grids: Vec<[usize; 3]>,
    /// Total patches (rows of `pixel_values`): sum of t*h*w.
    pub patches: usize,
    /// Total merged output tokens: patches / merge_unit.
    pub tokens: usize,
    /// Patches per merged token (spatial_merge_size², 4).
    pub merge_unit: usize,
    /// `window_index[j]` is the input-order merged token at window-order position `j`.
    pub window_index: Vec<u32>,
    /// Full-attention segments, cumulative, in patches: one per temporal slice (h*w).
    pub cu_seqlens: Vec<usize>,
    /// Window-attention segments, cumulative, in patches (empty windows removed).
    pub cu_window_seqlens: Vec<usize>,
}

impl Plan {
    /// Builds the plan for `grids`; every h and w must be a multiple of spatial_merge_size.
    pub fn new(cfg: &VisionConfig, grids: &[[usize; 3]]) -> Result<Self> {
        let m = cfg.spatial_merge_size;
        let mu = cfg.merge_unit();
        let mut patches = 0usize;
        for (i, &[t, h, w]) in grids.iter().enumerate() {
            if t == 0 || h == 0 || w == 0 || h % m != 0 || w % m != 0 {
                return Err(Error::InvalidInput(format!(
                    "grid {i} = ({t}, {h}, {w}): t, h, w must be positive and h, w multiples of spatial_merge_size {m}"
                )));
            }
            patches = t
                .checked_mul(h)
                .and_then(|x| x.checked_mul(w))
                .and_then(|x| x.checked_add(patches))
                .filter(|&p| p <= u32::MAX as usize)
                .ok_or_else(|| Error::InvalidInput("too many patches in one batch".into()))?;
        }
        let tokens = patches / mu;
        let mut window_index = Vec::with_capacity(tokens);
        let mut cu_window_seqlens = vec![0usize];
        let mut cu_seqlens = vec![0usize];
        let mut base = 0usize;
        for &[t, h, w] in grids {
            let (lh, lw) = (h / m, w / m);
            let ws = if cfg.windowed() {
                cfg.merger_window()
            } else {
                lh.max(lw)
            };
            // transformers pads to the next multiple of ws, adding a whole empty window row
            // or column when already divisible; empty windows are then dropped. The
            // non-empty windows are exactly the ceil(lh/ws) x ceil(lw/ws) below.
            let (nwh, nww) = (lh.div_ceil(ws), lw.div_ceil(ws));
            for ti in 0..t {
                for wh in 0..nwh {
                    let rows = wh * ws..((wh + 1) * ws).min(lh);
                    for ww in 0..nww {
                        let cols = ww * ws..((ww + 1) * ws).min(lw);
                        for r in rows.clone() {
                            let row0 = base + (ti * lh + r) * lw;
                            window_index.extend(cols.clone().map(|c| (row0 + c) as u32));
                        }
                        let n = rows.len() * cols.len() * mu;
                        cu_window_seqlens.push(cu_window_seqlens.last().unwrap() + n);
                    }
                }
                cu_seqlens.push(cu_seqlens.last().unwrap() + h * w);
            }
            base += t * lh * lw;
        }
        Ok(Plan {
            grids: grids.to_vec(),
            patches,
            tokens,
            merge_unit: mu,
            window_index,
            cu_seqlens,
            cu_window_seqlens,
        })
    }

    /// `reverse[i]` is the window-order position of input-order token `i` (argsort of
    /// `window_index`).
    pub fn reverse_index(&self) -> Vec<u32> {
        let mut rev = vec![0u32; self.tokens];
        for (j, &i) in self.window_index.iter().enumerate() {
            rev[i as usize] = j as u32;
        }
        rev
    }

    /// For every row in window order, the input-order patch row it comes from.
    pub fn patch_order(&self) -> Vec<u32> {
        let mu = self.merge_unit as u32;
        self.window_index
            .iter()
            .flat_map(|&tok| (0..mu).map(move |s| tok * mu + s))
            .collect()
    }

    /// Per row in window order, the `(row, col)` patch position in its frame (the RoPE
    /// position ids, `get_vision_position_ids` permuted into window order).
    pub fn positions(&self, cfg: &VisionConfig) -> Vec<[u32; 2]> {
        let m = cfg.spatial_merge_size;
        // Input-order token → (row, col) of its top-left patch, per grid.
        let mut tok_pos = Vec::with_capacity(self.tokens);
        for &[t, h, w] in &self.grids {
            let (lh, lw) = (h / m, w / m);
            for _ in 0..t {
                for r in 0..lh {
                    tok_pos.extend((0..lw).map(|c| [(r * m) as u32, (c * m) as u32]));
                }
            }
        }
        let mut pos = Vec::with_capacity(self.patches);
        for &tok in &self.window_index {
            let [r, c] = tok_pos[tok as usize];
            for s in 0..self.merge_unit {
                pos.push([r + (s / m) as u32, c + (s % m) as u32]);
            }
        }
        pos
    }

    /// The position-table interpolation of every row (Qwen3-VL), in window order:
    /// four table rows and their f32 weights per patch, `[patches, 4]` each, in the order
    /// (top-left, top-right, bottom-left, bottom-right).
    ///
    /// transformers 5.17 `get_vision_interpolation_indices_and_weights` (bilinear,
    /// align_corners): per axis of `size` patches over a table of `side` rows,
    /// `src = (i · (side − 1)) / max(size − 1, 1)` in f32, taps `floor(src)` and
    /// `floor(src) + 1` clamped to the table, weights `max(1 − |frac − k|, 0)`.
    pub fn position_taps(&self, cfg: &VisionConfig) -> (Vec<u32>, Vec<f32>) {
        let side = cfg.position_grid_side();
        let axis = |size: usize| -> Vec<([u32; 2], [f32; 2])> {
            let last = (side - 1) as f32;
            (0..size)
                .map(|i| {
                    let src = (i as f32 * last) / (size.saturating_sub(1).max(1)) as f32;
                    let fl = src.floor();
                    let frac = src - fl;
                    let tap = |k: f32| (fl + k).clamp(0.0, last) as u32;
                    let weight = |k: f32| (1.0 - (frac - k).abs()).max(0.0);
                    ([tap(0.0), tap(1.0)], [weight(0.0), weight(1.0)])
                })
                .collect()
        };
        let positions = self.positions(cfg);
        let (mut idx, mut wts) = (Vec::with_capacity(4 * self.patches), Vec::new());
        wts.reserve(4 * self.patches);
        let mut row = 0;
        for &[t, h, w] in &self.grids {
            let (rows, cols) = (axis(h), axis(w));
            for &[r, c] in &positions[row..row + t * h * w] {
                let ((rt, rw), (ct, cw)) = (rows[r as usize], cols[c as usize]);
                for i in 0..2 {
                    for j in 0..2 {
                        idx.push(rt[i] * side as u32 + ct[j]);
                        wts.push(rw[i] * cw[j]);
                    }
                }
            }
            row += t * h * w;
        }
        (idx, wts)
    }

    /// The 2D rotary table for rows in window order.
    pub fn rope_table(&self, cfg: &VisionConfig) -> RopeTable {
        RopeTable::new(cfg, &self.positions(cfg))
    }

    /// Floating-point operations of one forward pass: 2 per multiply-add of every linear
    /// layer (patch embedding, attention, MLP, mergers) plus the attention products
    /// (`QKᵀ` and `PV`: 4·head_dim per query-key pair per head, over the window segments
    /// for windowed blocks and the per-slice segments for full-attention blocks).
    pub fn flops(&self, cfg: &VisionConfig) -> f64 {
        let (p, t) = (self.patches as f64, self.tokens as f64);
        let (hid, inter) = (cfg.hidden_size as f64, cfg.intermediate_size as f64);
        let wide = hid * self.merge_unit as f64;
        // SwiGLU has three projections, the GELU MLP two.
        let mlp_layers = if cfg.windowed() { 3.0 } else { 2.0 };
        let mergers = 1.0 + cfg.deepstack_visual_indexes.len() as f64;
        let per_block = hid * 3.0 * hid + hid * hid + mlp_layers * hid * inter;
        let pairs =
            |cu: &[usize]| -> f64 { cu.windows(2).map(|w| ((w[1] - w[0]) as f64).powi(2)).sum() };
        let (full, window) = (pairs(&self.cu_seqlens), pairs(&self.cu_window_seqlens));
        let full_blocks = (0..cfg.depth).filter(|&i| cfg.is_full_attention(i)).count() as f64;
        let window_blocks = cfg.depth as f64 - full_blocks;
        let linear = p * (cfg.patch_dim() as f64 * hid + cfg.depth as f64 * per_block)
            + mergers * t * (wide * wide + wide * cfg.out_hidden_size as f64);
        let attention = 4.0 * hid * (full_blocks * full + window_blocks * window);
        2.0 * linear + attention
    }
}

/// cos/sin of the 2D rotary embedding, float32, `[rows, head_dim / 2]` each.
///
/// transformers builds `[freqs(row) | freqs(col)]` (head_dim/2 values) and duplicates it to
/// head_dim for `rotate_half`; only the first half is stored here (the second is equal).
#[derive(Debug, Clone, PartialEq)]
pub struct RopeTable {
    /// head_dim / 2.
    pub half: usize,
    /// `[rows, half]` row-major.
    pub cos: Vec<f32>,
    /// `[rows, half]` row-major.
    pub sin: Vec<f32>,
}

impl RopeTable {
    /// Table for the given `(row, col)` positions.
    pub fn new(cfg: &VisionConfig, positions: &[[u32; 2]]) -> Self {
        let inv = inv_freq(cfg);
        let q = inv.len();
        let half = 2 * q;
        let mut cos = vec![0f32; positions.len() * half];
        let mut sin = vec![0f32; positions.len() * half];
        const ROWS: usize = 256;
        cos.par_chunks_mut(ROWS * half)
            .zip(sin.par_chunks_mut(ROWS * half))
            .zip(positions.par_chunks(ROWS))
            .for_each(|((c, s), p)| {
                for ((c, s), &[r, col]) in c
                    .chunks_exact_mut(half)
                    .zip(s.chunks_exact_mut(half))
                    .zip(p)
                {
                    for (k, &f) in inv.iter().enumerate() {
                        // float32 like transformers: position.float() * inv_freq, then cos/sin.
                        let a = r as f32 * f;
                        let b = col as f32 * f;
                        c[k] = a.cos();
                        s[k] = a.sin();
                        c[q + k] = b.cos();
                        s[q + k] = b.sin();
                    }
                }
            });
        RopeTable { half, cos, sin }
    }
}

/// `1 / theta^(arange(0, d, 2) / d)` with d = head_dim / 2, in float32 (head_dim/4 values).
pub fn inv_freq(cfg: &VisionConfig) -> Vec<f32> {
    let d = cfg.head_dim() / 2;
    let theta = cfg.rope_theta as f32;
    (0..d)
        .step_by(2)
        .map(|i| 1.0f32 / theta.powf(i as f32 / d as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> VisionConfig {
        crate::init::Arch::Qwen25Vl7b.vision_config()
    }

    #[test]
    fn window_index_divisible() {
        // (1, 16, 16): merged 8x8 → four 4x4 windows of 64 patches.
        let p = Plan::new(&cfg(), &[[1, 16, 16]]).unwrap();
        assert_eq!(p.cu_window_seqlens, vec![0, 64, 128, 192, 256]);
        assert_eq!(p.cu_seqlens, vec![0, 256]);
        assert_eq!(&p.window_index[..6], &[0, 1, 2, 3, 8, 9]);
        assert_eq!(p.window_index[16], 4);
        let rev = p.reverse_index();
        for (j, &i) in p.window_index.iter().enumerate() {
            assert_eq!(rev[i as usize] as usize, j);
        }
    }

    #[test]
    fn window_index_padded_video_batch() {
        // (2, 12, 10): merged 6x5 → windows 4x4, 4x1, 2x4, 2x1 per frame.
        let p = Plan::new(&cfg(), &[[2, 12, 10], [1, 4, 4]]).unwrap();
        let lens: Vec<usize> = p
            .cu_window_seqlens
            .windows(2)
            .map(|w| w[1] - w[0])
            .collect();
        assert_eq!(lens, vec![64, 16, 32, 8, 64, 16, 32, 8, 16]);
        assert_eq!(p.cu_seqlens, vec![0, 120, 240, 256]);
        assert_eq!(p.tokens, 64);
        // Second window of frame 0 is column 4 of rows 0..4.
        assert_eq!(&p.window_index[16..20], &[4, 9, 14, 19]);
        // Frame 1 starts at token 30; the second grid at token 60.
        assert_eq!(p.window_index[30], 30);
        assert_eq!(&p.window_index[60..], &[60, 61, 62, 63]);
        let pos = p.positions(&cfg());
        // Row 16*4 (token 4 of frame 0: merged (0,4)) → patches (0,8),(0,9),(1,8),(1,9).
        assert_eq!(&pos[64..68], &[[0, 8], [0, 9], [1, 8], [1, 9]]);
    }

    #[test]
    fn rejects_bad_grids() {
        assert!(Plan::new(&cfg(), &[[1, 3, 4]]).is_err());
        assert!(Plan::new(&cfg(), &[[0, 4, 4]]).is_err());
    }

    #[test]
    fn qwen3_rows_stay_in_input_order_with_one_segment_per_slice() {
        let cfg = crate::init::Arch::Qwen3Vl8b.vision_config();
        let p = Plan::new(&cfg, &[[3, 4, 6], [1, 8, 8]]).unwrap();
        // HF's example: grid (3,4,6),(1,8,8) gives cu_seqlens [0, 24, 48, 72, 136].
        assert_eq!(p.cu_seqlens, vec![0, 24, 48, 72, 136]);
        let identity: Vec<u32> = (0..p.tokens as u32).collect();
        assert_eq!(p.window_index, identity);
        // Merge order: (0,0), (0,1), (1,0), (1,1), (0,2), (0,3), …
        let pos = p.positions(&cfg);
        assert_eq!(&pos[..6], &[[0, 0], [0, 1], [1, 0], [1, 1], [0, 2], [0, 3]]);
    }

    #[test]
    fn position_taps_interpolate_the_table_corners_exactly() {
        let cfg = crate::init::Arch::Qwen3Vl8b.vision_config();
        let p = Plan::new(&cfg, &[[1, 4, 6]]).unwrap();
        let (idx, w) = p.position_taps(&cfg);
        assert_eq!((idx.len(), w.len()), (96, 96));
        // Patch (0,0) is table row 0 with weight 1 (its other taps weigh 0).
        assert_eq!((idx[0], w[0]), (0, 1.0));
        assert_eq!(w[1..4].iter().sum::<f32>(), 0.0);
        // The last patch, (3,5), is the table's far corner (47, 47).
        let last = 4 * 23;
        let k = (0..4).find(|&k| w[last + k] == 1.0).unwrap();
        assert_eq!(idx[last + k], 47 * 48 + 47);
        // Every patch's weights sum to 1.
        for c in w.chunks_exact(4) {
            assert!((c.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn inv_freq_7b() {
        let f = inv_freq(&cfg());
        assert_eq!(f.len(), 20);
        assert_eq!(f[0], 1.0);
        assert!((f[1] - 1.0 / 10000f32.powf(0.05)).abs() < 1e-7);
    }
}
