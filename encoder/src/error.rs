//! Typed errors of reel-encoder.

use std::path::PathBuf;

/// Everything that can go wrong while loading a vision tower or encoding with it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CUDA backend failed (driver, cuBLASLt, kernel compilation or launch).
    #[error("CUDA: {0}")]
    Cuda(String),
    /// Device memory ran out (weights, activations, outputs).
    #[error("out of device memory: {0}")]
    OutOfMemory(String),
    /// The model folder holds an architecture reel has no model for.
    #[error("{dir}: unsupported model {found} (supported architectures: {supported})")]
    UnsupportedModel {
        /// The model folder.
        dir: PathBuf,
        /// What `config.json` says: its `architectures` and `model_type`.
        found: String,
        /// Every architecture the registry knows, comma-separated.
        supported: String,
    },
    /// A file could not be read, mapped or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `config.json` (or the shard index) is not valid JSON or has the wrong structure.
    #[error("{path}: invalid JSON: {message}")]
    Json {
        /// The file involved.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// A required hyper-parameter is absent from the vision config.
    #[error("config: missing vision hyper-parameter `{key}`")]
    MissingConfig {
        /// The config key.
        key: &'static str,
    },
    /// A hyper-parameter has a value this implementation cannot run.
    #[error("config: invalid `{key}`: {message}")]
    InvalidConfig {
        /// The config key.
        key: &'static str,
        /// Why it is rejected.
        message: String,
    },
    /// The checkpoint has no safetensors file reel can use.
    #[error("{dir}: no model.safetensors, model.safetensors.index.json or *.safetensors file")]
    NoWeights {
        /// The model folder.
        dir: PathBuf,
    },
    /// A safetensors file is malformed.
    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors {
        /// The file involved.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// No vision tower was found under any of the accepted prefixes.
    #[error("no vision tower in the checkpoint: looked for `{probe}` under the prefixes `visual.`, `model.visual.` and none")]
    NoVisionTower {
        /// The tensor name that was probed.
        probe: String,
    },
    /// A tensor the vision tower needs is absent.
    #[error("missing tensor `{name}` (expected shape {expected:?})")]
    MissingTensor {
        /// Full tensor name, prefix included.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
    },
    /// A tensor has a shape other than the one the config implies.
    #[error("tensor `{name}` has shape {found:?}, expected shape {expected:?}")]
    ShapeMismatch {
        /// Full tensor name, prefix included.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the checkpoint.
        found: Vec<usize>,
    },
    /// A tensor is stored in a dtype reel cannot convert (only F32, BF16 and F16 are read).
    #[error("tensor `{name}` has dtype {dtype}, expected F32, BF16 or F16")]
    UnsupportedTensorDtype {
        /// Full tensor name, prefix included.
        name: String,
        /// The dtype in the checkpoint.
        dtype: String,
    },
    /// An encode request is malformed (grid or pixel buffer size).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// An unknown architecture name was passed to [`crate::init::Arch::from_name`].
    #[error("unknown architecture `{0}` (known: qwen2.5-vl-3b, qwen2.5-vl-7b, qwen2.5-vl-32b, qwen2.5-vl-72b, tiny)")]
    UnknownArch(String),
    /// An unknown dtype name was passed to [`crate::DType::from_name`].
    #[error("unknown dtype `{0}` (known: f32, bf16, f16)")]
    UnknownDType(String),
    /// An error inside the candle CPU backend.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
