//! One video's work, shared by `reel embed`, `reel serve` and `reel transcode`:
//! open → plan → (cache) → decode + preprocess → (encode) → [`Values`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use reel_codec::decode::DecodeReport;
use reel_codec::gpu::{SliceDone, SliceReady};
use reel_codec::{Cancel, SamplePlan, SamplingOptions, Video};
use reel_encoder::cuda::InputDtype;

use super::cache::{Cache, Key};
use super::decode::{check_corrupt, prepare, Pixels};
use super::device::Device;
use super::model::{GpuModel, Model};
use super::split::{can_split, embed_split};
use super::values::{Made, Values};

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
    Embeddings(Arc<Model>),
    /// Embeddings with the video's temporal slices encoded on the GPU that decoded them:
    /// the model on each GPU, the first one's GPU getting the result
    /// ([`super::split`]). Off a GPU, the first model encodes the whole video.
    SplitEmbeddings(Arc<Vec<GpuModel>>),
}

impl Want {
    /// The model that makes embeddings (the first GPU's for a split).
    pub fn model(&self) -> Option<&Model> {
        match self {
            Want::Frames => None,
            Want::Embeddings(model) => Some(model),
            Want::SplitEmbeddings(models) => models.first().map(|m| &*m.model),
        }
    }
}

/// Embeddings of earlier jobs, by what determines them ([`Key`]).
pub type EmbeddingCache = Cache<Values>;

/// Seconds spent per stage.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Timings {
    /// Opening, demuxing, planning (and hashing for the cache).
    pub demux: f64,
    pub decode_preprocess: f64,
    /// Encoding after decoding ended (streamed slices encode during decoding too).
    pub encode: f64,
}

/// What a job made.
pub struct Outcome {
    pub plan: SamplePlan,
    pub values: Values,
    pub report: DecodeReport,
    pub decoded_on: String,
    pub timings: Timings,
    pub stream: reel_codec::StreamInfo,
}

/// Runs one video through the pipeline. With a cache, embeddings of a video seen before
/// (same bitstream, stream parameters, plan and model) are taken from it.
pub fn run(
    device: &Device,
    input: Input,
    sampling: &SamplingOptions,
    want: &Want,
    threads: usize,
    cancel: &Cancel,
    cache: Option<&EmbeddingCache>,
) -> anyhow::Result<Outcome> {
    let t0 = Instant::now();
    let demux_span = tracing::info_span!("demux").entered();
    let video = match input {
        Input::Path(path) => Video::open(&path)?,
        Input::Bytes { data, name } => Video::from_bytes(data, name.as_deref())?,
    };
    // Callers build the options for the model's processor (its sampling defaults too).
    if let Some(model) = want.model() {
        anyhow::ensure!(
            model.processor == sampling.processor,
            "internal: sampling options made for another processor than the model's"
        );
    }
    let plan = SamplePlan::new(video.info(), video.index(), sampling)?;
    let cached = match (want.model(), cache) {
        (Some(model), Some(cache)) => {
            let key = Key::new(&model.id, &video, &plan)?;
            Some((cache, key, cache.get(&key)))
        }
        _ => None,
    };
    let demux = t0.elapsed().as_secs_f64();
    drop(demux_span);
    if let Some(values) = cached
        .as_ref()
        .and_then(|(_, _, hit)| hit.as_ref()?.share())
    {
        return Ok(Outcome {
            stream: video.info().clone(),
            plan,
            values,
            report: DecodeReport::default(),
            decoded_on: "cache".into(),
            timings: Timings {
                demux,
                ..Timings::default()
            },
        });
    }
    let t1 = Instant::now();
    let made = match want {
        Want::SplitEmbeddings(models) if can_split(device, &video) => {
            embed_split(models, &video, &plan, cancel)?
        }
        _ => decode_encode(device, &video, &plan, want, threads, cancel)?,
    };
    let t2 = Instant::now();
    let timings = Timings {
        demux,
        decode_preprocess: made.decoded.duration_since(t1).as_secs_f64(),
        encode: if want.model().is_some() {
            t2.duration_since(made.decoded).as_secs_f64()
        } else {
            0.0
        },
    };
    let values = made.values;
    if let Some((cache, key, _)) = cached {
        if let Some(shared) = values.share() {
            cache.insert(key, Arc::new(shared));
        }
    }
    Ok(Outcome {
        stream: video.info().clone(),
        plan,
        values,
        report: made.report,
        decoded_on: made.decoded_on,
        timings,
    })
}

/// Decodes the video on `device` (its segments on every GPU) and, for embeddings,
/// encodes it with one model.
fn decode_encode(
    device: &Device,
    video: &Video,
    plan: &SamplePlan,
    want: &Want,
    threads: usize,
    cancel: &Cancel,
) -> anyhow::Result<Made> {
    let model = want.model();
    // A GPU model takes each temporal slice as soon as it is decoded.
    let request = model
        .and_then(|m| m.batcher())
        .map(|b| b.request(plan.grid_thw))
        .transpose()?;
    let submit = |done: SliceDone<'_>| {
        if let Some(r) = &request {
            r.submit(done.buffer, InputDtype::F32, done.slice..done.slice + 1);
        }
    };
    let streamed = model.is_some_and(|m| m.stream_slices) && request.is_some();
    let decode_span =
        tracing::info_span!("decode_preprocess", frames = plan.frames.len()).entered();
    let frames = prepare(
        device,
        video,
        plan,
        threads,
        cancel,
        streamed.then_some(&submit as &SliceReady<'_>),
    )?;
    check_corrupt(&frames.report)?;
    let decoded = Instant::now();
    drop(decode_span);
    let _finish = tracing::info_span!("finish").entered();
    let values = match (model, frames.pixels) {
        (None, Pixels::Device(p)) => Values::DevicePixels(p),
        (None, Pixels::Host(v)) => Values::Host {
            shape: [v.rows(), v.patch_dim()],
            data: v.data,
        },
        (Some(model), pixels) => {
            cancel.check()?;
            model.encode(&pixels, request)?
        }
    };
    Ok(Made {
        values,
        report: frames.report,
        decoded_on: frames.decoded_on,
        decoded,
    })
}
