//! The CUDA backend of the vision towers (Qwen2.5-VL, the Qwen3-VL family): cuBLASLt
//! GEMMs (bf16 with fp32 accumulation, or exact f32) and reel's NVRTC kernels
//! (kernels/vision.cu): fused residual-add + RMSNorm or LayerNorm, 2D RoPE, SiLU-gate,
//! GELU (tanh and exact erf), the interpolated position table, row gathers for the window
//! permutation, and variable-length attention over `cu_seqlens` for both the windows and
//! the per-slice full-attention blocks, for head sizes 32, 64, 72, 80 and 128. One forward
//! is a fixed sequence of launches on one stream: no host loop over windows, no host
//! synchronization until the result is read.

mod batch;
mod gemm;
mod measure;

pub use batch::{BatchStats, Batcher, Request};
pub use measure::{gemm_peak_tflops, PoolPeak};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig,
    PushKernelArg,
};
use half::bf16;

use crate::config::VisionConfig;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::weights::{
    HostData, HostTensor, LinearWeights, MergerWeights, MlpWeights, NormWeights, VisionWeights,
};
use gemm::{Elem, Gemm, Layer};

fn cuda<E: std::fmt::Display + 'static>(e: E) -> Error {
    use cudarc::driver::sys::cudaError_enum as R;
    let driver = (&e as &dyn std::any::Any).downcast_ref::<cudarc::driver::DriverError>();
    match driver {
        Some(d) if d.0 == R::CUDA_ERROR_OUT_OF_MEMORY => Error::OutOfMemory(e.to_string()),
        _ => Error::Cuda(e.to_string()),
    }
}

/// Rows of the MLP processed per chunk (bounds the activation memory).
const MLP_ROWS: usize = 32768;
/// The MLP's intermediate width is padded to a multiple of this many elements.
const INTER_ALIGN: usize = 64;
/// Queries per attention block (ATT_TILE in vision.cu).
const ATT_TILE: usize = 64;
/// Keys per shared-memory tile of the flash kernels (KEYS of `FA_ENTRY` in vision.cu).
/// Segments of at most this many tokens (Qwen2.5-VL's 64-token windows: one key tile)
/// keep `attention_tc*`, which has no pipeline to fill.
const FA_KEYS: usize = 64;

/// Launches `f` on the tower's stream with the given arguments.
macro_rules! launch {
    ($tower:expr, $f:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let mut builder = $tower.stream.launch_builder($f);
        $( builder.arg($arg); )+
        // SAFETY: kernel-launch contract: every use of `launch!` passes arguments in the
        // order and of the types of the kernel's signature in kernels/vision.cu, device
        // pointers into this tower's buffers (of its context, alive until its stream is
        // synchronized), sized by the caller for the launch's grid.
        unsafe { builder.launch($cfg) }.map(|_| ()).map_err(cuda)
    }};
}

/// A device buffer of raw elements.
struct Buf(CudaSlice<u8>);

impl Buf {
    fn ptr(&self, stream: &CudaStream) -> u64 {
        let (p, _sync) = self.0.device_ptr(stream);
        p
    }
}

struct Linear {
    w: Buf,
    b: Option<Buf>,
    out: usize,
    inp: usize,
}

/// A norm: RMSNorm (Qwen2.5-VL) or LayerNorm with its bias (Qwen3-VL).
enum Norm {
    Rms(Buf),
    Layer(Buf, Buf),
}

enum Mlp {
    /// gate_proj and up_proj stacked, then down_proj (intermediate padded).
    SwiGlu { gate_up: Linear, down: Linear },
    /// linear_fc1, GELU-tanh, linear_fc2 (intermediate padded).
    Gelu { fc1: Linear, fc2: Linear },
}

impl Mlp {
    /// The (padded) intermediate width.
    fn inter(&self) -> usize {
        match self {
            Mlp::SwiGlu { down, .. } | Mlp::Gelu { fc2: down, .. } => down.inp,
        }
    }
}

struct Block {
    norm1: Norm,
    norm2: Norm,
    qkv: Linear,
    proj: Linear,
    mlp: Mlp,
    full_attention: bool,
}

/// A patch merger: norm, merge_unit rows → one, Linear, exact GELU, Linear.
struct Merger {
    norm: Norm,
    fc1: Linear,
    fc2: Linear,
}

struct Kernels {
    gather_in_f32: CudaFunction,
    gather_in_bf16: CudaFunction,
    gather_out: CudaFunction,
    add_rmsnorm: CudaFunction,
    rope: CudaFunction,
    silu_mul: CudaFunction,
    gelu: CudaFunction,
    add_layernorm: CudaFunction,
    layernorm: CudaFunction,
    add_round: CudaFunction,
    gelu_tanh: CudaFunction,
    pos_embed_add: CudaFunction,
    pack_columns: CudaFunction,
    /// f32, and bf16 segments of at most `FA_KEYS` tokens: `attention{d}` (one thread per
    /// query) or `attention_tc{d}` (4 warps of 16 queries).
    attention: Attention,
    /// bf16 segments longer than `FA_KEYS`: `attention_fa{d}_q128` and `_q64`.
    attention_fa: Option<[Attention; 2]>,
    /// Streaming multiprocessors of the GPU (picks q128 or q64).
    sms: usize,
    /// `REEL_ATTENTION_KERNEL` (`tc`, `q64` or `q128`): one bf16 attention kernel for
    /// every segment, for A/B timings and for testing each path on small models.
    force: Option<String>,
}

