//! The one place engine error kinds become gRPC status codes (table: docs/errors.md).

use tonic::{Code, Status};

use crate::engine::ErrorKind;

/// The gRPC code of an error kind. RESOURCE_EXHAUSTED tells a client that retrying the
/// same request only helps once something is freed; UNAVAILABLE that a retry may work.
pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Unavailable => Code::Unavailable,
        // The request is well-formed; this server cannot serve it.
        ErrorKind::Unsupported => Code::FailedPrecondition,
        ErrorKind::Corrupt => Code::DataLoss,
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Internal => Code::Internal,
    }
}

/// A status of `kind` with `message`.
pub fn status(kind: ErrorKind, message: impl Into<String>) -> Status {
    Status::new(code(kind), message)
}

/// The status of an error from the engine: its kind's code, the whole chain as message.
pub fn from_error(err: &anyhow::Error) -> Status {
    let kind = ErrorKind::of(err);
    if kind == ErrorKind::Internal {
        tracing::error!("internal error: {err:#}");
    }
    status(kind, format!("{err:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_that_must_not_be_retried_blindly_are_not_unavailable() {
        // A client retries UNAVAILABLE: only transient kinds may map to it.
        for kind in ErrorKind::ALL {
            let retry = code(kind) == Code::Unavailable;
            assert_eq!(retry, kind == ErrorKind::Unavailable, "{kind}");
        }
        assert_eq!(code(ErrorKind::ResourceExhausted), Code::ResourceExhausted);
        assert_eq!(code(ErrorKind::Corrupt), Code::DataLoss);
    }

    #[test]
    fn engine_errors_keep_their_kind_on_the_wire() {
        let oom = anyhow::Error::from(reel_codec::Error::OutOfMemory("surfaces".into()));
        assert_eq!(from_error(&oom).code(), Code::ResourceExhausted);
        let cut = anyhow::Error::from(reel_codec::Error::Truncated {
            index: 1,
            offset: 2,
            size: 3,
            len: 4,
        });
        assert_eq!(from_error(&cut).code(), Code::DataLoss);
        let unsupported = anyhow::Error::from(reel_codec::Error::Unsupported("AV1".into()));
        assert_eq!(from_error(&unsupported).code(), Code::FailedPrecondition);
    }
}
