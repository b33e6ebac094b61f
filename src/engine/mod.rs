//! The engine: devices, models, one video's job (plan, decode, preprocess, encode), the
//! embedding cache and the result values. It knows nothing of transports: the CLI and
//! the gRPC server (`crate::serve`) call it, and map its [`ErrorKind`] to what they
//! report. Dependencies run one way: device → decode → model → split → job.

mod cache;
mod decode;
mod device;
mod error;
mod job;
mod model;
mod split;
mod values;

pub use decode::{codecs, prepare, Pixels};
pub use device::{threads, Device, DeviceChoice, Devices};
pub use error::ErrorKind;
pub use job::{run, EmbeddingCache, Input, Outcome, Want};
pub use model::{video_processor, GpuModel, Model, ModelOptions};
pub use values::Values;