/// An attention kernel and its launch shape: grid (query tiles, heads), `threads` per block,
/// `smem` bytes of dynamic shared memory, `queries` per tile.
struct Attention {
    f: CudaFunction,
    queries: usize,
    threads: u32,
    smem: u32,
}

impl Attention {
    /// `attention_fa{hd}_q{queries}_bf16` (vision.cu, `FA_ENTRY`): 4 warps; dynamic shared
    /// memory `FA_SMEM` = (Q rows when Q is staged in shared memory (head_dim 128 at 128
    /// queries) + 2 stages × (K + V) × 64 keys) × the padded row (head_dim rounded up to an
    /// odd number of 16-byte vectors) × 2 bytes. Above 48 KB the function's limit is raised;
    /// `None` when the GPU cannot give that much to a block.
    fn flash(
        module: &Arc<cudarc::driver::CudaModule>,
        ctx: &CudaContext,
        hd: usize,
        queries: usize,
    ) -> Result<Option<Self>> {
        use cudarc::driver::sys::{CUdevice_attribute as D, CUfunction_attribute as F};
        let ld = if (hd / 8) % 2 == 1 { hd } else { hd + 8 };
        let q_rows = if hd == 128 && queries == 128 {
            queries
        } else {
            0
        };
        let smem = (q_rows + 4 * FA_KEYS) * ld * 2;
        let optin = ctx
            .attribute(D::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
            .map_err(cuda)?;
        if smem > optin.max(0) as usize {
            return Ok(None);
        }
        let f = module
            .load_function(&format!("attention_fa{hd}_q{queries}_bf16"))
            .map_err(cuda)?;
        if smem > 48 << 10 {
            f.set_attribute(
                F::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem as i32,
            )
            .map_err(cuda)?;
        }
        Ok(Some(Self {
            f,
            queries,
            threads: 128,
            smem: smem as u32,
        }))
    }
}

impl Kernels {
    /// The attention kernel for the segments of `cu` (`heads` heads): `attention_tc*` (or
    /// f32) when no segment is longer than one key tile; else the flash kernel with 128
    /// queries per block (2 blocks of 4 warps per SM at ~240 registers) when that gives
    /// at least one full wave of blocks, 64 queries (3 blocks per SM) when it does not.
    fn attention_for(&self, cu: &[usize], heads: usize) -> &Attention {
        let longest = cu.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        match (&self.attention_fa, self.force.as_deref()) {
            (Some(_), Some("tc")) => &self.attention,
            (Some([q128, _]), Some("q128")) => q128,
            (Some([_, q64]), Some("q64")) => q64,
            (Some([q128, q64]), _) if longest > FA_KEYS => {
                let blocks: usize = cu
                    .windows(2)
                    .map(|w| (w[1] - w[0]).div_ceil(q128.queries))
                    .sum::<usize>()
                    * heads;
                if blocks >= 2 * self.sms {
                    q128
                } else {
                    q64
                }
            }
            _ => &self.attention,
        }
    }
}

/// Element type of device pixel values handed to [`CudaTower::encode_device`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputDtype {
    F32,
    Bf16,
}

impl InputDtype {
    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            InputDtype::F32 => 4,
            InputDtype::Bf16 => 2,
        }
    }
}

/// Embeddings left in device memory, `[rows, hidden]` of `dtype` (the model's).
pub struct DeviceEmbeddings {
    pub buffer: CudaSlice<u8>,
    pub rows: usize,
    pub hidden: usize,
    pub dtype: DType,
}

impl DeviceEmbeddings {
    /// The embeddings of `parts` (same hidden size and dtype, on any GPUs) one after the
    /// other, in a new buffer on `stream`'s GPU: peer copies (staged through the host by
    /// the driver where the GPUs have no peer access). Returns once the copies are done.
    pub fn concat(parts: &[DeviceEmbeddings], stream: &Arc<CudaStream>) -> Result<Self> {
        let first = parts
            .first()
            .ok_or_else(|| Error::InvalidInput("no embeddings to join".into()))?;
        let (hidden, dtype) = (first.hidden, first.dtype);
        if let Some(p) = parts
            .iter()
            .find(|p| (p.hidden, p.dtype) != (hidden, dtype))
        {
            return Err(Error::InvalidInput(format!(
                "cannot join {}-wide {} embeddings to {hidden}-wide {dtype} ones",
                p.hidden, p.dtype
            )));
        }
        let row_bytes = hidden * dtype.size_in_bytes();
        // The fields are public: check the sizes the copies below rely on.
        if let Some(p) = parts.iter().find(|p| p.buffer.len() < p.rows * row_bytes) {
            return Err(Error::InvalidInput(format!(
                "embeddings of {} rows in a buffer of {} bytes",
                p.rows,
                p.buffer.len()
            )));
        }
        let rows: usize = parts.iter().map(|p| p.rows).sum();
        stream.context().bind_to_thread().map_err(cuda)?;
        let mut buffer = stream
            .alloc_zeros::<u8>(rows.max(1) * row_bytes)
            .map_err(cuda)?;
        let mut offset = 0;
        for part in parts {
            let bytes = part.rows * row_bytes;
            let (src, _read) = part.buffer.device_ptr(stream);
            let (dst, _write) = buffer.device_ptr_mut(stream);
            // SAFETY: copies `bytes` from the start of `part.buffer` (at least that long,
            // checked above) to `offset` in `buffer` (allocated for the sum of the parts'
            // rows, so offset + bytes ≤ its length); each context handle is that of the
            // buffer's own device, and both buffers are borrowed here, so they stay alive
            // until the stream is synchronized below.
            unsafe {
                cudarc::driver::sys::cuMemcpyPeerAsync(
                    dst + offset as u64,
                    stream.context().cu_ctx(),
                    src,
                    part.buffer.context().cu_ctx(),
                    bytes,
                    stream.cu_stream(),
                )
            }
            .result()
            .map_err(cuda)?;
            offset += bytes;
        }
        stream.synchronize().map_err(cuda)?;
        Ok(Self {
            buffer,
            rows,
            hidden,
            dtype,
        })
    }

