//! CPU preprocessing with Hugging Face's numerics: YUV → RGB, rotation, bicubic
//! antialiased resize (float for qwen-vl-utils, uint8 for HF's video processors),
//! rescale + normalize, and the Qwen-VL patch layout for any patch geometry.
//!
//! The CPU path is the reference the GPU kernels are tested against.

mod color;
mod image;
mod patchify;
mod resize;
pub mod swscale;

pub use color::{ColorConverter, ColorMode, YuvImage, YuvSamples};
pub use image::{Planes, RgbImage};
pub use patchify::{write_frame, Normalization, PixelValues};
pub use resize::{
    resize_bicubic_aa, resize_bicubic_aa_u8, resize_planes, IntTapTable, Resize, TapTable,
};

/// Clamps to 0..=255 and rounds to the nearest integer, ties to even (torch's `round()`
/// before a cast to uint8), without a libm call: adding 2^23 leaves an f32 no fraction
/// bits, so the addition itself rounds, in the default rounding mode.
#[inline(always)]
pub(crate) fn round_level(v: f32) -> f32 {
    const NO_FRACTION: f32 = 8_388_608.0;
    (v.clamp(0.0, 255.0) + NO_FRACTION) - NO_FRACTION
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_level_is_clamped_round_half_even() {
        let ties = (0..=255).map(|i| i as f32 + 0.5);
        let steps = (-4000..=300_000).map(|i| i as f32 / 1000.0);
        let edges = [-0.0, -1e30, 1e30, 255.49998, 254.50002, f32::INFINITY];
        for v in ties.chain(steps).chain(edges) {
            let want = v.clamp(0.0, 255.0).round_ties_even();
            assert_eq!(super::round_level(v), want, "{v}");
        }
        assert_eq!(super::round_level(f32::NAN) as u8, 0);
    }
}
