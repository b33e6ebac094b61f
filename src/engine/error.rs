//! What kind of failure an error is, so a front end can tell its caller whether to fix
//! the request, retry, or report a bug. The engine classifies; each transport maps the
//! kind once (gRPC: `serve::status`). The table is in docs/errors.md.

use std::fmt;

/// The kinds of failure, transport-neutral.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or asks for something impossible (bad sampling, a
    /// dimension out of range). Retrying the same request fails again.
    InvalidArgument,
    /// The named video or model does not exist.
    NotFound,
    /// The request names a file outside what the caller may read.
    PermissionDenied,
    /// The caller did not prove who it is (a front end's check).
    Unauthenticated,
    /// Something is full: device memory, a memory budget, the queue, the result pool.
    /// Retrying the same request can succeed only once something is freed, and a request
    /// larger than the budget never fits.
    ResourceExhausted,
    /// No device or decoder right now, or shutting down: transient, retry.
    Unavailable,
    /// A stream no decoder here can decode (codec, profile, size); the message says why.
    Unsupported,
    /// The input is a video whose bytes are damaged: truncated, malformed boxes or
    /// bitstream headers, or frames the decoder concealed. (Bytes that are no video at
    /// all are an [`ErrorKind::InvalidArgument`].)
    Corrupt,
    /// The work was cancelled (client gone).
    Cancelled,
    /// The deadline passed first.
    DeadlineExceeded,
    /// The server is not set up for this request (no model loaded, CUDA IPC on a CPU
    /// server).
    FailedPrecondition,
    /// A bug or an unexpected device failure.
    Internal,
}

impl ErrorKind {
    /// Every kind, for tables and tests.
    #[cfg(test)]
    pub const ALL: [ErrorKind; 12] = [
        ErrorKind::InvalidArgument,
        ErrorKind::NotFound,
        ErrorKind::PermissionDenied,
        ErrorKind::Unauthenticated,
        ErrorKind::ResourceExhausted,
        ErrorKind::Unavailable,
        ErrorKind::Unsupported,
        ErrorKind::Corrupt,
        ErrorKind::Cancelled,
        ErrorKind::DeadlineExceeded,
        ErrorKind::FailedPrecondition,
        ErrorKind::Internal,
    ];

    /// The kind of any error the engine returns: its own [`Error`], or one from the
    /// codec or encoder crates anywhere in the chain.
    pub fn of(err: &anyhow::Error) -> ErrorKind {
        err.chain()
            .find_map(|cause| {
                if let Some(e) = cause.downcast_ref::<Error>() {
                    Some(e.kind)
                } else if let Some(e) = cause.downcast_ref::<reel_codec::Error>() {
                    Some(codec_kind(e))
                } else if let Some(e) = cause.downcast_ref::<reel_encoder::Error>() {
                    Some(encoder_kind(e))
                } else {
                    cause
                        .downcast_ref::<cudarc::driver::DriverError>()
                        .map(driver_kind)
                }
            })
            .unwrap_or(ErrorKind::Internal)
    }
}

/// The kind of a codec error.
pub fn codec_kind(e: &reel_codec::Error) -> ErrorKind {
    use reel_codec::Error as E;
    match e {
        E::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            ErrorKind::NotFound
        }
        E::Open { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            ErrorKind::PermissionDenied
        }
        // A path that exists but cannot be read as a video file (a folder, a name too
        // long): the request's fault, not worth a retry.
        E::Open { .. } => ErrorKind::InvalidArgument,
        // A read that failed half-way (an I/O error on the medium): may pass on retry.
        E::Io(_) => ErrorKind::Unavailable,
        // Not a video at all: the request named the wrong thing.
        E::Empty | E::UnknownFormat | E::NoVideoTrack => ErrorKind::InvalidArgument,
        // A video whose bytes are damaged.
        E::Malformed { .. } | E::Bitstream { .. } | E::Truncated { .. } | E::Decode { .. } => {
            ErrorKind::Corrupt
        }
        E::UnsupportedCodec(_) | E::Unsupported(_) => ErrorKind::Unsupported,
        E::Dimensions { .. } | E::Sampling(_) => ErrorKind::InvalidArgument,
        E::Cancelled => ErrorKind::Cancelled,
        E::DecoderUnavailable(_) => ErrorKind::Unavailable,
        E::OutOfMemory(_) => ErrorKind::ResourceExhausted,
        E::Device(_) | E::Internal(_) => ErrorKind::Internal,
    }
}

