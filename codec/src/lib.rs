//! reel-codec: from a video file to Qwen2.5-VL- or Qwen3-VL-ready pixels.
//!
//! - [`demux`]: MP4/MOV (progressive and fragmented), Matroska/WebM and raw Annex-B
//!   H.264/HEVC, in pure Rust: [`StreamInfo`] and a [`PacketIndex`] without reading
//!   sample payloads.
//! - [`plan`]: which frames to sample and at what size, exactly as qwen-vl-utils
//!   (Qwen2.5-VL) or HF's `Qwen3VLVideoProcessor` (Qwen3-VL) does, and which packets
//!   must be decoded for them.
//! - [`decode`]: decoders that deliver only the planned frames.
//! - [`preprocess`]: colour conversion, resizing, normalization and patchifying with
//!   Hugging Face's numerics.

pub mod bitstream;
mod cancel;
pub mod decode;
pub mod demux;
mod error;
mod fair;
pub mod gpu;
mod index;
pub mod pipeline;
pub mod plan;
pub mod preprocess;
#[doc(hidden)]
pub mod robustness;
mod source;
mod stream;
mod video;

pub use cancel::Cancel;
pub use error::{Error, Result};
pub use index::PacketIndex;
pub use plan::{SamplePlan, SamplingOptions};
pub use source::Source;
pub use stream::{Chroma, Codec, ColorInfo, Matrix, Packet, Range, Rational, Rotation, StreamInfo};
pub use video::Video;