    /// Copies the embeddings to the host as f32.
    pub fn to_host_f32(&self) -> Result<Vec<f32>> {
        let stream = self.buffer.stream().clone();
        let bytes = stream.clone_dtoh(&self.buffer).map_err(cuda)?;
        Ok(match self.dtype {
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
                .collect(),
            _ => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        })
    }
}

/// The tower on one GPU.
pub(crate) struct CudaTower {
    cfg: VisionConfig,
    dtype: DType,
    stream: Arc<CudaStream>,
    gemm: Gemm,
    k: Kernels,
    /// Its bias is `None` for towers without one.
    patch_embed: Linear,
    /// The learned position table (Qwen3-VL).
    pos_embed: Option<Buf>,
    blocks: Vec<Block>,
    merger: Merger,
    /// `(block, merger)`: a deepstack merger taps the hidden states after that block.
    deepstack: Vec<(usize, Merger)>,
    /// One forward at a time: they share the stream and the GEMM plans.
    busy: Mutex<()>,
    /// Seconds per operation over all forwards, when profiling is on.
    profile: Mutex<Option<BTreeMap<&'static str, f64>>>,
}

/// Attributes the GPU time between marks to operations (synchronizing at each mark) when
/// profiling is on; free otherwise.
struct Marks<'a> {
    stream: &'a CudaStream,
    totals: Option<BTreeMap<&'static str, f64>>,
    last: std::time::Instant,
}

impl Marks<'_> {
    fn mark(&mut self, op: &'static str) -> Result<()> {
        if let Some(totals) = &mut self.totals {
            self.stream.synchronize().map_err(cuda)?;
            let now = std::time::Instant::now();
            *totals.entry(op).or_default() += (now - self.last).as_secs_f64();
            self.last = now;
        }
        Ok(())
    }
}

fn host_bytes(t: &HostTensor) -> Vec<u8> {
    match &t.data {
        HostData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        HostData::BF16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
        HostData::F16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
    }
}

