//! Chooses the device and runs the video pipeline on it.

use std::str::FromStr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use reel_codec::decode::DecodeReport;
use reel_codec::gpu::{Gpu, GpuPrepared, PixelDtype, PrepareOptions, SliceDone, SliceReady};
use reel_codec::preprocess::PixelValues;
use reel_codec::{Cancel, SamplePlan, Video};

/// What `--device` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// Every GPU when one with NVDEC is present, else the CPU.
    Auto,
    Cpu,
    /// Every GPU (`cuda`).
    Gpus,
    /// One GPU (`cuda:N`).
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Gpus),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| {
                    format!("unknown device '{s}' (expected auto, cpu, cuda or cuda:N)")
                }),
        }
    }
}

/// A device the pipeline runs on.
#[derive(Clone)]
pub enum Device {
    Cpu,
    Cuda(Arc<Gpu>),
}

impl Device {
    /// The device one job runs on: `cuda` and `auto` give GPU 0 (whose videos still
    /// decode on every GPU, [`decode_peers`]). `auto` logs what it picked and why.
    pub fn select(choice: DeviceChoice) -> anyhow::Result<Device> {
        match choice {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(n) => cuda(n),
            DeviceChoice::Gpus => cuda(0),
            DeviceChoice::Auto => match cuda(0) {
                Ok(gpu) => {
                    tracing::info!("device auto: using cuda:0 (NVDEC + CUDA)");
                    Ok(gpu)
                }
                Err(e) => {
                    tracing::info!("device auto: using the CPU ({e:#})");
                    Ok(Device::Cpu)
                }
            },
        }
    }

    /// The devices parallel jobs run on, each with its own copy of the models: every GPU
    /// for `cuda` and `auto` (else the CPU for `auto`), one for the rest.
    pub fn select_all(choice: DeviceChoice) -> anyhow::Result<Vec<Device>> {
        // The GPUs that open (one without NVDEC is left out with a warning); an error only
        // when none does.
        let every_gpu = || -> anyhow::Result<Vec<Device>> {
            let count = gpu_count();
            if count == 0 {
                return cuda(0).map(|d| vec![d]);
            }
            let mut devices = Vec::new();
            let mut first_error = None;
            for n in 0..count {
                match cuda(n) {
                    Ok(device) => devices.push(device),
                    Err(e) => {
                        tracing::warn!("cuda:{n} left out: {e:#}");
                        first_error.get_or_insert(e);
                    }
                }
            }
            match first_error {
                Some(e) if devices.is_empty() => Err(e),
                _ => Ok(devices),
            }
        };
        match choice {
            DeviceChoice::Gpus => every_gpu(),
            DeviceChoice::Auto => every_gpu().or_else(|e| {
                tracing::info!("device auto: using the CPU ({e:#})");
                Ok(vec![Device::Cpu])
            }),
            other => Ok(vec![Device::select(other)?]),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Cuda(gpu) => gpu_name(gpu),
        }
    }
}

/// GPU `n`, with its decode peers opened too (not on the first video).
fn cuda(n: usize) -> anyhow::Result<Device> {
    let gpu = open_gpu(n).with_context(|| format!("cannot use cuda:{n}"))?;
    decode_peers(&gpu);
    Ok(Device::Cuda(gpu))
}

