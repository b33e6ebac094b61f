//! `reel frames`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use reel_codec::{SamplePlan, Video};

use super::sampling::SamplingArgs;
use crate::output::{write_safetensors, NamedTensor, PlanTensors};

#[derive(Debug, Args)]
pub struct FramesArgs {
    /// Video file (MP4/MOV, MKV/WebM, or raw .h264/.hevc).
    pub file: PathBuf,
    /// Output safetensors file.
    #[arg(long, short)]
    pub output: PathBuf,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Preprocess as this model folder's processor does (its config.json and
    /// video_preprocessor_config.json are read, not its weights) [default: Qwen2.5-VL's,
    /// qwen-vl-utils].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where to decode and preprocess: auto (a GPU when present), cpu, cuda (GPU 0, its
    /// video decoding on every GPU), cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: crate::engine::DeviceChoice,
    /// CPU worker threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write the output even when the decoder had to conceal errors in sampled frames
    /// (they are listed in the metadata as corrupt_frames).
    #[arg(long)]
    pub keep_corrupt: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: FramesArgs) -> anyhow::Result<()> {
    let threads = crate::engine::threads(args.threads);
    let device = crate::engine::Devices::open(args.device)?.primary();
    let t0 = Instant::now();
    let video =
        Video::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let t_demux = t0.elapsed();
    let processor = match &args.model {
        Some(dir) => crate::engine::video_processor(&reel_encoder::ModelSpec::read(dir)?)?,
        None => Default::default(),
    };
    let options = args.sampling.options_for(&processor);
    let plan = SamplePlan::new(video.info(), video.index(), &options)?;
    let t1 = Instant::now();
    let prepared = crate::engine::prepare(
        &device,
        &video,
        &plan,
        threads,
        &reel_codec::Cancel::new(),
        None,
    )?;
    let t_decode = t1.elapsed();
    let corrupt = &prepared.report.corrupt_frames;
    if !corrupt.is_empty() && !args.keep_corrupt {
        bail!(
            "the decoder concealed bitstream errors in sampled frames {corrupt:?}; nothing was written \
             (use --keep-corrupt to write them anyway)"
        );
    }
    let t2 = Instant::now();
    let pixel_values = prepared.pixels.into_host()?;
    let grid = plan.grid_thw;
    let plan_tensors = PlanTensors::new(&plan);
    let mut tensors = vec![NamedTensor::f32(
        "pixel_values",
        vec![pixel_values.rows(), plan.patch_dim()],
        &pixel_values.data,
    )];
    tensors.extend(plan_tensors.tensors(false));
    let metadata = metadata(&args, &options, &video, &plan, corrupt);
    write_safetensors(&args.output, &tensors, metadata)?;
    let t_write = t2.elapsed();
    let summary = serde_json::json!({
        "output": args.output,
        "frames": plan.frames.len(),
        "grid_thw": grid,
        "tokens": plan.tokens(),
        "resized": [plan.resized_height, plan.resized_width],
        "sample_fps": plan.sample_fps,
        "device": prepared.decoded_on,
        "packets_decoded": prepared.report.packets_decoded,
        "packets_skipped": prepared.report.packets_skipped,
        "packets_total": video.index().len(),
        "seconds": {
            "demux": t_demux.as_secs_f64(),
            "decode_preprocess": t_decode.as_secs_f64(),
            "write": t_write.as_secs_f64(),
            "total": t0.elapsed().as_secs_f64(),
        },
    });
    if args.json {
        crate::output::print(serde_json::to_string_pretty(&summary)?)?;
    } else {
        crate::output::print(format_args!(
            "{}: {} frames → {}x{}, grid {:?} ({} tokens); decoded {} of {} packets on {}; {:.3} s \
             (demux {:.3}, decode+preprocess {:.3}, write {:.3})",
            args.output.display(),
            plan.frames.len(),
            plan.resized_height,
            plan.resized_width,
            grid,
            plan.tokens(),
            prepared.report.packets_decoded,
            video.index().len(),
            prepared.decoded_on,
            t0.elapsed().as_secs_f64(),
            t_demux.as_secs_f64(),
            t_decode.as_secs_f64(),
            t_write.as_secs_f64(),
        ))?;
    }
    Ok(())
}

fn metadata(
    args: &FramesArgs,
    options: &reel_codec::SamplingOptions,
    video: &Video,
    plan: &SamplePlan,
    corrupt: &[usize],
) -> HashMap<String, String> {
    let json = |v: serde_json::Value| v.to_string();
    HashMap::from([
        ("format".into(), "reel.frames.v1".into()),
        ("reel_version".into(), env!("CARGO_PKG_VERSION").into()),
        ("source".into(), args.file.display().to_string()),
        ("frame_indices".into(), json(serde_json::json!(plan.frames))),
        (
            "timestamps".into(),
            json(serde_json::json!(plan.timestamps)),
        ),
        (
            "video_grid_thw".into(),
            json(serde_json::json!([plan.grid_thw])),
        ),
        (
            "second_per_grid_ts".into(),
            json(serde_json::json!([plan.second_per_grid_t])),
        ),
        ("sample_fps".into(), plan.sample_fps.to_string()),
        ("resized_height".into(), plan.resized_height.to_string()),
        ("resized_width".into(), plan.resized_width.to_string()),
        (
            "stream".into(),
            json(serde_json::to_value(video.info()).unwrap_or_default()),
        ),
        (
            "sampling".into(),
            json(serde_json::to_value(options).unwrap_or_default()),
        ),
        ("corrupt_frames".into(), json(serde_json::json!(corrupt))),
    ])
}
