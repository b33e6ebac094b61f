//! A loaded model: the registry reads the folder, the tower loads on the device, and a
//! GPU model gets the batcher every request using it shares.

use std::path::Path;
use std::sync::Arc;

use reel_codec::gpu::{Gpu, PixelDtype};
use reel_codec::plan::{Qwen3VideoProcessor, VideoProcessor};
use reel_codec::preprocess::Normalization;
use reel_encoder::cuda::{Batcher, InputDtype, Request};
use reel_encoder::models::Sampling;
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
    /// How videos are sampled and preprocessed for this model.
    pub processor: VideoProcessor,
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

/// The codec's video processor for the model folder's preprocessing: qwen-vl-utils for
/// Qwen2.5-VL, `Qwen3VLVideoProcessor` with the folder's parameters for the Qwen3-VL
/// family. A combination reel-codec does not implement is refused, naming both.
pub fn video_processor(spec: &ModelSpec) -> Result<VideoProcessor, Error> {
    let p = &spec.preprocessing;
    let processor = match &p.sampling {
        Sampling::QwenVlUtils => VideoProcessor::QwenVlUtils,
        Sampling::Qwen3Vl(s) => VideoProcessor::Qwen3Vl(Qwen3VideoProcessor {
            patch_size: p.patch_size,
            temporal_patch_size: p.temporal_patch_size,
            merge_size: p.merge_size,
            shortest_edge: s.min_pixels,
            longest_edge: s.max_pixels,
            fps: s.fps,
            min_frames: s.min_frames,
            max_frames: s.max_frames,
            cap_pixels_per_frame: s.cap_pixels_per_frame,
            max_video_tokens: s.max_video_tokens as u64,
            normalization: Normalization::new(p.image_mean, p.image_std),
        }),
    };
    let g = processor.geometry();
    let ours = (g.patch_size, g.temporal_patch_size, g.merge_size);
    let theirs = (p.patch_size, p.temporal_patch_size, p.merge_size);
    let norm = Normalization::new(p.image_mean, p.image_std);
    // qwen-vl-utils' path has Qwen2.5-VL's geometry and CLIP's statistics built in; the
    // tower's own patch size must match what the processor cuts.
    let tower = (
        spec.vision.patch_size,
        spec.vision.temporal_patch_size,
        spec.vision.spatial_merge_size,
    );
    if ours != theirs || processor.normalization() != norm || tower != theirs {
        return Err(Error::new(
            ErrorKind::FailedPrecondition,
            format!(
                "{}: its processor uses patch {}, temporal patch {}, merge {}, mean {:?}, std \
                 {:?} for a tower of patch {}, temporal patch {}, merge {}; reel's {} \
                 preprocessing implements patch {}, temporal patch {}, merge {} with its own \
                 mean/std",
                spec.dir.display(),
                p.patch_size,
                p.temporal_patch_size,
                p.merge_size,
                p.image_mean,
                p.image_std,
                tower.0,
                tower.1,
                tower.2,
                spec.family.name,
                ours.0,
                ours.1,
                ours.2
            ),
        ));
    }
    Ok(processor)
}

impl Model {
    /// Loads the vision tower of the Hugging Face folder `dir` where `device` computes:
    /// on its GPU (bf16 unless the dtype says f32) behind a batcher, or on the CPU (f32
    /// unless the dtype says otherwise). The folder's `config.json` selects the model
    /// family (the registry of `reel_encoder::models`); every command loads through here.
    pub fn load(dir: &Path, options: &ModelOptions, device: &Device) -> anyhow::Result<Model> {
        let spec = ModelSpec::read(dir)?;
        let processor = video_processor(&spec)?;
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
            processor,
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
            processor: self.processor.clone(),
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
