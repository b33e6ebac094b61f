//! Decoding and preprocessing one video's sampled frames on a device: NVDEC + CUDA
//! kernels (segments on every GPU) or the CPU decoder, with the CPU as the fallback for a
//! stream the GPU cannot decode.

use reel_codec::decode::DecodeReport;
use reel_codec::gpu::{DeviceFrames, PixelDtype, PrepareOptions, SliceReady};
use reel_codec::preprocess::PixelValues;
use reel_codec::{Cancel, SamplePlan, Video};

use super::device::Device;

/// Pixel values where they were made.
pub enum Pixels {
    Host(PixelValues),
    Device(DeviceFrames),
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

/// Decoded, preprocessed pixel values and how they were made.
pub struct Decoded {
    pub pixels: Pixels,
    pub report: DecodeReport,
    /// Where decoding ran ("cuda:0", "cpu", or "cpu (fallback: …)").
    pub decoded_on: String,
}

/// Decodes and preprocesses the plan's frames on `device`. A stream the GPU cannot
/// decode falls back to the CPU decoder when this build has one. On the GPU,
/// `on_slice` hears of every temporal slice as soon as it is complete
/// ([`PrepareOptions::on_slice`]). The device's peer GPUs decode segments too.
pub fn prepare(
    device: &Device,
    video: &Video,
    plan: &SamplePlan,
    threads: usize,
    cancel: &Cancel,
    on_slice: Option<&SliceReady<'_>>,
) -> anyhow::Result<Decoded> {
    if let Device::Cuda(gpu) = device {
        match gpu.check_stream(video.info()) {
            Ok(_) => {
                let options = PrepareOptions {
                    sessions: gpu.sessions()
                        + gpu.peers.iter().map(|p| p.sessions()).sum::<usize>(),
                    dtype: PixelDtype::F32,
                    peers: &gpu.peers,
                    on_slice,
                };
                let mut prepared = gpu.prepare_with(video, plan, &options, cancel)?;
                return Ok(Decoded {
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
) -> anyhow::Result<Decoded> {
    let prepared = reel_codec::pipeline::prepare_cpu(video, plan, threads, cancel)?;
    Ok(Decoded {
        pixels: Pixels::Host(prepared.pixel_values),
        report: prepared.report,
        decoded_on: "cpu".into(),
    })
}

#[cfg(not(feature = "ffmpeg"))]
fn prepare_cpu(_: &Video, _: &SamplePlan, _: usize, _: &Cancel) -> anyhow::Result<Decoded> {
    use super::error::{Error, ErrorKind};
    Err(Error::new(
        ErrorKind::Unsupported,
        "this build has no CPU decoder (built without the `ffmpeg` feature); use a GPU",
    )
    .into())
}

/// Fails on frames the decoder concealed errors in.
pub fn check_corrupt(report: &DecodeReport) -> anyhow::Result<()> {
    let corrupt = &report.corrupt_frames;
    if !corrupt.is_empty() {
        return Err(reel_codec::Error::Decode {
            frames: corrupt.clone(),
            reason: "the decoder concealed bitstream errors in these sampled frames".into(),
        }
        .into());
    }
    Ok(())
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
