//! reel-encoder: vision towers from Hugging Face weights, on the CPU (candle) and on
//! NVIDIA GPUs (cuBLASLt + reel's CUDA kernels).
//!
//! What it does: reads a model folder (the registry in [`models`] picks the family from
//! `config.json`), memory-maps the vision tensors, and encodes preprocessed pixel values
//! (`[patches, patch_dim]`, host or device memory) into merged-token embeddings, batching
//! requests on a GPU ([`cuda::Batcher`]). What it never does: decode video, preprocess
//! frames (that is `reel-codec`), or speak a transport (gRPC lives in the binary).
//!
//! ```no_run
//! use reel_encoder::{DType, VisionTower};
//! # fn main() -> reel_encoder::Result<()> {
//! let tower = VisionTower::load("Qwen2.5-VL-7B-Instruct".as_ref(), DType::BF16)?;
//! let grid = [2, 16, 16]; // (t, h, w) in patches: 4 frames of 224x224
//! let pixel_values = vec![0f32; 2 * 16 * 16 * tower.config().patch_dim()];
//! let emb = tower.encode(&pixel_values, &[grid])?;
//! assert_eq!((emb.rows, emb.hidden), (2 * 16 * 16 / 4, 3584));
//! # Ok(()) }
//! ```
//!
//! Layout of the crate, one module per stage:
//! - [`models`]: the registry (HF architecture name → model family) and each family's
//!   row ([`models::qwen2_5_vl`]);
//! - [`config`]: Qwen2.5-VL's vision hyper-parameters from `config.json`;
//! - [`weights`]: the weight map; memory-mapped safetensors → host arrays in the dtype;
//! - [`plan`]: window permutation, attention segments and 2D RoPE table for a batch;
//! - `cpu`: the candle-core CPU tower (the reference backend);
//! - [`cuda`]: the CUDA tower, its batcher and device-resident embeddings;
//! - [`init`]: random checkpoints for tests and benchmarks.

pub mod config;
mod cpu;
pub mod cuda;
mod dtype;
mod error;
pub mod init;
pub mod models;
pub mod plan;
pub mod weights;

use std::path::Path;

pub use config::VisionConfig;
pub use dtype::DType;
pub use error::{Error, Result};
pub use models::{ModelSpec, Preprocessing};
pub use plan::Plan;

#[cfg(test)]
mod tests {
    #[test]
    fn tower_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::VisionTower>();
        check::<super::Embeddings>();
    }
}

/// Output of [`VisionTower::encode`]: `rows × hidden` f32, row-major.
///
/// Rows are the merged tokens of every grid in input order, `t*h*w/4` per grid, each
/// grid t-major, then merged row, then merged column (the order the LLM expects).
/// The values are f32 whatever the compute dtype: with [`DType::BF16`] each value is
/// exactly a bf16 value widened to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// `rows * hidden` values.
    pub data: Vec<f32>,
    /// Merged tokens.
    pub rows: usize,
    /// `out_hidden_size`.
    pub hidden: usize,
}

impl Embeddings {
    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.hidden..(i + 1) * self.hidden]
    }
}

/// A loaded tower's implementation; a model family's row builds it ([`models::Family`]).
pub(crate) enum Backend {
    Cpu(Box<cpu::CpuTower>),
    Cuda(Box<cuda::CudaTower>),
}

/// A loaded vision tower, on the CPU or a GPU.
pub struct VisionTower {
    spec: ModelSpec,
    cfg: VisionConfig,
    dtype: DType,
    backend: Backend,
}

impl VisionTower {
    /// Loads the vision tower of the Hugging Face model folder `dir` for the CPU, in
    /// `dtype` (weights are converted when the checkpoint's dtype differs).
    ///
    /// The folder's `config.json` selects the model family ([`ModelSpec::read`]; an
    /// unknown architecture is an [`Error::UnsupportedModel`]); only the vision tensors
    /// of the safetensors files are read (see [`weights`]); a missing or mis-shaped
    /// tensor is an [`Error::MissingTensor`] / [`Error::ShapeMismatch`] naming it and its
    /// expected shape.
    pub fn load(dir: &Path, dtype: DType) -> Result<Self> {
        Self::load_spec(ModelSpec::read(dir)?, dtype, None)
    }

    /// Loads the vision tower onto a GPU (f32 or bf16): cuBLASLt GEMMs and reel's CUDA
    /// kernels. Encodes host pixel values with [`VisionTower::encode`] or device pixel
    /// values with [`VisionTower::encode_device`].
    pub fn load_cuda(
        dir: &Path,
        dtype: DType,
        ctx: std::sync::Arc<cudarc::driver::CudaContext>,
    ) -> Result<Self> {
        Self::load_spec(ModelSpec::read(dir)?, dtype, Some(ctx))
    }

