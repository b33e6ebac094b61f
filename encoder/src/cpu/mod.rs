//! The CPU backend: the vision towers (Qwen2.5-VL, the Qwen3-VL family) on candle-core
//! tensors, built from the blocks their [`crate::config::TowerKind`] names.
//!
//! GEMMs (patch embedding, projections, MLP, merger) are candle matmuls; the ops around
//! them are fused rayon kernels ([`kernels`]) that mirror transformers' dtype behaviour.
//! The plan (window permutation, segments, rotary table) comes from [`crate::plan`] and
//! the weights from [`crate::weights`], both backend-neutral.

pub(crate) mod kernels;

use candle_core::{Device, Storage, Tensor};
use half::{bf16, f16};

use crate::config::VisionConfig;
use crate::dtype::{DType, Elem};
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::weights::{
    HostData, HostTensor, LinearWeights, MergerWeights, MlpWeights, NormWeights, VisionWeights,
};

/// A linear layer: weight `[out, in]` in the model dtype, bias widened to f32 (exactly
/// the model-dtype values).
struct Linear {
    w: Tensor,
    b: Vec<f32>,
}

impl Linear {
    /// `x · Wᵀ` in f32 (the bias is added by the caller's fused epilogue). In f32 a candle
    /// matmul. In bf16/f16 both operands are widened to f32 first (exact), so the product
    /// accumulates in f32 and is rounded once after the bias add, like torch's CPU `addmm`
    /// for 16-bit types (candle's 16-bit matmul would round before the bias add).
    fn matmul<T: Elem>(&self, x: &Tensor) -> Result<Tensor> {
        if T::REEL_DTYPE == DType::F32 {
            return Ok(x.matmul(&self.w.t()?)?);
        }
        let x32 = widen::<T>(x)?;
        let w32 = widen::<T>(&self.w)?;
        Ok(x32.matmul(&w32.t()?)?)
    }
}

/// A `T` tensor widened to f32 (parallel).
fn widen<T: Elem>(t: &Tensor) -> Result<Tensor> {
    let v = with_slice::<T, _>(t, kernels::widen)?;
    Ok(Tensor::from_vec(v, t.shape(), &Device::Cpu)?)
}

/// A norm: RMSNorm (Qwen2.5-VL) or LayerNorm with its bias (Qwen3-VL).
enum Norm {
    Rms(Tensor),
    Layer(Tensor, Tensor),
}

enum Mlp {
    /// gate_proj and up_proj stacked (`[2 * intermediate, hidden]`), then down_proj.
    SwiGlu { gate_up: Linear, down: Linear },
    /// linear_fc1, GELU-tanh, linear_fc2.
    Gelu { fc1: Linear, fc2: Linear },
}

struct Block {
    norm1: Norm,
    norm2: Norm,
    qkv: Linear,
    proj: Linear,
    mlp: Mlp,
    full_attention: bool,
}

/// A patch merger: norm (per patch, or over the merged row when `postshuffle`),
/// merge_unit rows → one, Linear, exact GELU, Linear.
struct Merger {
    norm: Norm,
    postshuffle: bool,
    fc1: Linear,
    fc2: Linear,
}

/// The vision tower on the CPU.
pub(crate) struct CpuTower {
    cfg: VisionConfig,
    dtype: DType,
    /// Its bias is empty for towers without one.
    patch_embed: Linear,
    /// The learned position table (Qwen3-VL).
    pos_embed: Option<Tensor>,
    blocks: Vec<Block>,
    merger: Merger,
    /// `(block, merger)`: a deepstack merger taps the hidden states after that block.
    deepstack: Vec<(usize, Merger)>,
}

fn tensor(t: HostTensor) -> Result<Tensor> {
    let dev = Device::Cpu;
    Ok(match t.data {
        HostData::F32(v) => Tensor::from_vec(v, t.shape, &dev)?,
        HostData::BF16(v) => Tensor::from_vec(v, t.shape, &dev)?,
        HostData::F16(v) => Tensor::from_vec(v, t.shape, &dev)?,
    })
}

fn widen_host(t: HostTensor) -> Vec<f32> {
    match t.data {
        HostData::F32(v) => v,
        HostData::BF16(v) => kernels::widen(&v),
        HostData::F16(v) => kernels::widen(&v),
    }
}

fn linear(l: LinearWeights) -> Result<Linear> {
    Ok(Linear {
        w: tensor(l.w)?,
        b: widen_host(l.b),
    })
}

fn norm(n: NormWeights) -> Result<Norm> {
    Ok(match n.b {
        Some(b) => Norm::Layer(tensor(n.w)?, tensor(b)?),
        None => Norm::Rms(tensor(n.w)?),
    })
}

