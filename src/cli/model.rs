//! `reel model`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use reel_encoder::init::{write_random, Arch};
use reel_encoder::DType;

#[derive(Debug, Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    command: ModelCommand,
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Write a Hugging Face-compatible model folder (config.json + model.safetensors)
    /// with random vision-tower weights, for tests and benchmarks on any machine.
    Init(InitArgs),
    /// List the model families reel runs: the Hugging Face architectures and model types
    /// that select each, and the sizes `reel model init` writes.
    List(ListArgs),
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Print the list as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Architecture: a size from `reel model list` (qwen2.5-vl-3b, qwen2.5-vl-7b,
    /// qwen2.5-vl-32b, qwen2.5-vl-72b, tiny).
    #[arg(long)]
    arch: String,
    /// Random weights (the only kind reel writes; required to say so).
    #[arg(long, required = true)]
    random: bool,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Weight dtype: f32, bf16 or f16.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// Output folder.
    #[arg(long, short)]
    output: PathBuf,
}

pub fn run(args: ModelArgs) -> anyhow::Result<()> {
    match args.command {
        ModelCommand::List(a) => {
            use reel_encoder::models::FAMILIES;
            if a.json {
                let list: Vec<_> = FAMILIES
                    .iter()
                    .map(|f| {
                        serde_json::json!({
                            "family": f.name,
                            "description": f.description,
                            "architectures": f.architectures,
                            "model_types": f.model_types,
                            "presets": f.presets,
                        })
                    })
                    .collect();
                return crate::output::print(serde_json::to_string_pretty(&list)?);
            }
            for f in FAMILIES {
                crate::output::print(format_args!(
                    "{}: {}\n  architectures: {}\n  model_type:    {}\n  init --arch:   {}",
                    f.name,
                    f.description,
                    f.architectures.join(", "),
                    f.model_types.join(", "),
                    f.presets.join(", ")
                ))?;
            }
            Ok(())
        }
        ModelCommand::Init(a) => {
            let arch = Arch::from_name(&a.arch).map_err(|_| {
                let presets: Vec<&str> = reel_encoder::models::FAMILIES
                    .iter()
                    .flat_map(|f| f.presets.iter().copied())
                    .collect();
                anyhow::anyhow!(
                    "unknown architecture `{}` (reel model init writes: {})",
                    a.arch,
                    presets.join(", ")
                )
            })?;
            let t = std::time::Instant::now();
            write_random(arch, a.seed, DType::from_name(&a.dtype)?, &a.output)?;
            crate::output::print(format_args!(
                "{}: random {} vision tower (seed {}, {}) in {:.1} s",
                a.output.display(),
                arch.name(),
                a.seed,
                a.dtype,
                t.elapsed().as_secs_f64()
            ))?;
            Ok(())
        }
    }
}
