//! `reel embed`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use super::sampling::SamplingArgs;
use crate::engine::{self, Input, Want};
use crate::output::{write_safetensors, NamedTensor, PlanTensors};

#[derive(Debug, Args)]
pub struct EmbedArgs {
    /// Video file (MP4/MOV, MKV/WebM, or raw .h264/.hevc).
    pub file: PathBuf,
    /// A Hugging Face Qwen2.5-VL model folder (config.json + safetensors); only the
    /// vision tower is loaded.
    #[arg(long)]
    pub model: PathBuf,
    /// Output safetensors file.
    #[arg(long, short)]
    pub output: PathBuf,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub encoder: super::encoder::EncoderArgs,
    /// Where to decode and preprocess: auto (a GPU when present), cpu, cuda (GPU 0, its
    /// video decoding on every GPU), cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: crate::engine::DeviceChoice,
    /// Let every GPU work on this video: each decodes GOP segments, keeps the temporal
    /// slices it decoded and encodes them with its own copy of the model; the embeddings
    /// are joined on the first GPU. Without it the video decodes on every GPU and encodes
    /// on the first. Needs a GPU.
    #[arg(long)]
    pub split_encode: bool,
    /// CPU worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EmbedArgs) -> anyhow::Result<()> {
    use crate::engine::{Device, GpuModel, Model};
    let threads = crate::engine::threads(args.threads);
    let t_load = Instant::now();
    let load_on = |device: &Device| {
        Model::load(&args.model, &args.encoder.options(), device)
            .with_context(|| format!("cannot load {} on {}", args.model.display(), device.name()))
    };
    let devices = crate::engine::Devices::open(args.device)?;
    let (device, want) = if args.split_encode {
        let mut models = Vec::new();
        let all = devices.all();
        for device in &all {
            let Device::Cuda(gpu) = device else {
                anyhow::bail!("--split-encode needs a GPU ({} chosen)", device.name());
            };
            let model = Arc::new(load_on(device)?);
            models.push(GpuModel {
                gpu: gpu.gpu.clone(),
                model,
            });
        }
        (all[0].clone(), Want::SplitEmbeddings(Arc::new(models)))
    } else {
        let device = devices.primary();
        let model = load_on(&device)?;
        (device, Want::Embeddings(Arc::new(model)))
    };
    let load = t_load.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let outcome = engine::run(
        &device,
        Input::Path(args.file.clone()),
        &args
            .sampling
            .options_for(&want.model().expect("an embedding job").processor),
        &want,
        threads,
        &reel_codec::Cancel::new(),
        None,
    )?;
    let [rows, hidden] = outcome.values.shape();
    let plan = &outcome.plan;
    let t_write = Instant::now();
    let embeddings = outcome.values.into_host_f32()?;
    let plan_tensors = PlanTensors::new(plan);
    let mut tensors = vec![NamedTensor::f32(
        "embeddings",
        vec![rows, hidden],
        &embeddings,
    )];
    tensors.extend(plan_tensors.tensors(true));
    let json = |v: serde_json::Value| v.to_string();
    let metadata = HashMap::from([
        ("format".into(), "reel.embeddings.v1".into()),
        ("reel_version".into(), env!("CARGO_PKG_VERSION").into()),
        ("source".into(), args.file.display().to_string()),
        ("model".into(), args.model.display().to_string()),
        ("dtype".into(), args.encoder.dtype.clone()),
        (
            "video_grid_thw".into(),
            json(serde_json::json!([plan.grid_thw])),
        ),
        (
            "second_per_grid_ts".into(),
            json(serde_json::json!([plan.second_per_grid_t])),
        ),
        ("frame_indices".into(), json(serde_json::json!(plan.frames))),
        (
            "timestamps".into(),
            json(serde_json::json!(plan.timestamps)),
        ),
        (
            "grid_timestamps".into(),
            json(serde_json::json!(plan.group_timestamps)),
        ),
        (
            "stream".into(),
            json(serde_json::to_value(&outcome.stream).unwrap_or_default()),
        ),
    ]);
    write_safetensors(&args.output, &tensors, metadata)?;
    let write = t_write.elapsed().as_secs_f64();
    let t = outcome.timings;
    let summary = serde_json::json!({
        "output": args.output,
        "tokens": rows,
        "shape": [rows, hidden],
        "video_grid_thw": plan.grid_thw,
        "frames": plan.frames.len(),
        "device": outcome.decoded_on,
        "packets_decoded": outcome.report.packets_decoded,
        "seconds": { "model_load": load, "demux": t.demux, "decode_preprocess": t.decode_preprocess, "encode": t.encode, "write": write, "total": t0.elapsed().as_secs_f64() },
    });
    if args.json {
        crate::output::print(serde_json::to_string_pretty(&summary)?)?;
    } else {
        crate::output::print(format_args!(
            "{}: {} tokens × {} ({} frames, grid {:?}, decoded on {}); demux {:.3} s, decode+preprocess {:.3} s, \
             encode {:.3} s, write {:.3} s (model load {:.3} s)",
            args.output.display(),
            rows,
            hidden,
            plan.frames.len(),
            plan.grid_thw,
            outcome.decoded_on,
            t.demux,
            t.decode_preprocess,
            t.encode,
            write,
            load
        ))?;
    }
    Ok(())
}