fn merger(m: MergerWeights, postshuffle: bool) -> Result<Merger> {
    Ok(Merger {
        norm: norm(m.norm)?,
        postshuffle,
        fc1: linear(m.fc1)?,
        fc2: linear(m.fc2)?,
    })
}

/// Runs `f` on the contiguous CPU data of `t` viewed as `&[T]`.
fn with_slice<T: Elem, R>(t: &Tensor, f: impl FnOnce(&[T]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        return Err(Error::Candle(candle_core::Error::Msg(
            "tensor is not on the CPU".into(),
        )));
    };
    let data = cpu.as_slice::<T>()?;
    let (a, b) = layout
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("tensor is not contiguous".into()))?;
    Ok(f(&data[a..b]))
}

impl Norm {
    /// The norm of every `width`-wide row of `x` (`T` values) in `T`.
    fn apply<T: Elem>(&self, x: &Tensor, eps: f32) -> Result<Tensor> {
        let y = with_slice::<T, _>(x, |xs| match self {
            Norm::Rms(w) => with_slice::<T, _>(w, |ws| kernels::rms_norm(xs, ws, eps)),
            Norm::Layer(w, b) => with_slice::<T, _>(w, |ws| {
                with_slice::<T, _>(b, |bs| kernels::layer_norm(xs, ws, bs, eps))
            })?,
        })??;
        Ok(Tensor::from_vec(y, x.shape(), &Device::Cpu)?)
    }
}

impl Merger {
    /// The merged embeddings of `x` (`[patches, hidden]` in window order): f32 rows,
    /// rounded to `T`, gathered into input order by `reverse`.
    fn forward<T: Elem>(
        &self,
        x: &Tensor,
        tokens: usize,
        eps: f32,
        reverse: &[u32],
    ) -> Result<Vec<f32>> {
        let wide = x.dims()[1] * (x.dims()[0] / tokens.max(1));
        let h = if self.postshuffle {
            self.norm.apply::<T>(&x.reshape((tokens, wide))?, eps)?
        } else {
            self.norm.apply::<T>(x, eps)?.reshape((tokens, wide))?
        };
        let y = self.fc1.matmul::<T>(&h)?;
        let g = with_slice::<f32, _>(&y, |y| kernels::gelu_erf::<T>(y, &self.fc1.b))?;
        let y = self
            .fc2
            .matmul::<T>(&Tensor::from_vec(g, (tokens, wide), &Device::Cpu)?)?;
        with_slice::<f32, _>(&y, |y| {
            kernels::gather_rows_bias::<T>(y, &self.fc2.b, reverse)
        })
    }
}

