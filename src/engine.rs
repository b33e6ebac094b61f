//! Chooses the device and runs the video pipeline on it.

use std::str::FromStr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use reel_codec::decode::DecodeReport;
use reel_codec::gpu::{Gpu, GpuPrepared, PixelDtype};
use reel_codec::preprocess::PixelValues;
use reel_codec::{Cancel, SamplePlan, Video};

/// What `--device` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// A GPU when one with NVDEC is present, else the CPU.
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
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
    /// Resolves a choice; `auto` logs what it picked and why.
    pub fn select(choice: DeviceChoice) -> anyhow::Result<Device> {
        match choice {
            DeviceChoice::Cpu => Ok(Device::Cpu),
            DeviceChoice::Cuda(n) => Ok(Device::Cuda(
                open_gpu(n).with_context(|| format!("cannot use cuda:{n}"))?,
            )),
            DeviceChoice::Auto => match open_gpu(0) {
                Ok(gpu) => {
                    tracing::info!("device auto: using cuda:0 (NVDEC + CUDA)");
                    Ok(Device::Cuda(gpu))
                }
                Err(e) => {
                    tracing::info!("device auto: using the CPU ({e})");
                    Ok(Device::Cpu)
                }
            },
        }
    }

    pub fn name(&self) -> String {
        match self {
            Device::Cpu => "cpu".into(),
            Device::Cuda(gpu) => format!("cuda:{}", gpu.context().ordinal()),
        }
    }
}

/// GPUs are opened once per process.
fn open_gpu(ordinal: usize) -> reel_codec::Result<Arc<Gpu>> {
    static OPEN: Mutex<Vec<(usize, Arc<Gpu>)>> = Mutex::new(Vec::new());
    let mut open = OPEN.lock().expect("no panics while holding the lock");
    if let Some((_, gpu)) = open.iter().find(|(n, _)| *n == ordinal) {
        return Ok(gpu.clone());
    }
    let gpu = Gpu::open(ordinal)?;
    open.push((ordinal, gpu.clone()));
    Ok(gpu)
}

/// Pixel values where they were made.
// Without FFmpeg only the GPU makes pixel values.
#[cfg_attr(not(feature = "ffmpeg"), allow(dead_code))]
pub enum Pixels {
    Host(PixelValues),
    Device(GpuPrepared),
}

impl Pixels {
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
/// decode falls back to the CPU decoder when this build has one.
pub fn prepare(
    device: &Device,
    video: &Video,
    plan: &SamplePlan,
    threads: usize,
    cancel: &Cancel,
) -> anyhow::Result<Frames> {
    if let Device::Cuda(gpu) = device {
        match gpu.check_stream(video.info()) {
            Ok(caps) => {
                let mut prepared = gpu.prepare(
                    video,
                    plan,
                    caps.engines.max(1) as usize,
                    PixelDtype::F32,
                    cancel,
                )?;
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

/// Loads a vision tower where `device` computes: on its GPU (bf16 unless `dtype` says
/// f32) or on the CPU (f32 unless `dtype` says otherwise).
pub fn load_tower(
    dir: &std::path::Path,
    dtype: &str,
    device: &Device,
) -> anyhow::Result<reel_encoder::VisionTower> {
    use reel_encoder::{DType, VisionTower};
    let dtype = match (dtype, device) {
        ("auto", Device::Cuda(_)) => DType::BF16,
        ("auto", Device::Cpu) => DType::F32,
        (name, _) => DType::from_name(name)?,
    };
    Ok(match device {
        Device::Cuda(gpu) => VisionTower::load_cuda(dir, dtype, gpu.context().clone())?,
        Device::Cpu => VisionTower::load(dir, dtype)?,
    })
}
