//! NVDEC: NVIDIA's hardware video decoders, through libnvcuvid loaded at run time.
//!
//! A [`Session`] couples a parser with a decoder from a per-GPU [`DecoderPool`] and hands
//! every wanted picture, mapped in device memory, to a callback. The GPU's CUDA context
//! must be current on the thread that drives a session.

mod api;
mod caps;
// Generated bindings (scripts/gen-nvcuvid-bindings.sh, not edited by hand): bindgen's
// bitfield accessors use unsafe blocks without SAFETY comments. The allow sits here, not
// in ffi.rs, so that regenerating the file keeps it.
#[allow(
    clippy::all,
    clippy::undocumented_unsafe_blocks,
    missing_docs,
    unreachable_pub
)]
mod ffi;
mod session;

pub use caps::{check_stream, query, DecoderCaps};
pub use session::{DecoderPool, Picture, Session, SurfaceFormat};

/// True when libnvcuvid can be loaded.
pub fn available() -> bool {
    api::nvcuvid().is_ok()
}
