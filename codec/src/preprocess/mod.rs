//! CPU preprocessing with Hugging Face's numerics: YUV → RGB, rotation, bicubic
//! antialiased resize, rescale + normalize, and the Qwen2.5-VL patch layout.
//!
//! The CPU path is the reference the GPU kernels are tested against.

mod color;
mod image;
mod patchify;
mod resize;

pub use color::{ColorConverter, YuvImage, YuvSamples};
pub use image::{Planes, RgbImage};
pub use patchify::{write_frame, Normalization, PixelValues, PATCH_DIM};
pub use resize::{resize_bicubic_aa, resize_planes, TapTable};
