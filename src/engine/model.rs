//! A loaded model: the registry reads the folder, the tower loads on the device, and a
//! GPU model gets the batcher every request using it shares.

use std::path::Path;
use std::sync::Arc;

use reel_codec::gpu::{Gpu, PixelDtype};
use reel_encoder::cuda::{Batcher, InputDtype, Request};
use reel_encoder::{DType, ModelSpec, VisionTower};

use super::decode::Pixels;
use super::device::Device;
use super::error::{Error, ErrorKind};
use super::values::Values;

/// A loaded vision tower and, on a GPU, the batcher that every request using it
/// shares (cross-request batching, streamed slices, the memory budget).
pub struct Model {
    /// Identifies the weights and precision (in cache keys and logs).
    pub id: String,
    pub tower: Arc<VisionTower>,
    batcher: Option<Arc<Batcher>>,
    /// Encode slices while later ones still decode (GPU decoding and tower).
    pub stream_slices: bool,
}

/// How a [`Model`] runs.
#[derive(Clone, Debug)]
pub struct ModelOptions {
    /// auto (bf16 on a GPU, f32 on the CPU), f32, bf16.
    pub dtype: String,
    /// Device memory one GPU forward may take for its activations, bytes.
    pub memory_budget: u64,
    /// Start encoding each temporal slice as soon as it is decoded.
    pub stream_slices: bool,
}

/// A model's copy on one GPU, for split encoding ([`super::split`]).
pub struct GpuModel {
    pub gpu: Arc<Gpu>,
    pub model: Arc<Model>,
}

/// Checks that reel's preprocessing (reel-codec) is the one the model folder asks for.
fn check_preprocessing(spec: &ModelSpec) -> Result<(), Error> {
    use reel_codec::plan::{MERGE_SIZE, PATCH_SIZE, TEMPORAL_PATCH_SIZE};
    use reel_codec::preprocess::Normalization;
    let p = &spec.preprocessing;
    let ours = (
        PATCH_SIZE as usize,
        TEMPORAL_PATCH_SIZE,
        MERGE_SIZE as usize,
    );
    let theirs = (p.patch_size, p.temporal_patch_size, p.merge_size);
    let norm = Normalization::new(p.image_mean, p.image_std);
    if ours != theirs || norm != Normalization::clip() {
        return Err(Error::new(
            ErrorKind::FailedPrecondition,
            format!(
                "{}: its processor uses patch {}, temporal patch {}, merge {}, mean {:?}, std \
                 {:?}; reel's preprocessing implements patch {}, temporal patch {}, merge {} \
                 with CLIP's mean/std",
                spec.dir.display(),
                p.patch_size,
                p.temporal_patch_size,
                p.merge_size,
                p.image_mean,
                p.image_std,
                ours.0,
                ours.1,
                ours.2
            ),
        ));
    }
    Ok(())
}

impl Model {
    /// Loads the vision tower of the Hugging Face folder `dir` where `device` computes:
    /// on its GPU (bf16 unless the dtype says f32) behind a batcher, or on the CPU (f32
    /// unless the dtype says otherwise). The folder's `config.json` selects the model
    /// family (the registry of `reel_encoder::models`); every command loads through here.
    pub fn load(dir: &Path, options: &ModelOptions, device: &Device) -> anyhow::Result<Model> {
        let spec = ModelSpec::read(dir)?;
        check_preprocessing(&spec)?;
        let dtype = match (options.dtype.as_str(), device) {
            ("auto", Device::Cuda(_)) => DType::BF16,
            ("auto", Device::Cpu) => DType::F32,
            (name, _) => DType::from_name(name)?,
        };
        let ctx = device.gpu().map(|gpu| gpu.context().clone());
        let tower = Arc::new(VisionTower::load_spec(spec, dtype, ctx)?);
        let batcher = tower
            .is_cuda()
            .then(|| Batcher::new(tower.clone(), options.memory_budget))
            .transpose()?
            .map(Arc::new);
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        Ok(Model {
            id: format!("{} ({dtype})", dir.display()),
            tower,
            batcher,
            stream_slices: options.stream_slices,
        })
    }

    /// The batcher of a GPU model.
    pub fn batcher(&self) -> Option<&Batcher> {
        self.batcher.as_deref()
    }

    /// The same model (tower and batcher shared) with slice streaming on or off.
    pub fn with_stream_slices(&self, on: bool) -> Model {
        Model {
            id: self.id.clone(),
            tower: self.tower.clone(),
            batcher: self.batcher.clone(),
            stream_slices: on,
        }
    }

    /// Encodes one video's pixel values. A GPU model takes them through its batcher —
    /// into `request` when one was opened for the video already (the slices it streamed
    /// are kept), a new one otherwise — and the result stays on the GPU; a CPU model
    /// encodes directly.
    pub fn encode(&self, pixels: &Pixels, request: Option<Request>) -> anyhow::Result<Values> {
        let Some(batcher) = &self.batcher else {
            let emb = match pixels {
                Pixels::Host(v) => self.tower.encode(&v.data, &[v.grid_thw])?,
                Pixels::Device(p) => self.tower.encode(&p.to_host_f32()?, &[p.grid_thw])?,
            };
            return Ok(Values::Host {
                shape: [emb.rows, emb.hidden],
                data: emb.data,
            });
        };
        let request = match request {
            Some(r) => r,
            None => batcher.request(pixels.grid_thw())?,
        };
        match pixels {
            Pixels::Device(p) => {
                let dtype = match p.dtype {
                    PixelDtype::F32 => InputDtype::F32,
                    PixelDtype::Bf16 => InputDtype::Bf16,
                };
                request.submit_rest(&p.buffer, dtype);
            }
            Pixels::Host(v) => request.submit_rest(&batcher.upload(&v.data)?, InputDtype::F32),
        }
        Ok(Values::DeviceEmbeddings(Arc::new(request.finish()?)))
    }
}
