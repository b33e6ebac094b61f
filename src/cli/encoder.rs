//! Flags of the vision tower, shared by the commands that encode.

use clap::Args;

use crate::engine::ModelOptions;

/// How the vision tower runs.
#[derive(Clone, Debug, Args)]
pub struct EncoderArgs {
    /// Precision of the vision tower: auto (bf16 on a GPU, f32 on the CPU), f32, bf16.
    #[arg(long, default_value = "auto")]
    pub dtype: String,
    /// Device memory one GPU forward may take for its activations, MiB. A video larger
    /// than that is encoded in several forwards of whole temporal slices (same result).
    #[arg(long, default_value_t = 4096)]
    pub encoder_memory_mib: u64,
    /// Encode only after the whole video is decoded, instead of taking each temporal
    /// slice (two frames) to the GPU tower as soon as it is decoded.
    #[arg(long)]
    pub no_stream_slices: bool,
}

impl EncoderArgs {
    pub fn options(&self) -> ModelOptions {
        ModelOptions {
            dtype: self.dtype.clone(),
            memory_budget: self.encoder_memory_mib << 20,
            stream_slices: !self.no_stream_slices,
        }
    }
}