impl CudaTower {
    pub(crate) fn new(
        cfg: VisionConfig,
        dtype: DType,
        w: VisionWeights,
        ctx: Arc<CudaContext>,
    ) -> Result<Self> {
        let suffix = match dtype {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => {
                return Err(Error::Cuda(
                    "the CUDA backend runs f32 or bf16, not f16".into(),
                ))
            }
        };
        // bf16 attention runs on tensor cores; f32 on CUDA cores (exact f32 products).
        let attention = match (cfg.head_dim(), dtype) {
            (d @ (32 | 64 | 72 | 80 | 128), DType::BF16) => format!("attention_tc{d}"),
            (d @ (32 | 64 | 72 | 80 | 128), _) => format!("attention{d}"),
            (d, _) => {
                return Err(Error::Cuda(format!(
                    "no CUDA attention kernel for head_dim {d} (32, 64, 72, 80 and 128 are built)"
                )))
            }
        };
        // Launch shapes of kernels/vision.cu: a row of the RMSNorm in 256 threads × 8
        // registers, one RoPE thread per (head, frequency) of a row.
        if cfg.hidden_size > 2048 || cfg.num_heads * cfg.head_dim() / 2 > 1024 {
            return Err(Error::Cuda(format!(
                "the CUDA kernels take hidden_size <= 2048 and num_heads*head_dim/2 <= 1024, not {} and {}",
                cfg.hidden_size,
                cfg.num_heads * cfg.head_dim() / 2
            )));
        }
        ctx.bind_to_thread().map_err(cuda)?;
        let stream = ctx.new_stream().map_err(cuda)?;
        let module = reel_kernels::load(&ctx, "vision").map_err(cuda)?;
        let f = |name: String| module.load_function(&name).map_err(cuda);
        let k = Kernels {
            gather_in_f32: f(format!("gather_f32_to_{suffix}"))?,
            gather_in_bf16: f(format!("gather_bf16_to_{suffix}"))?,
            gather_out: f(format!("gather_{suffix}_to_{suffix}"))?,
            add_rmsnorm: f(format!("add_rmsnorm_{suffix}"))?,
            rope: f(format!("rope_qk_{suffix}"))?,
            silu_mul: f(format!("silu_mul_{suffix}"))?,
            gelu: f(format!("gelu_erf_{suffix}"))?,
            add_layernorm: f(format!("add_layernorm_{suffix}"))?,
            layernorm: f(format!("layernorm_{suffix}"))?,
            add_round: f(format!("add_round_{suffix}"))?,
            gelu_tanh: f(format!("gelu_tanh_{suffix}"))?,
            pos_embed_add: f(format!("pos_embed_add_{suffix}"))?,
            pack_columns: f(format!("pack_columns_{suffix}"))?,
            attention: Attention {
                f: f(format!("{attention}_{suffix}"))?,
                queries: ATT_TILE,
                threads: if dtype == DType::BF16 {
                    128
                } else {
                    ATT_TILE as u32
                },
                smem: 0,
            },
            attention_fa: match dtype {
                DType::BF16 => {
                    let hd = cfg.head_dim();
                    match (
                        Attention::flash(&module, &ctx, hd, 128)?,
                        Attention::flash(&module, &ctx, hd, 64)?,
                    ) {
                        (Some(a), Some(b)) => Some([a, b]),
                        _ => None,
                    }
                }
                _ => None,
            },
            sms: ctx
                .attribute(
                    cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
                )
                .map_err(cuda)?
                .max(1) as usize,
            force: std::env::var("REEL_ATTENTION_KERNEL").ok(),
        };
        let up = |t: &HostTensor| -> Result<Buf> {
            Ok(Buf(stream.clone_htod(&host_bytes(t)).map_err(cuda)?))
        };
        let linear = |w: &HostTensor, b: Option<&HostTensor>| -> Result<Linear> {
            Ok(Linear {
                out: w.shape[0],
                inp: w.shape[1],
                w: up(w)?,
                b: b.map(up).transpose()?,
            })
        };
        // The MLP's intermediate width padded to a multiple of INTER_ALIGN (3420 → 3456,
        // 4304 → 4352 in the released towers) with zero gate/up/fc1 rows and zero
        // down/fc2 columns: silu(0)·0 = gelu(0) = 0 and zero columns add exact zeros, so
        // results are unchanged, while every GEMM row stays 16-byte aligned (cuBLASLt's fast
        // tensor-core kernels need it).
        let padded = |inter: usize| inter.next_multiple_of(INTER_ALIGN);
        let es = dtype.size_in_bytes();
        let pad_rows = |t: &HostTensor, rows: usize| -> Vec<u8> {
            let mut bytes = host_bytes(t);
            let row = t.shape.get(1).copied().unwrap_or(1) * es;
            bytes.resize(rows * row, 0);
            bytes
        };
        // Rows `[out, inp]` zero-padded to `rows` rows (weights) or elements (biases).
        let padded_rows = |ts: &[&LinearWeights], rows: usize| -> Result<Linear> {
            let (mut w, mut b) = (Vec::new(), Vec::new());
            for t in ts {
                w.extend(pad_rows(&t.w, rows));
                b.extend(pad_rows(&t.b, rows));
            }
            Ok(Linear {
                w: Buf(stream.clone_htod(&w).map_err(cuda)?),
                b: Some(Buf(stream.clone_htod(&b).map_err(cuda)?)),
                out: ts.len() * rows,
                inp: ts[0].w.shape[1],
            })
        };
        // `[out, inter]` with zero columns up to the padded width.
        let padded_cols = |t: &LinearWeights| -> Result<Linear> {
            let (out, inter) = (t.w.shape[0], t.w.shape[1]);
            let p = padded(inter);
            let src = host_bytes(&t.w);
            let mut w = vec![0u8; out * p * es];
            for (dst, row) in w.chunks_exact_mut(p * es).zip(src.chunks_exact(inter * es)) {
                dst[..row.len()].copy_from_slice(row);
            }
            Ok(Linear {
                w: Buf(stream.clone_htod(&w).map_err(cuda)?),
                b: Some(up(&t.b)?),
                out,
                inp: p,
            })
        };
        let norm = |n: &NormWeights| -> Result<Norm> {
            Ok(match &n.b {
                Some(b) => Norm::Layer(up(&n.w)?, up(b)?),
                None => Norm::Rms(up(&n.w)?),
            })
        };
        let merger = |m: &MergerWeights| -> Result<Merger> {
            Ok(Merger {
                norm: norm(&m.norm)?,
                fc1: linear(&m.fc1.w, Some(&m.fc1.b))?,
                fc2: linear(&m.fc2.w, Some(&m.fc2.b))?,
            })
        };
        let blocks = w
            .blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mlp = match &b.mlp {
                    MlpWeights::SwiGlu { gate, up, down } => Mlp::SwiGlu {
                        gate_up: padded_rows(&[gate, up], padded(gate.w.shape[0]))?,
                        down: padded_cols(down)?,
                    },
                    MlpWeights::Gelu { fc1, fc2 } => Mlp::Gelu {
                        fc1: padded_rows(&[fc1], padded(fc1.w.shape[0]))?,
                        fc2: padded_cols(fc2)?,
                    },
                };
                Ok(Block {
                    norm1: norm(&b.norm1)?,
                    norm2: norm(&b.norm2)?,
                    qkv: linear(&b.qkv.w, Some(&b.qkv.b))?,
                    proj: linear(&b.proj.w, Some(&b.proj.b))?,
                    mlp,
                    full_attention: cfg.is_full_attention(i),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let deepstack = cfg
            .deepstack_visual_indexes
            .iter()
            .zip(&w.deepstack)
            .map(|(&block, m)| Ok((block, merger(m)?)))
            .collect::<Result<Vec<_>>>()?;
        let tower = Self {
            gemm: Gemm::new(stream.clone())?,
            patch_embed: linear(&w.patch_embed, w.patch_bias.as_ref())?,
            pos_embed: w.pos_embed.as_ref().map(up).transpose()?,
            merger: merger(&w.merger)?,
            deepstack,
            blocks,
            k,
            stream,
            cfg,
            dtype,
            busy: Mutex::new(()),
            profile: Mutex::new(None),
        };
        tower.stream.synchronize().map_err(cuda)?;
        Ok(tower)
    }

    fn elem(&self) -> Elem {
        if self.dtype == DType::BF16 {
            Elem::Bf16
        } else {
            Elem::F32
        }
    }

    fn esize(&self) -> usize {
        self.dtype.size_in_bytes()
    }

    fn alloc(&self, elems: usize) -> Result<Buf> {
        Ok(Buf(self
            .stream
            .alloc_zeros::<u8>(elems.max(1) * self.esize())
            .map_err(cuda)?))
    }

    /// Device memory one forward over `patches` patches allocates, at most: its
    /// activations and plan tables, the batcher's f32 staging copy of the input, and a
    /// pool-granularity margin per allocation.
    pub(crate) fn activation_bytes(&self, patches: usize) -> u64 {
        let cfg = &self.cfg;
        let (n, es) = (patches as u64, self.esize() as u64);
        let tokens = n / cfg.merge_unit() as u64;
        let hid = cfg.hidden_size as u64;
        let inter = self.blocks.first().map_or(0, |b| b.mlp.inter() as u64);
        let chunk = n.min(MLP_ROWS as u64);
        let wide = hid * cfg.merge_unit() as u64;
        let (out, width) = (cfg.out_hidden_size as u64, cfg.output_width() as u64);
        let patch_dim = cfg.patch_dim() as u64;
        // The deepstack input copy (n·hid) only with deepstack mergers.
        let deepstack = if self.deepstack.is_empty() {
            0
        } else {
            n * hid
        };
        let activations = es
            * (n * patch_dim
                + 7 * n * hid
                + deepstack
                + 3 * chunk * inter
                + tokens * (2 * wide + out + width));
        // Plan tables: orders, rope (f32), tiles, position taps (4 × (u32 + f32) per patch).
        let taps = if self.pos_embed.is_some() { 32 * n } else { 0 };
        let tables =
            4 * (n + tokens + n * cfg.head_dim() as u64) + 24 * (n / ATT_TILE as u64 + 2) + taps;
        let staging = 4 * n * patch_dim;
        const ALLOCATIONS: u64 = 20;
        activations + tables + staging + ALLOCATIONS * (2 << 20)
    }

    /// The most patches whose forward stays within `budget` bytes (0 if none does).
    pub(crate) fn max_patches(&self, budget: u64) -> usize {
        let (mut lo, mut hi) = (0usize, u32::MAX as usize);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if self.activation_bytes(mid) <= budget {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        lo
    }

    /// A zeroed output buffer of `tokens` rows (of the output width) in the model dtype.
    pub(crate) fn alloc_output(&self, tokens: usize) -> Result<CudaSlice<u8>> {
        let bytes = tokens.max(1) * self.cfg.output_width() * self.esize();
        let buffer = self.stream.alloc_zeros::<u8>(bytes).map_err(cuda)?;
        self.stream.synchronize().map_err(cuda)?;
        Ok(buffer)
    }

    fn linear(&self, l: &Linear, x: u64, y: u64, rows: usize) -> Result<()> {
        self.linear_gelu(l, x, y, rows, false)
    }

    /// `y = x · wᵀ + b`, then GELU-tanh in cuBLASLt's epilogue when `gelu`.
    fn linear_gelu(&self, l: &Linear, x: u64, y: u64, rows: usize, gelu: bool) -> Result<()> {
        let s = &self.stream;
        let layer = Layer {
            w: l.w.ptr(s),
            bias: l.b.as_ref().map(|b| b.ptr(s)),
            inp: l.inp,
            out: l.out,
            gelu,
        };
        self.gemm.linear(self.elem(), layer, x, y, rows)
    }

    fn grid_stride(n: usize) -> LaunchConfig {
        let blocks = n.div_ceil(256).clamp(1, 65535 * 4) as u32;
        LaunchConfig {
            grid_dim: (blocks, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// `x += delta` (the f32 residual stream, when a delta is pending), then
    /// `out = norm(x)` per row of `hidden_size`.
    fn add_norm(
        &self,
        x: u64,
        delta: Option<u64>,
        norm: &Norm,
        out: u64,
        rows: usize,
    ) -> Result<()> {
        let (cols, eps) = (self.cfg.hidden_size as i32, self.cfg.norm_eps as f32);
        let delta = delta.unwrap_or(0);
        let cfg = Self::rows(rows);
        match norm {
            Norm::Rms(w) => {
                let wp = w.ptr(&self.stream);
                launch!(
                    self,
                    &self.k.add_rmsnorm,
                    cfg,
                    &x,
                    &delta,
                    &wp,
                    &out,
                    &cols,
                    &eps
                )
            }
            Norm::Layer(w, b) => {
                let (wp, bp) = (w.ptr(&self.stream), b.ptr(&self.stream));
                launch!(
                    self,
                    &self.k.add_layernorm,
                    cfg,
                    &x,
                    &delta,
                    &wp,
                    &bp,
                    &out,
                    &cols,
                    &eps
                )
            }
        }
    }

    /// One block of 256 threads per row.
    fn rows(rows: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// A merger's MLP over its normalized input (`normed`: `[tokens, wide]` T rows; the
    /// caller applies the merger's norm): fc1 into `f1` (`[tokens, wide]`), exact GELU,
    /// fc2 into `f2` (`[tokens, out_hidden]`).
    fn merger_mlp(&self, m: &Merger, normed: u64, tokens: usize, f1: u64, f2: u64) -> Result<()> {
        let wide = self.cfg.hidden_size * self.cfg.merge_unit();
        self.linear(&m.fc1, normed, f1, tokens)?;
        let len = (tokens * wide) as i64;
        launch!(
            self,
            &self.k.gelu,
            Self::grid_stride(tokens * wide),
            &f1,
            &len
        )?;
        self.linear(&m.fc2, f1, f2, tokens)
    }

    /// Copies `[rows, out_hidden]` into column block `block` of the packed output.
    fn pack(&self, src: u64, dst: u64, rows: usize, block: usize) -> Result<()> {
        let out = self.cfg.out_hidden_size;
        let (rows_i, cols_i) = (rows as i64, out as i32);
        let (stride_i, offset_i) = (self.cfg.output_width() as i32, (block * out) as i32);
        launch!(
            self,
            &self.k.pack_columns,
            Self::grid_stride(rows * out),
            &src,
            &dst,
            &rows_i,
            &cols_i,
            &stride_i,
            &offset_i
        )
    }

    /// Query tiles of `queries` queries of the segments in `cu`: (segment start, segment
    /// end, first query).
    fn tiles(cu: &[usize], queries: usize) -> Vec<i32> {
        let mut out = Vec::new();
        for w in cu.windows(2) {
            for q in (w[0]..w[1]).step_by(queries) {
                out.extend([w[0] as i32, w[1] as i32, q as i32]);
            }
        }
        out
    }

    /// Turns per-operation profiling on (each operation is then synchronized and timed:
    /// slower, for finding where the time goes) or off, clearing the totals.
    pub(crate) fn set_profiling(&self, on: bool) {
        *self.profile.lock().expect("profile lock") = on.then(BTreeMap::new);
    }

    /// Seconds per operation summed over the forwards since profiling was turned on.
    pub(crate) fn profile(&self) -> Option<Vec<(String, f64)>> {
        let p = self.profile.lock().expect("profile lock");
        p.as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.to_string(), *v)).collect())
    }

    /// Encodes the pixel values in `pixels` (`plan.patches × patch_dim` of `dtype`, in
    /// this tower's GPU memory; checked), ordered after the work queued on the buffer's
    /// stream. The result stays on the device.
    pub(crate) fn forward_buffer(
        &self,
        pixels: &CudaSlice<u8>,
        dtype: InputDtype,
        plan: &Plan,
    ) -> Result<DeviceEmbeddings> {
        let need = plan.patches * self.cfg.patch_dim() * dtype.size();
        if pixels.len() < need {
            return Err(Error::InvalidInput(format!(
                "a pixel buffer of {} bytes for {} patches of {} {dtype:?} values",
                pixels.len(),
                plan.patches,
                self.cfg.patch_dim()
            )));
        }
        if pixels.context().cu_device() != self.stream.context().cu_device() {
            return Err(Error::InvalidInput(
                "the pixel buffer is on another GPU than the tower".into(),
            ));
        }
        // The guard makes this tower's stream wait for the buffer's pending writes and
        // keeps the buffer's stream from reusing it until the forward's reads are done.
        let (ptr, _sync) = pixels.device_ptr(&self.stream);
        // SAFETY: the buffer is borrowed for this call, on this tower's GPU, and holds the
        // plan's rows (both checked above); the guard orders the stream after its writes.
        unsafe { self.forward(ptr, dtype, plan) }
    }

    /// Encodes pixel values already in device memory (`rows × patch_dim` of `dtype` at
    /// `pixels`). The result stays on the device.
    ///
    /// # Safety
    /// `pixels` must start `plan.patches × patch_dim` values of `dtype` in live device
    /// memory of this tower's context, written before the work now queued on the tower's
    /// stream, and stay allocated until the call returns (it synchronizes).
    pub(crate) unsafe fn forward(
        &self,
        pixels: u64,
        dtype: InputDtype,
        plan: &Plan,
    ) -> Result<DeviceEmbeddings> {
        let _busy = self.busy.lock().expect("tower lock");
        let cfg = &self.cfg;
        let s = &self.stream;
        s.context().bind_to_thread().map_err(cuda)?;
        let n = plan.patches;
        let (hid, heads, hd) = (cfg.hidden_size, cfg.num_heads, cfg.head_dim());
        let inter = self.blocks.first().map_or(0, |b| b.mlp.inter());
        let es = self.esize() as u64;
        let mut marks = Marks {
            stream: s,
            totals: self
                .profile
                .lock()
                .expect("profile lock")
                .as_ref()
                .map(|_| BTreeMap::new()),
            last: std::time::Instant::now(),
        };

        // Inputs of the plan.
        let order = s.clone_htod(&plan.patch_order()).map_err(cuda)?;
        let reverse = s.clone_htod(&plan.reverse_index()).map_err(cuda)?;
        let rope = plan.rope_table(cfg);
        let cos = s.clone_htod(&rope.cos).map_err(cuda)?;
        let sin = s.clone_htod(&rope.sin).map_err(cuda)?;
        let window_att = self.k.attention_for(&plan.cu_window_seqlens, heads);
        let full_att = self.k.attention_for(&plan.cu_seqlens, heads);
        let window_tiles = Self::tiles(&plan.cu_window_seqlens, window_att.queries);
        let full_tiles = Self::tiles(&plan.cu_seqlens, full_att.queries);
        let window_tiles_d = s.clone_htod(&window_tiles).map_err(cuda)?;
        let full_tiles_d = s.clone_htod(&full_tiles).map_err(cuda)?;
        let (order_p, _o) = order.device_ptr(s);
        let (reverse_p, _r) = reverse.device_ptr(s);
        let (cos_p, _c) = cos.device_ptr(s);
        let (sin_p, _s) = sin.device_ptr(s);
        let (wt_p, _wt) = window_tiles_d.device_ptr(s);
        let (ft_p, _ft) = full_tiles_d.device_ptr(s);
        let taps = match self.pos_embed {
            Some(_) => {
                let (idx, wts) = plan.position_taps(cfg);
                Some((
                    s.clone_htod(&idx).map_err(cuda)?,
                    s.clone_htod(&wts).map_err(cuda)?,
                ))
            }
            None => None,
        };

        // Activations.
        let patch_dim = cfg.patch_dim();
        let input = self.alloc(n * patch_dim)?;
        // The residual stream, f32 whatever the model dtype (zero: the patch embedding is
        // added in by the first norm).
        let x = Buf(s.alloc_zeros::<u8>(n * hid * 4).map_err(cuda)?);
        let h = self.alloc(n * hid)?;
        let qkv = self.alloc(n * 3 * hid)?;
        let attn = self.alloc(n * hid)?;
        let delta = self.alloc(n * hid)?;
        let chunk = MLP_ROWS.min(n);
        let gu = self.alloc(chunk * 2 * inter)?;
        let act = self.alloc(chunk * inter)?;
        let tokens = plan.tokens;
        let wide = hid * plan.merge_unit;
        let out_hidden = cfg.out_hidden_size;
        let width = cfg.output_width();
        let out = self.alloc(tokens * width)?;
        let f1 = self.alloc(tokens * wide)?;
        let f2 = self.alloc(tokens * out_hidden)?;
        // The hidden states after a deepstack block, and their normed merged rows.
        let tapped = (!self.deepstack.is_empty())
            .then(|| self.alloc(n * hid))
            .transpose()?;
        let (out_p, f1_p, f2_p) = (out.ptr(s), f1.ptr(s), f2.ptr(s));
        let (input_p, x_p, h_p, qkv_p, attn_p, delta_p, gu_p, act_p) = (
            input.ptr(s),
            x.ptr(s),
            h.ptr(s),
            qkv.ptr(s),
            attn.ptr(s),
            delta.ptr(s),
            gu.ptr(s),
            act.ptr(s),
        );

        marks.mark("setup")?;
        // Window order, model dtype, patch embedding.
        let gather = match dtype {
            InputDtype::F32 => &self.k.gather_in_f32,
            InputDtype::Bf16 => &self.k.gather_in_bf16,
        };
        let (rows_i, cols_i) = (n as i64, patch_dim as i32);
        launch!(
            self,
            gather,
            Self::grid_stride(n * patch_dim),
            &pixels,
            &input_p,
            &order_p,
            &rows_i,
            &cols_i
        )?;
        marks.mark("gather")?;
        self.linear(&self.patch_embed, input_p, delta_p, n)?;
        marks.mark("patch_embed")?;
        if let (Some(table), Some((idx, wts))) = (&self.pos_embed, &taps) {
            let (table_p, (idx_p, _i), (wts_p, _w)) =
                (table.ptr(s), idx.device_ptr(s), wts.device_ptr(s));
            let (rows_i, cols_i) = (n as i64, hid as i32);
            launch!(
                self,
                &self.k.pos_embed_add,
                Self::grid_stride(n * hid),
                &delta_p,
                &table_p,
                &idx_p,
                &wts_p,
                &rows_i,
                &cols_i
            )?;
            marks.mark("pos_embed")?;
        }

        let scale = 1.0f32 / (hd as f32).sqrt();
        let (heads_i, hd_i) = (heads as i32, hd as i32);
        let mut pending_delta = Some(delta_p);
        for (i, blk) in self.blocks.iter().enumerate() {
            // x += previous MLP output (the patch embedding, first); h = norm1(x)
            self.add_norm(x_p, pending_delta, &blk.norm1, h_p, n)?;
            marks.mark("norm")?;
            self.linear(&blk.qkv, h_p, qkv_p, n)?;
            marks.mark("qkv")?;
            launch!(
                self,
                &self.k.rope,
                LaunchConfig {
                    grid_dim: (n as u32, 1, 1),
                    block_dim: ((heads * hd / 2) as u32, 1, 1),
                    shared_mem_bytes: 0,
                },
                &qkv_p,
                &cos_p,
                &sin_p,
                &heads_i,
                &hd_i
            )?;
            marks.mark("rope")?;
            let (att, tiles_p, ntiles) = if blk.full_attention {
                (full_att, ft_p, full_tiles.len() / 3)
            } else {
                (window_att, wt_p, window_tiles.len() / 3)
            };
            let att_cfg = LaunchConfig {
                grid_dim: (ntiles as u32, heads as u32, 1),
                block_dim: (att.threads, 1, 1),
                shared_mem_bytes: att.smem,
            };
            launch!(self, &att.f, att_cfg, &qkv_p, &attn_p, &tiles_p, &heads_i, &scale)?;
            marks.mark("attention")?;
            self.linear(&blk.proj, attn_p, delta_p, n)?;
            marks.mark("proj")?;
            // x += attention output; h = norm2(x)
            self.add_norm(x_p, Some(delta_p), &blk.norm2, h_p, n)?;
            marks.mark("norm")?;
            for start in (0..n).step_by(chunk) {
                let rows = chunk.min(n - start);
                let off = start as u64 * hid as u64 * es;
                let down = match &blk.mlp {
                    Mlp::SwiGlu { gate_up, down } => {
                        self.linear(gate_up, h_p + off, gu_p, rows)?;
                        marks.mark("gate_up")?;
                        let inter_i = inter as i32;
                        launch!(
                            self,
                            &self.k.silu_mul,
                            LaunchConfig {
                                grid_dim: ((inter / 2).div_ceil(256) as u32, rows as u32, 1),
                                block_dim: (256, 1, 1),
                                shared_mem_bytes: 0,
                            },
                            &gu_p,
                            &act_p,
                            &inter_i
                        )?;
                        marks.mark("silu_mul")?;
                        down
                    }
                    // bf16: GELU in the GEMM's epilogue, on the f32 accumulator (HF rounds
                    // to bf16 first: a difference well inside bf16's own error). f32:
                    // HF's exact sequence, a separate pass.
                    Mlp::Gelu { fc1, fc2 } if self.dtype == DType::BF16 => {
                        self.linear_gelu(fc1, h_p + off, act_p, rows, true)?;
                        marks.mark("fc1_gelu")?;
                        fc2
                    }
                    Mlp::Gelu { fc1, fc2 } => {
                        self.linear(fc1, h_p + off, act_p, rows)?;
                        marks.mark("fc1")?;
                        let len = (rows * inter) as i64;
                        launch!(
                            self,
                            &self.k.gelu_tanh,
                            Self::grid_stride(rows * inter),
                            &act_p,
                            &len
                        )?;
                        marks.mark("gelu_tanh")?;
                        fc2
                    }
                };
                self.linear(down, act_p, delta_p + off, rows)?;
                marks.mark("down")?;
            }
            pending_delta = Some(delta_p);
            for (k, (_, m)) in self
                .deepstack
                .iter()
                .enumerate()
                .filter(|(_, (b, _))| *b == i)
            {
                // x += the MLP output, kept as T rows; the merger normalizes 4 rows at once.
                let tapped_p = tapped.as_ref().map_or(0, |t| t.ptr(s));
                let len = (n * hid) as i64;
                launch!(
                    self,
                    &self.k.add_round,
                    Self::grid_stride(n * hid),
                    &x_p,
                    &delta_p,
                    &tapped_p,
                    &len
                )?;
                pending_delta = None;
                let (cols_i, eps) = (wide as i32, cfg.norm_eps as f32);
                let Norm::Layer(w, b) = &m.norm else {
                    unreachable!("deepstack mergers are LayerNorm mergers")
                };
                let (wp, bp) = (w.ptr(s), b.ptr(s));
                launch!(
                    self,
                    &self.k.layernorm,
                    Self::rows(tokens),
                    &tapped_p,
                    &wp,
                    &bp,
                    &h_p,
                    &cols_i,
                    &eps
                )?;
                self.merger_mlp(m, h_p, tokens, f1_p, f2_p)?;
                self.pack(f2_p, out_p, tokens, k + 1)?;
                marks.mark("deepstack")?;
            }
        }
        // x += last MLP output; the merger's norm, fc1, GELU, fc2.
        self.add_norm(x_p, pending_delta, &self.merger.norm, h_p, n)?;
        marks.mark("norm")?;
        self.merger_mlp(&self.merger, h_p, tokens, f1_p, f2_p)?;
        marks.mark("merger")?;
        if cfg.windowed() {
            // Back to input order.
            let (tok_i, oh_i) = (tokens as i64, out_hidden as i32);
            launch!(
                self,
                &self.k.gather_out,
                Self::grid_stride(tokens * out_hidden),
                &f2_p,
                &out_p,
                &reverse_p,
                &tok_i,
                &oh_i
            )?;
        } else {
            self.pack(f2_p, out_p, tokens, 0)?;
        }
        marks.mark("gather")?;
        s.synchronize().map_err(cuda)?;
        if let Some(totals) = marks.totals {
            let mut p = self.profile.lock().expect("profile lock");
            if let Some(all) = p.as_mut() {
                for (op, t) in totals {
                    *all.entry(op).or_default() += t;
                }
            }
        }
        Ok(DeviceEmbeddings {
            buffer: out.0,
            rows: tokens,
            hidden: width,
            dtype: self.dtype,
        })
    }

    /// Encodes host pixel values (uploads them first).
    pub(crate) fn forward_host(&self, pixel_values: &[f32], plan: &Plan) -> Result<Vec<f32>> {
        let input = self.stream.clone_htod(pixel_values).map_err(cuda)?;
        let (p, _g) = input.device_ptr(&self.stream);
        // SAFETY: `input` was just uploaded on the tower's stream from the caller's
        // `plan.patches × patch_dim` f32 values and lives until the end of this function.
        let emb = unsafe { self.forward(p, InputDtype::F32, plan) }?;
        emb.to_host_f32()
    }
}
