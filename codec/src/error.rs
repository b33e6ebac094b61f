//! The codec crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong between a byte source and model-ready pixels.
///
/// Every variant is a clear, typed report: bad input never panics.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("empty input")]
    Empty,
    #[error("unrecognized container (not MP4/MOV, Matroska/WebM or Annex-B H.264/HEVC)")]
    UnknownFormat,
    /// The container's structure is broken (bad box or element sizes, missing tables).
    #[error("malformed {container}: {reason}")]
    Malformed {
        container: &'static str,
        reason: String,
    },
    #[error("no video track")]
    NoVideoTrack,
    #[error("unsupported codec: {0}")]
    UnsupportedCodec(String),
    /// A bitstream header (SPS, PPS, slice header, VP9 frame header) failed to parse.
    #[error("invalid {codec} bitstream: {reason}")]
    Bitstream { codec: &'static str, reason: String },
    #[error("unsupported stream: {0}")]
    Unsupported(String),
    /// Sizes outside what any decoder or the model accepts.
    #[error("invalid dimensions {width}x{height}: {reason}")]
    Dimensions {
        width: u64,
        height: u64,
        reason: String,
    },
    /// The sampling request cannot be satisfied for this video.
    #[error("invalid sampling request: {0}")]
    Sampling(String),
    /// A packet's bytes lie outside the source (truncated file).
    #[error("packet {index} (offset {offset}, {size} bytes) lies past the end of the input ({len} bytes): truncated file")]
    Truncated {
        index: usize,
        offset: u64,
        size: u64,
        len: u64,
    },
    /// The decoder failed; `frames` lists the planned frames it could not deliver.
    #[error("decode failed for {} planned frame(s) (first: {first}): {reason}", frames.len(), first = frames.first().copied().unwrap_or(0))]
    Decode { frames: Vec<usize>, reason: String },
    /// The work was cancelled (client gone, deadline passed).
    #[error("cancelled")]
    Cancelled,
    /// A decoder backend is not available in this build or on this machine (no GPU, no
    /// NVDEC, no CPU decoder): transient or a matter of where the work runs.
    #[error("decoder unavailable: {0}")]
    DecoderUnavailable(String),
    /// Device memory ran out (frame buffers, decoder surfaces).
    #[error("out of device memory: {0}")]
    OutOfMemory(String),
    /// Any other CUDA or NVDEC failure while working (not the input's fault).
    #[error("device failure: {0}")]
    Device(String),
    /// A bug in reel (a worker panicked, a broken invariant).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn malformed(container: &'static str, reason: impl Into<String>) -> Self {
        Error::Malformed {
            container,
            reason: reason.into(),
        }
    }

    pub(crate) fn bitstream(codec: &'static str, reason: impl Into<String>) -> Self {
        Error::Bitstream {
            codec,
            reason: reason.into(),
        }
    }
}

/// Result with the codec crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