impl CpuTower {
    pub(crate) fn new(cfg: VisionConfig, dtype: DType, w: VisionWeights) -> Result<Self> {
        let blocks = w
            .blocks
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                let mlp = match b.mlp {
                    MlpWeights::SwiGlu { gate, up, down } => {
                        let w = Tensor::cat(&[tensor(gate.w)?, tensor(up.w)?], 0)?;
                        let mut b = widen_host(gate.b);
                        b.extend(widen_host(up.b));
                        Mlp::SwiGlu {
                            gate_up: Linear { w, b },
                            down: linear(down)?,
                        }
                    }
                    MlpWeights::Gelu { fc1, fc2 } => Mlp::Gelu {
                        fc1: linear(fc1)?,
                        fc2: linear(fc2)?,
                    },
                };
                Ok(Block {
                    norm1: norm(b.norm1)?,
                    norm2: norm(b.norm2)?,
                    qkv: linear(b.qkv)?,
                    proj: linear(b.proj)?,
                    mlp,
                    full_attention: cfg.is_full_attention(i),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let deepstack = cfg
            .deepstack_visual_indexes
            .iter()
            .copied()
            .zip(w.deepstack)
            .map(|(block, m)| Ok((block, merger(m, true)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(CpuTower {
            patch_embed: Linear {
                w: tensor(w.patch_embed)?,
                b: w.patch_bias.map(widen_host).unwrap_or_default(),
            },
            pos_embed: w.pos_embed.map(tensor).transpose()?,
            blocks,
            merger: merger(w.merger, false)?,
            deepstack,
            cfg,
            dtype,
        })
    }

    /// Encodes `pixel_values` (`[plan.patches, patch_dim]`, input order) into
    /// `[plan.tokens, output_width]` f32 rows in input order (the main embeddings, then
    /// each deepstack feature).
    pub(crate) fn forward(&self, pixel_values: &[f32], plan: &Plan) -> Result<Vec<f32>> {
        match self.dtype {
            DType::F32 => self.forward_t::<f32>(pixel_values, plan),
            DType::BF16 => self.forward_t::<bf16>(pixel_values, plan),
            DType::F16 => self.forward_t::<f16>(pixel_values, plan),
        }
    }

    fn forward_t<T: Elem>(&self, pixel_values: &[f32], plan: &Plan) -> Result<Vec<f32>> {
        let cfg = &self.cfg;
        let (hid, inter) = (cfg.hidden_size, cfg.intermediate_size);
        let eps = cfg.norm_eps as f32;
        let dev = Device::Cpu;
        let rope = plan.rope_table(cfg);
        let tensor = |v: Vec<T>, cols: usize| {
            let rows = v.len() / cols;
            Tensor::from_vec(v, (rows, cols), &dev)
        };
        // GEMM output (f32) + bias (+ residual) → T.
        let epilogue =
            |y: &Tensor, b: &[f32], r: Option<&Tensor>, width: usize| -> Result<Tensor> {
                let b = (!b.is_empty()).then_some(b);
                let v = with_slice::<f32, _>(y, |y| match r {
                    Some(r) => {
                        with_slice::<T, _>(r, |r| kernels::epilogue::<T>(y, b, Some(r), width))
                    }
                    None => Ok(kernels::epilogue::<T>(y, b, None, width)),
                })??;
                Ok(tensor(v, width)?)
            };

        // Rows go into window order before the patch embedding (a row-wise GEMM, so this
        // equals transformers' permutation after it); the cast to T is HF's `.to(dtype)`.
        let x: Vec<T> = kernels::gather_rows(pixel_values, cfg.patch_dim(), &plan.patch_order());
        let x = tensor(x, cfg.patch_dim())?;
        let y = self.patch_embed.matmul::<T>(&x)?;
        let mut x = if T::REEL_DTYPE == DType::F32 && self.patch_embed.b.is_empty() {
            y
        } else {
            epilogue(&y, &self.patch_embed.b, None, hid)?
        };
        if let Some(table) = &self.pos_embed {
            let (idx, wts) = plan.position_taps(cfg);
            let mut v = with_slice::<T, _>(&x, <[T]>::to_vec)?;
            with_slice::<T, _>(table, |t| kernels::pos_embed_add(&mut v, t, &idx, &wts))?;
            x = tensor(v, hid)?;
        }
        let reverse = plan.reverse_index();
        let mut outputs = Vec::with_capacity(1 + self.deepstack.len());

        let mut scratch = kernels::AttentionScratch::default();
        for (i, blk) in self.blocks.iter().enumerate() {
            let cu = if blk.full_attention {
                &plan.cu_seqlens
            } else {
                &plan.cu_window_seqlens
            };
            let h = blk.norm1.apply::<T>(&x, eps)?;
            let y = blk.qkv.matmul::<T>(&h)?;
            let a = with_slice::<f32, _>(&y, |q| {
                kernels::attention::<T>(
                    q,
                    &blk.qkv.b,
                    &rope,
                    cu,
                    cfg.num_heads,
                    cfg.head_dim(),
                    &mut scratch,
                )
            })?;
            let y = blk.proj.matmul::<T>(&tensor(a, hid)?)?;
            x = epilogue(&y, &blk.proj.b, Some(&x), hid)?;
            let h = blk.norm2.apply::<T>(&x, eps)?;
            let (m, down) = match &blk.mlp {
                Mlp::SwiGlu { gate_up, down } => {
                    let y = gate_up.matmul::<T>(&h)?;
                    let m =
                        with_slice::<f32, _>(&y, |y| kernels::silu_mul::<T>(y, &gate_up.b, inter))?;
                    (m, down)
                }
                Mlp::Gelu { fc1, fc2 } => {
                    let y = fc1.matmul::<T>(&h)?;
                    (
                        with_slice::<f32, _>(&y, |y| kernels::gelu_tanh::<T>(y, &fc1.b))?,
                        fc2,
                    )
                }
            };
            let y = down.matmul::<T>(&tensor(m, inter)?)?;
            x = epilogue(&y, &down.b, Some(&x), hid)?;
            for (_, m) in self.deepstack.iter().filter(|(b, _)| *b == i) {
                outputs.push(m.forward::<T>(&x, plan.tokens, eps, &reverse)?);
            }
        }

        // The main merger's output first, then the deepstack features: packed per row.
        outputs.insert(0, self.merger.forward::<T>(&x, plan.tokens, eps, &reverse)?);
        Ok(pack_rows(&outputs, plan.tokens))
    }
}

/// Rows of several `[tokens, width]` outputs side by side: `[tokens, Σ width]`.
fn pack_rows(parts: &[Vec<f32>], tokens: usize) -> Vec<f32> {
    if let [only] = parts {
        return only.clone();
    }
    let widths: Vec<usize> = parts.iter().map(|p| p.len() / tokens.max(1)).collect();
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for t in 0..tokens {
        for (p, &w) in parts.iter().zip(&widths) {
            out.extend_from_slice(&p[t * w..(t + 1) * w]);
        }
    }
    out
}