/// The kind of an encoder error: memory is exhausted, a model folder that cannot be
/// loaded is the server's set-up, the rest are bugs — the engine makes every encoder
/// input from a plan, so an input the encoder refuses (`InvalidInput`) is reel's own
/// mistake, not the client's.
pub fn encoder_kind(e: &reel_encoder::Error) -> ErrorKind {
    use reel_encoder::Error as E;
    match e {
        E::OutOfMemory(_) => ErrorKind::ResourceExhausted,
        E::UnsupportedModel { .. } => ErrorKind::FailedPrecondition,
        _ => ErrorKind::Internal,
    }
}

/// The kind of a CUDA driver error met outside the codec and encoder (result pools).
fn driver_kind(e: &cudarc::driver::DriverError) -> ErrorKind {
    match e.0 {
        cudarc::driver::sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY => {
            ErrorKind::ResourceExhausted
        }
        _ => ErrorKind::Internal,
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::NotFound => "not found",
            ErrorKind::PermissionDenied => "permission denied",
            ErrorKind::Unauthenticated => "unauthenticated",
            ErrorKind::ResourceExhausted => "resource exhausted",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Unsupported => "unsupported input",
            ErrorKind::Corrupt => "corrupt input",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::DeadlineExceeded => "deadline exceeded",
            ErrorKind::FailedPrecondition => "failed precondition",
            ErrorKind::Internal => "internal error",
        })
    }
}

/// An error the engine (or a front end) raises itself: a kind and what happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// A codec error, with what was being done, keeping the codec error's kind.
    pub fn from_codec(context: &str, e: reel_codec::Error) -> Self {
        Error::new(codec_kind(&e), format!("{context}: {e}"))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codec_errors_map_to_their_kinds() {
        use reel_codec::Error as E;
        let cases = [
            (
                E::Truncated {
                    index: 3,
                    offset: 10,
                    size: 5,
                    len: 12,
                },
                ErrorKind::Corrupt,
            ),
            (
                E::Decode {
                    frames: vec![1],
                    reason: "x".into(),
                },
                ErrorKind::Corrupt,
            ),
            (E::Unsupported("4:4:4 H.264".into()), ErrorKind::Unsupported),
            (
                E::OutOfMemory("cuMemAlloc".into()),
                ErrorKind::ResourceExhausted,
            ),
            (
                E::DecoderUnavailable("no NVDEC".into()),
                ErrorKind::Unavailable,
            ),
            (E::Device("illegal address".into()), ErrorKind::Internal),
            (
                E::Sampling("end before start".into()),
                ErrorKind::InvalidArgument,
            ),
            (E::Cancelled, ErrorKind::Cancelled),
            (
                E::Open {
                    path: "x".into(),
                    source: std::io::ErrorKind::NotFound.into(),
                },
                ErrorKind::NotFound,
            ),
            (
                E::Open {
                    path: "/".into(),
                    source: std::io::ErrorKind::IsADirectory.into(),
                },
                ErrorKind::InvalidArgument,
            ),
        ];
        for (e, kind) in cases {
            let msg = e.to_string();
            assert_eq!(ErrorKind::of(&anyhow::Error::from(e)), kind, "{msg}");
        }
    }

    #[test]
    fn encoder_errors_map_to_their_kinds() {
        use reel_encoder::Error as E;
        let oom = anyhow::Error::from(E::OutOfMemory("activations".into()));
        assert_eq!(ErrorKind::of(&oom), ErrorKind::ResourceExhausted);
        let bug = anyhow::Error::from(E::InvalidInput("slices submitted twice".into()));
        assert_eq!(ErrorKind::of(&bug), ErrorKind::Internal);
        let bug = anyhow::Error::from(E::Cuda("launch failed".into()));
        assert_eq!(ErrorKind::of(&bug), ErrorKind::Internal);
    }

    #[test]
    fn the_kind_survives_context() {
        let e = anyhow::Error::from(Error::new(ErrorKind::ResourceExhausted, "queue full"))
            .context("while admitting");
        assert_eq!(ErrorKind::of(&e), ErrorKind::ResourceExhausted);
        let untyped = anyhow::anyhow!("something odd");
        assert_eq!(ErrorKind::of(&untyped), ErrorKind::Internal);
    }
}
