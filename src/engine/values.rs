//! A job's result values: pixel values or embeddings, in host or device memory.

use std::sync::Arc;
use std::time::Instant;

use reel_codec::decode::DecodeReport;
use reel_codec::gpu::DeviceFrames;
use reel_encoder::cuda::DeviceEmbeddings;

use super::cache::Footprint;

/// The values a job made, where they live.
pub enum Values {
    /// Row-major f32 values in host memory.
    Host { data: Vec<f32>, shape: [usize; 2] },
    /// Pixel values in GPU memory.
    DevicePixels(DeviceFrames),
    /// Embeddings in GPU memory, in the model's dtype (shared with the cache).
    DeviceEmbeddings(Arc<DeviceEmbeddings>),
}

impl Footprint for Values {
    fn bytes(&self) -> u64 {
        match self {
            Values::Host { data, .. } => 4 * data.len() as u64,
            Values::DevicePixels(p) => p.buffer.len() as u64,
            Values::DeviceEmbeddings(e) => e.buffer.len() as u64,
        }
    }
}

impl Values {
    /// Another handle on the same embeddings (device) or a copy (host); `None` for pixel
    /// values, which are not cached.
    pub(super) fn share(&self) -> Option<Values> {
        match self {
            Values::Host { data, shape } => Some(Values::Host {
                data: data.clone(),
                shape: *shape,
            }),
            Values::DevicePixels(_) => None,
            Values::DeviceEmbeddings(e) => Some(Values::DeviceEmbeddings(e.clone())),
        }
    }

    pub fn shape(&self) -> [usize; 2] {
        match self {
            Values::Host { shape, .. } => *shape,
            Values::DevicePixels(p) => [p.grid_thw.iter().product(), p.patch_dim],
            Values::DeviceEmbeddings(e) => [e.rows, e.hidden],
        }
    }

    /// The values as f32 in host memory (a copy for device values).
    pub fn into_host_f32(self) -> anyhow::Result<Vec<f32>> {
        Ok(match self {
            Values::Host { data, .. } => data,
            Values::DevicePixels(p) => p.to_host_f32()?,
            Values::DeviceEmbeddings(e) => e.to_host_f32()?,
        })
    }
}

/// What decoding (and encoding) one video made.
pub(super) struct Made {
    pub values: Values,
    pub report: DecodeReport,
    pub decoded_on: String,
    /// When the pixel values were complete.
    pub decoded: Instant,
}
