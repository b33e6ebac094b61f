//! Split encoding: one video decoded on every GPU, each GPU encoding the temporal slices
//! it decoded with its own copy of the model, the embeddings joined on the first GPU.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use reel_codec::gpu::{Gpu, PixelDtype, SliceDone, SliceReady};
use reel_codec::{Cancel, SamplePlan, Video};
use reel_encoder::cuda::{DeviceEmbeddings, InputDtype};

use super::decode::check_corrupt;
use super::device::Device;
use super::model::GpuModel;
use super::values::{Made, Values};

/// Whether [`embed_split`] can take this video on `device`: a GPU whose NVDEC decodes
/// the stream (anything else goes through [`super::prepare`], which may fall back to the
/// CPU).
pub fn can_split(device: &Device, video: &Video) -> bool {
    matches!(device, Device::Cuda(gpu) if gpu.check_stream(video.info()).is_ok())
}

/// Decodes one video on every GPU of `models`, each keeping the temporal slices it
/// decodes and encoding them with its own copy of the model (streamed as they complete
/// when the model streams slices), then joins the embeddings on the first model's GPU:
/// one video's decode and encode both run data-parallel over the GPUs.
pub(super) fn embed_split(
    models: &[GpuModel],
    video: &Video,
    plan: &SamplePlan,
    cancel: &Cancel,
) -> anyhow::Result<Made> {
    let first = models.first().context("no GPU models to split over")?;
    let peers: Vec<Arc<Gpu>> = models[1..].iter().map(|m| m.gpu.clone()).collect();
    let sessions = models.iter().map(|m| m.gpu.sessions()).sum();
    let split = first.gpu.split(video, plan, sessions, &peers)?;
    let [_, h, w] = plan.grid_thw;
    let requests = split
        .parts()
        .into_iter()
        .map(|(on, slices)| {
            let model = models
                .iter()
                .find(|m| std::ptr::eq(&*m.gpu, on))
                .context("a part on a GPU without the model")?;
            let batcher = model
                .model
                .batcher()
                .context("split encoding needs GPU models")?;
            Ok(batcher.request([slices.len(), h, w])?)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let submit = |done: SliceDone<'_>| {
        requests[done.part].submit(done.buffer, InputDtype::F32, done.slice..done.slice + 1);
    };
    let streamed = first.model.stream_slices;
    let prepared = {
        let _span = tracing::info_span!("decode_preprocess", frames = plan.frames.len()).entered();
        split.prepare(
            video,
            plan,
            PixelDtype::F32,
            streamed.then_some(&submit as &SliceReady<'_>),
            cancel,
        )?
    };
    check_corrupt(&prepared.report)?;
    let decoded = Instant::now();
    let _finish = tracing::info_span!("finish", parts = prepared.parts.len()).entered();
    cancel.check()?;
    for (request, part) in requests.iter().zip(&prepared.parts) {
        request.submit_rest(&part.buffer, InputDtype::F32);
    }
    let parts = requests
        .into_iter()
        .map(|r| r.finish())
        .collect::<Result<Vec<_>, _>>()?;
    let stream = first.gpu.context().new_stream()?;
    let joined = DeviceEmbeddings::concat(&parts, &stream)?;
    let on: Vec<String> = prepared
        .parts
        .iter()
        .map(|p| format!("cuda:{}", p.ordinal))
        .collect();
    Ok(Made {
        values: Values::DeviceEmbeddings(Arc::new(joined)),
        report: prepared.report,
        decoded_on: format!("{} (split)", on.join("+")),
        decoded,
    })
}