    /// Loads the tower `spec` describes, on the GPU of `ctx` or (without one) the CPU.
    pub fn load_spec(
        spec: ModelSpec,
        dtype: DType,
        ctx: Option<std::sync::Arc<cudarc::driver::CudaContext>>,
    ) -> Result<Self> {
        let cfg = spec.vision.clone();
        let backend = (spec.family.tower)(&spec, dtype, ctx)?;
        Ok(VisionTower {
            spec,
            cfg,
            dtype,
            backend,
        })
    }

    /// What the model folder said: family, architecture, preprocessing, outputs.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// True for a GPU tower.
    pub fn is_cuda(&self) -> bool {
        matches!(self.backend, Backend::Cuda(_))
    }

    /// The CUDA backend of a GPU tower.
    fn cuda_backend(&self) -> Option<&cuda::CudaTower> {
        match &self.backend {
            Backend::Cuda(t) => Some(t),
            Backend::Cpu(_) => None,
        }
    }

    /// Device memory a GPU tower's forward over `patches` patches allocates at most
    /// (activations, plan tables, staging); `None` on the CPU.
    pub fn activation_bytes(&self, patches: usize) -> Option<u64> {
        self.cuda_backend().map(|t| t.activation_bytes(patches))
    }

    /// Encodes pixel values that are already in GPU memory (`[sum(t*h*w), patch_dim]` of
    /// `dtype` in `pixels`, on this tower's GPU; the size is checked) on a GPU tower; the
    /// embeddings stay on the GPU. The forward is ordered after the work queued on the
    /// buffer's stream.
    pub fn encode_device(
        &self,
        pixels: &cudarc::driver::CudaSlice<u8>,
        dtype: cuda::InputDtype,
        grids: &[[usize; 3]],
    ) -> Result<cuda::DeviceEmbeddings> {
        let Backend::Cuda(tower) = &self.backend else {
            return Err(Error::InvalidInput(
                "encode_device needs a tower loaded with load_cuda".into(),
            ));
        };
        let plan = Plan::new(&self.cfg, grids)?;
        if plan.patches == 0 {
            return Err(Error::InvalidInput("no patches to encode".into()));
        }
        tower.forward_buffer(pixels, dtype, &plan)
    }

    /// GPU towers: turns per-operation profiling on or off (see [`VisionTower::profile`]).
    /// While on, every operation of a forward is synchronized and timed, which slows it.
    pub fn set_profiling(&self, on: bool) {
        if let Backend::Cuda(t) = &self.backend {
            t.set_profiling(on);
        }
    }

    /// GPU towers with profiling on: seconds per operation (GEMMs by layer kind,
    /// attention, norms, ...) summed over the forwards since it was turned on.
    pub fn profile(&self) -> Option<Vec<(String, f64)>> {
        match &self.backend {
            Backend::Cuda(t) => t.profile(),
            Backend::Cpu(_) => None,
        }
    }

    /// The tower's hyper-parameters.
    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    /// The compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Encodes a batch of images/videos in one pass.
    ///
    /// `pixel_values` is row-major `[sum(t*h*w), patch_dim]` f32 (`patch_dim` = 1176 for
    /// Qwen2.5-VL), the rows of every grid concatenated in the order of `grids`, each in
    /// the Qwen2.5-VL patch layout (what `Qwen2VLImageProcessor`/`VideoProcessor` emit).
    /// `grids` are `(t, h, w)` in patches; h and w must be multiples of
    /// spatial_merge_size. Items never attend to each other. Returns
    /// `sum(t*h*w) / 4` rows of `out_hidden_size`.
    ///
    /// Threads: the fused kernels run on rayon's global pool and candle's GEMMs use
    /// `RAYON_NUM_THREADS` threads (default: the physical cores), so set that variable (or
    /// build the global pool) to bound the threads. `&self`: concurrent calls are allowed.
    pub fn encode(&self, pixel_values: &[f32], grids: &[[usize; 3]]) -> Result<Embeddings> {
        let plan = Plan::new(&self.cfg, grids)?;
        let want = plan.patches * self.cfg.patch_dim();
        if pixel_values.len() != want {
            return Err(Error::InvalidInput(format!(
                "pixel_values has {} values, the grids need {} patches x {} = {want}",
                pixel_values.len(),
                plan.patches,
                self.cfg.patch_dim()
            )));
        }
        let hidden = self.cfg.output_width();
        if plan.patches == 0 {
            return Ok(Embeddings {
                data: Vec::new(),
                rows: 0,
                hidden,
            });
        }
        let data = match &self.backend {
            Backend::Cpu(t) => t.forward(pixel_values, &plan)?,
            Backend::Cuda(t) => t.forward_host(pixel_values, &plan)?,
        };
        Ok(Embeddings {
            rows: plan.tokens,
            hidden,
            data,
        })
    }
}