/// How many GPUs each CUDA device stands for: `REEL_GPUS_PER_DEVICE` (default 1). With
/// more, every device is opened that many times — each with its own decoder pool, session
/// share, models and result pool, as on a machine with that many times the GPUs — so the
/// multi-GPU paths (decode peers, split encoding, a replica per GPU) run on a one-GPU
/// machine. For testing those paths: it oversubscribes the device's decoders and memory.
fn gpus_per_device() -> usize {
    std::env::var("REEL_GPUS_PER_DEVICE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize)
        .max(1)
}

/// The GPUs reel sees (CUDA devices × [`gpus_per_device`]).
fn gpu_count() -> usize {
    reel_codec::gpu::device_count() * gpus_per_device()
}

/// The other GPUs of this machine with NVDEC, which decode segments of `gpu`'s videos
/// too (their frames are copied into `gpu`'s output). `CUDA_VISIBLE_DEVICES` limits them.
fn decode_peers(gpu: &Arc<Gpu>) -> Vec<Arc<Gpu>> {
    // Found once per GPU: a peer that does not open is not retried (and warned of) for
    // every video.
    static PEERS: Mutex<Vec<(usize, Vec<Arc<Gpu>>)>> = Mutex::new(Vec::new());
    let own = Arc::as_ptr(gpu) as usize;
    let mut known = PEERS.lock().expect("no panics while holding the lock");
    if let Some((_, peers)) = known.iter().find(|(g, _)| *g == own) {
        return peers.clone();
    }
    let peers: Vec<Arc<Gpu>> = (0..gpu_count())
        .filter_map(|n| match open_gpu(n) {
            Ok(peer) => Some(peer),
            Err(e) => {
                tracing::warn!("cuda:{n} does not decode for {}: {e}", gpu_name(gpu));
                None
            }
        })
        .filter(|peer| !Arc::ptr_eq(peer, gpu))
        .collect();
    known.push((own, peers.clone()));
    peers
}

/// GPUs are opened once per process; GPU `n` is CUDA device `n / gpus_per_device()`.
fn open_gpu(n: usize) -> reel_codec::Result<Arc<Gpu>> {
    static OPEN: Mutex<Vec<(usize, Arc<Gpu>)>> = Mutex::new(Vec::new());
    let mut open = OPEN.lock().expect("no panics while holding the lock");
    if let Some((_, gpu)) = open.iter().find(|(m, _)| *m == n) {
        return Ok(gpu.clone());
    }
    let per_device = gpus_per_device();
    if per_device > 1 && n >= gpu_count() {
        return Err(reel_codec::Error::DecoderUnavailable(format!(
            "cuda:{n} does not exist ({} GPUs: REEL_GPUS_PER_DEVICE={per_device})",
            gpu_count()
        )));
    }
    let gpu = Gpu::open(n / per_device)?;
    open.push((n, gpu.clone()));
    Ok(gpu)
}

/// "cuda:N" of a GPU's CUDA device.
fn gpu_name(gpu: &Gpu) -> String {
    format!("cuda:{}", gpu.context().ordinal())
}

/// Pixel values where they were made.
pub enum Pixels {
    Host(PixelValues),
    Device(GpuPrepared),
}

impl Pixels {
    /// The patch grid (t, h, w) of the values.
    pub fn grid_thw(&self) -> [usize; 3] {
        match self {
            Pixels::Host(v) => v.grid_thw,
            Pixels::Device(p) => p.grid_thw,
        }
    }

    /// The values in host memory (a copy from the GPU when made there).
    pub fn into_host(self) -> anyhow::Result<PixelValues> {
        Ok(match self {
            Pixels::Host(values) => values,
            Pixels::Device(prepared) => PixelValues {
                data: prepared.to_host_f32()?,
                grid_thw: prepared.grid_thw,
            },
        })
    }

    /// Waits until the values are complete.
    pub fn synchronize(&self) -> anyhow::Result<()> {
        if let Pixels::Device(prepared) = self {
            prepared.synchronize()?;
        }
        Ok(())
    }
}

/// Pixel values and how they were made.
pub struct Frames {
    pub pixels: Pixels,
    pub report: DecodeReport,
    /// Where decoding ran ("cuda:0", "cpu", or "cpu (fallback: …)").
    pub decoded_on: String,
}

/// Decodes and preprocesses the plan's frames on `device`. A stream the GPU cannot
/// decode falls back to the CPU decoder when this build has one. On the GPU,
/// `on_slice` hears of every temporal slice as soon as it is complete
/// ([`PrepareOptions::on_slice`]). Other GPUs of the machine decode segments too.
pub fn prepare(
    device: &Device,
    video: &Video,
    plan: &SamplePlan,
    threads: usize,
    cancel: &Cancel,
    on_slice: Option<&SliceReady<'_>>,
) -> anyhow::Result<Frames> {
    if let Device::Cuda(gpu) = device {
        match gpu.check_stream(video.info()) {
            Ok(_) => {
                let peers = decode_peers(gpu);
                let options = PrepareOptions {
                    sessions: gpu.sessions() + peers.iter().map(|p| p.sessions()).sum::<usize>(),
                    dtype: PixelDtype::F32,
                    peers: &peers,
                    on_slice,
                };
                let mut prepared = gpu.prepare_with(video, plan, &options, cancel)?;
                return Ok(Frames {
                    report: std::mem::take(&mut prepared.report),
                    pixels: Pixels::Device(prepared),
                    decoded_on: device.name(),
                });
            }
            Err(reel_codec::Error::Unsupported(reason)) if cfg!(feature = "ffmpeg") => {
                tracing::warn!("{reason}; decoding on the CPU instead");
                let mut frames = prepare_cpu(video, plan, threads, cancel)?;
                frames.decoded_on = format!("cpu (fallback: {reason})");
                return Ok(frames);
            }
            Err(e) => return Err(e.into()),
        }
    }
    prepare_cpu(video, plan, threads, cancel)
}

#[cfg(feature = "ffmpeg")]
fn prepare_cpu(
    video: &Video,
    plan: &SamplePlan,
    threads: usize,
    cancel: &Cancel,
) -> anyhow::Result<Frames> {
    let prepared = reel_codec::pipeline::prepare_cpu(video, plan, threads, cancel)?;
    Ok(Frames {
        pixels: Pixels::Host(prepared.pixel_values),
        report: prepared.report,
        decoded_on: "cpu".into(),
    })
}

#[cfg(not(feature = "ffmpeg"))]
fn prepare_cpu(_: &Video, _: &SamplePlan, _: usize, _: &Cancel) -> anyhow::Result<Frames> {
    anyhow::bail!("this build has no CPU decoder (built without the `ffmpeg` feature); use a GPU")
}

/// Worker threads: the requested number, else all cores.
pub fn threads(requested: Option<usize>) -> usize {
    requested.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// Codecs this process can decode on `device` (GPU ones decoded by NVDEC, the rest on
/// the CPU when FFmpeg has a decoder).
pub fn codecs(device: &Device) -> Vec<String> {
    use reel_codec::{Chroma, Codec};
    let all = [Codec::H264, Codec::Hevc, Codec::Vp9, Codec::Av1];
    all.iter()
        .filter_map(|&codec| {
            if let Device::Cuda(gpu) = device {
                if gpu.supports(codec, Chroma::Yuv420, 8) {
                    return Some(format!("{codec} (nvdec)"));
                }
            }
            cpu_supports(codec).then(|| format!("{codec} (cpu)"))
        })
        .collect()
}

#[cfg(feature = "ffmpeg")]
fn cpu_supports(codec: reel_codec::Codec) -> bool {
    reel_codec::decode::cpu::supports(codec)
}

#[cfg(not(feature = "ffmpeg"))]
fn cpu_supports(_: reel_codec::Codec) -> bool {
    false
}

/// A model's copy on one GPU, for [`embed_split`].
pub struct GpuModel {
    pub gpu: Arc<Gpu>,
    pub model: Arc<Model>,
}

/// Whether [`embed_split`] can take this video on `device`: a GPU whose NVDEC decodes
/// the stream (anything else goes through [`prepare`], which may fall back to the CPU).
pub fn can_split(device: &Device, video: &Video) -> bool {
    matches!(device, Device::Cuda(gpu) if gpu.check_stream(video.info()).is_ok())
}

/// Decodes one video on every GPU of `models`, each keeping the temporal slices it
/// decodes and encoding them with its own copy of the model (streamed as they complete
/// when the model streams slices), then joins the embeddings on the first model's GPU:
/// one video's decode and encode both run data-parallel over the GPUs.
pub fn embed_split(
    models: &[GpuModel],
    video: &Video,
    plan: &SamplePlan,
    cancel: &Cancel,
) -> anyhow::Result<crate::job::Made> {
    use reel_encoder::cuda::{DeviceEmbeddings, InputDtype};
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
    crate::job::check_corrupt(&prepared.report)?;
    let decoded = std::time::Instant::now();
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
    Ok(crate::job::Made {
        tensor: crate::job::Tensor::DeviceEmbeddings(Arc::new(joined)),
        report: prepared.report,
        decoded_on: format!("{} (split)", on.join("+")),
        decoded,
    })
}

/// A loaded vision tower and, on a GPU, the batcher that every request using it
/// shares (cross-request batching, streamed slices, the memory budget).
pub struct Model {
    /// Identifies the weights and precision (in cache keys and logs).
    pub id: String,
    pub tower: Arc<reel_encoder::VisionTower>,
    batcher: Option<Arc<reel_encoder::cuda::Batcher>>,
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

impl Model {
    /// Loads the vision tower of the Hugging Face folder `dir` where `device` computes:
    /// on its GPU (bf16 unless the dtype says f32) behind a batcher, or on the CPU (f32
    /// unless the dtype says otherwise).
    pub fn load(
        dir: &std::path::Path,
        options: &ModelOptions,
        device: &Device,
    ) -> anyhow::Result<Model> {
        use reel_encoder::{DType, VisionTower};
        let dtype = match (options.dtype.as_str(), device) {
            ("auto", Device::Cuda(_)) => DType::BF16,
            ("auto", Device::Cpu) => DType::F32,
            (name, _) => DType::from_name(name)?,
        };
        let tower = Arc::new(match device {
            Device::Cuda(gpu) => VisionTower::load_cuda(dir, dtype, gpu.context().clone())?,
            Device::Cpu => VisionTower::load(dir, dtype)?,
        });
        let batcher = tower
            .is_cuda()
            .then(|| reel_encoder::cuda::Batcher::new(tower.clone(), options.memory_budget))
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
    pub fn batcher(&self) -> Option<&reel_encoder::cuda::Batcher> {
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
    pub fn encode(
        &self,
        pixels: &Pixels,
        request: Option<reel_encoder::cuda::Request>,
    ) -> anyhow::Result<crate::job::Tensor> {
        use crate::job::Tensor;
        use reel_encoder::cuda::InputDtype;
        let Some(batcher) = &self.batcher else {
            let emb = match pixels {
                Pixels::Host(v) => self.tower.encode(&v.data, &[v.grid_thw])?,
                Pixels::Device(p) => self.tower.encode(&p.to_host_f32()?, &[p.grid_thw])?,
            };
            return Ok(Tensor::Host {
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
        Ok(Tensor::DeviceEmbeddings(Arc::new(request.finish()?)))
    }
}
