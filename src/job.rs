//! One video's work, shared by `reel embed`, `reel serve` and `reel transcode`:
//! open → plan → decode + preprocess → (encode) → a tensor.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use reel_codec::decode::DecodeReport;
use reel_codec::{Cancel, SamplePlan, SamplingOptions, Video};
use reel_encoder::VisionTower;

use crate::engine::{self, Device, Pixels};

/// Where the video comes from.
pub enum Input {
    Path(PathBuf),
    /// Bytes in memory, with an optional file name (recognizes raw .h264/.hevc).
    Bytes {
        data: Vec<u8>,
        name: Option<String>,
    },
}

/// What to produce.
#[derive(Clone)]
pub enum Want {
    /// Preprocessed pixel values `[t·h·w, 1176]`.
    Frames,
    /// Vision-tower embeddings `[t·h·w/4, out_hidden]`.
    Embeddings(Arc<VisionTower>),
}

/// The result tensor, where it lives.
pub enum Tensor {
    /// Row-major f32 values in host memory.
    Host { data: Vec<f32>, shape: [usize; 2] },
    /// Pixel values in GPU memory.
    DevicePixels(reel_codec::gpu::GpuPrepared),
    /// Embeddings in GPU memory, in the model's dtype.
    DeviceEmbeddings(reel_encoder::cuda::DeviceEmbeddings),
}

impl Tensor {
    pub fn shape(&self) -> [usize; 2] {
        match self {
            Tensor::Host { shape, .. } => *shape,
            Tensor::DevicePixels(p) => [
                p.grid_thw.iter().product(),
                reel_codec::preprocess::PATCH_DIM,
            ],
            Tensor::DeviceEmbeddings(e) => [e.rows, e.hidden],
        }
    }

    /// The values as f32 in host memory (a copy for device tensors).
    pub fn into_host_f32(self) -> anyhow::Result<Vec<f32>> {
        Ok(match self {
            Tensor::Host { data, .. } => data,
            Tensor::DevicePixels(p) => p.to_host_f32()?,
            Tensor::DeviceEmbeddings(e) => e.to_host_f32()?,
        })
    }
}

/// Seconds spent per stage.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Timings {
    pub demux: f64,
    pub decode_preprocess: f64,
    pub encode: f64,
}

/// What a job made.
pub struct Outcome {
    pub plan: SamplePlan,
    pub tensor: Tensor,
    pub report: DecodeReport,
    pub decoded_on: String,
    pub timings: Timings,
    pub stream: reel_codec::StreamInfo,
}

/// Runs one video through the pipeline.
pub fn run(
    device: &Device,
    input: Input,
    sampling: &SamplingOptions,
    want: &Want,
    threads: usize,
    cancel: &Cancel,
) -> anyhow::Result<Outcome> {
    let t0 = Instant::now();
    let video = match input {
        Input::Path(path) => Video::open(&path)?,
        Input::Bytes { data, name } => Video::from_bytes(data, name.as_deref())?,
    };
    let plan = SamplePlan::new(video.info(), video.index(), sampling)?;
    let demux = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let frames = engine::prepare(device, &video, &plan, threads, cancel)?;
    let corrupt = &frames.report.corrupt_frames;
    if !corrupt.is_empty() {
        return Err(reel_codec::Error::Decode {
            frames: corrupt.clone(),
            reason: "the decoder concealed bitstream errors in these sampled frames".into(),
        }
        .into());
    }
    let decode_preprocess = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let tensor = match (want, frames.pixels) {
        (Want::Frames, Pixels::Device(p)) => Tensor::DevicePixels(p),
        (Want::Frames, Pixels::Host(v)) => Tensor::Host {
            shape: [v.rows(), reel_codec::preprocess::PATCH_DIM],
            data: v.data,
        },
        (Want::Embeddings(tower), Pixels::Device(p)) if tower.is_cuda() => {
            cancel.check()?;
            let (ptr, _sync) = cudarc::driver::DevicePtr::device_ptr(&p.buffer, p.buffer.stream());
            let input = match p.dtype {
                reel_codec::gpu::PixelDtype::F32 => reel_encoder::cuda::InputDtype::F32,
                reel_codec::gpu::PixelDtype::Bf16 => reel_encoder::cuda::InputDtype::Bf16,
            };
            Tensor::DeviceEmbeddings(tower.encode_device(ptr, input, &[p.grid_thw])?)
        }
        (Want::Embeddings(tower), pixels) => {
            cancel.check()?;
            let values = pixels.into_host()?;
            let emb = tower.encode(&values.data, &[values.grid_thw])?;
            Tensor::Host {
                shape: [emb.rows, emb.hidden],
                data: emb.data,
            }
        }
    };
    let encode = if matches!(want, Want::Embeddings(_)) {
        t2.elapsed().as_secs_f64()
    } else {
        0.0
    };
    Ok(Outcome {
        stream: video.info().clone(),
        plan,
        tensor,
        report: frames.report,
        decoded_on: frames.decoded_on,
        timings: Timings {
            demux,
            decode_preprocess,
            encode,
        },
    })
}

/// The gRPC status code for an error from a job.
pub fn status_code(err: &anyhow::Error) -> tonic::Code {
    use reel_codec::Error as E;
    if let Some(e) = err.downcast_ref::<E>() {
        return match e {
            E::Open { .. } => tonic::Code::NotFound,
            E::Truncated { .. } | E::Decode { .. } => tonic::Code::DataLoss,
            E::DecoderUnavailable(_) | E::Io(_) => tonic::Code::Unavailable,
            E::Cancelled => tonic::Code::Cancelled,
            _ => tonic::Code::InvalidArgument,
        };
    }
    if err.downcast_ref::<reel_encoder::Error>().is_some() {
        return tonic::Code::Internal;
    }
    tonic::Code::Internal
}
