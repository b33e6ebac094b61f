//! The CPU backend: the Qwen2.5-VL vision tower on candle-core tensors.
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
use crate::weights::{HostData, HostTensor, VisionWeights};

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

struct Block {
    norm1: Tensor,
    norm2: Tensor,
    qkv: Linear,
    proj: Linear,
    /// gate_proj and up_proj stacked: `[2 * intermediate, hidden]`.
    gate_up: Linear,
    down: Linear,
    full_attention: bool,
}

/// The vision tower on the CPU.
pub(crate) struct CpuTower {
    cfg: VisionConfig,
    dtype: DType,
    patch_embed: Linear,
    blocks: Vec<Block>,
    ln_q: Tensor,
    fc1: Linear,
    fc2: Linear,
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

fn linear(w: HostTensor, b: HostTensor) -> Result<Linear> {
    Ok(Linear {
        w: tensor(w)?,
        b: widen_host(b),
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

impl CpuTower {
    pub(crate) fn new(cfg: VisionConfig, dtype: DType, w: VisionWeights) -> Result<Self> {
        let blocks = w
            .blocks
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                let gate_up_w = Tensor::cat(&[tensor(b.gate_w)?, tensor(b.up_w)?], 0)?;
                let mut gate_up_b = widen_host(b.gate_b);
                gate_up_b.extend(widen_host(b.up_b));
                Ok(Block {
                    norm1: tensor(b.norm1)?,
                    norm2: tensor(b.norm2)?,
                    qkv: linear(b.qkv_w, b.qkv_b)?,
                    proj: linear(b.proj_w, b.proj_b)?,
                    gate_up: Linear {
                        w: gate_up_w,
                        b: gate_up_b,
                    },
                    down: linear(b.down_w, b.down_b)?,
                    full_attention: cfg.is_full_attention(i),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(CpuTower {
            patch_embed: Linear {
                w: tensor(w.patch_embed)?,
                b: Vec::new(),
            },
            blocks,
            ln_q: tensor(w.merger.ln_q)?,
            fc1: linear(w.merger.fc1_w, w.merger.fc1_b)?,
            fc2: linear(w.merger.fc2_w, w.merger.fc2_b)?,
            cfg,
            dtype,
        })
    }

    /// Encodes `pixel_values` (`[plan.patches, patch_dim]`, input order) into
    /// `[plan.tokens, out_hidden]` f32 rows in input order.
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
        let eps = cfg.rms_norm_eps as f32;
        let dev = Device::Cpu;
        let rope = plan.rope_table(cfg);
        let tensor = |v: Vec<T>, cols: usize| {
            let rows = v.len() / cols;
            Tensor::from_vec(v, (rows, cols), &dev)
        };
        let rms = |x: &Tensor, w: &Tensor| -> Result<Tensor> {
            let y = with_slice::<T, _>(x, |xs| {
                with_slice::<T, _>(w, |ws| kernels::rms_norm(xs, ws, eps))
            })??;
            Ok(Tensor::from_vec(y, x.shape(), &dev)?)
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
        let mut x = if T::REEL_DTYPE == DType::F32 {
            y
        } else {
            epilogue(&y, &[], None, hid)?
        };

        let mut scratch = kernels::AttentionScratch::default();
        for blk in &self.blocks {
            let cu = if blk.full_attention {
                &plan.cu_seqlens
            } else {
                &plan.cu_window_seqlens
            };
            let h = rms(&x, &blk.norm1)?;
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
            let h = rms(&x, &blk.norm2)?;
            let y = blk.gate_up.matmul::<T>(&h)?;
            let m = with_slice::<f32, _>(&y, |y| kernels::silu_mul::<T>(y, &blk.gate_up.b, inter))?;
            let y = blk.down.matmul::<T>(&tensor(m, inter)?)?;
            x = epilogue(&y, &blk.down.b, Some(&x), hid)?;
        }

        // Merger: RMSNorm, merge_unit consecutive rows → one, Linear, GELU, Linear.
        let wide = hid * cfg.merge_unit();
        let h = rms(&x, &self.ln_q)?.reshape((plan.tokens, wide))?;
        let y = self.fc1.matmul::<T>(&h)?;
        let g = with_slice::<f32, _>(&y, |y| kernels::gelu_erf::<T>(y, &self.fc1.b))?;
        let y = self.fc2.matmul::<T>(&tensor(g, wide)?)?;
        // Bias, rounding to T, and back to input order (argsort of the window index).
        let rev = plan.reverse_index();
        with_slice::<f32, _>(&y, |y| kernels::gather_rows_bias::<T>(y, &self.fc2.b, &rev))
    }
}
