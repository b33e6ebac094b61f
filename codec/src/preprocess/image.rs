//! An RGB image in memory.

use crate::stream::Rotation;

/// An 8-bit RGB image, rows of interleaved R, G, B (HWC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl RgbImage {
    /// A black image.
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            data: vec![0; width * height * 3],
        }
    }

    /// Wraps HWC bytes; `data` must hold width × height × 3 bytes.
    pub fn from_raw(width: usize, height: usize, data: Vec<u8>) -> Self {
        assert_eq!(data.len(), width * height * 3, "RGB buffer size");
        Self {
            width,
            height,
            data,
        }
    }

    /// The image turned clockwise by `rotation`, for display.
    pub fn rotated(&self, rotation: Rotation) -> RgbImage {
        let (w, h) = (self.width, self.height);
        let (out_w, out_h) = if rotation.is_transposed() {
            (h, w)
        } else {
            (w, h)
        };
        if rotation == Rotation::None {
            return self.clone();
        }
        let mut out = RgbImage::new(out_w, out_h);
        for y in 0..out_h {
            for x in 0..out_w {
                let (sx, sy) = source_of(rotation, x, y, w, h);
                let s = (sy * w + sx) * 3;
                let d = (y * out_w + x) * 3;
                out.data[d..d + 3].copy_from_slice(&self.data[s..s + 3]);
            }
        }
        out
    }
}

/// Three planes of f32 samples (R, G, B), the resize's working format.
#[derive(Clone, Debug, PartialEq)]
pub struct Planes {
    pub width: usize,
    pub height: usize,
    pub planes: [Vec<f32>; 3],
}

impl Planes {
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            planes: std::array::from_fn(|_| vec![0.0; width * height]),
        }
    }

    /// Planar copy of an 8-bit RGB image.
    pub fn from_rgb(img: &RgbImage) -> Self {
        Self {
            width: img.width,
            height: img.height,
            planes: std::array::from_fn(|c| {
                img.data
                    .iter()
                    .skip(c)
                    .step_by(3)
                    .map(|&v| f32::from(v))
                    .collect()
            }),
        }
    }

    /// Interleaves the planes into 8-bit RGB (values clamped to 0..255 and rounded
    /// half to even, as torch's cast after `round()`).
    pub fn to_rgb(&self) -> RgbImage {
        let mut out = RgbImage::new(self.width, self.height);
        let [r, g, b] = &self.planes;
        for (((dst, &r), &g), &b) in out.data.chunks_exact_mut(3).zip(r).zip(g).zip(b) {
            dst[0] = super::round_level(r) as u8;
            dst[1] = super::round_level(g) as u8;
            dst[2] = super::round_level(b) as u8;
        }
        out
    }

    /// The planes turned clockwise by `rotation`, for display.
    pub fn rotated(self, rotation: Rotation) -> Planes {
        if rotation == Rotation::None {
            return self;
        }
        let (w, h) = (self.width, self.height);
        let (out_w, out_h) = if rotation.is_transposed() {
            (h, w)
        } else {
            (w, h)
        };
        let planes = self.planes.map(|src| {
            let mut dst = vec![0f32; w * h];
            for y in 0..out_h {
                for x in 0..out_w {
                    let (sx, sy) = source_of(rotation, x, y, w, h);
                    dst[y * out_w + x] = src[sy * w + sx];
                }
            }
            dst
        });
        Planes {
            width: out_w,
            height: out_h,
            planes,
        }
    }
}

/// Source pixel shown at (x, y) after turning a w×h image clockwise by `rotation`.
fn source_of(rotation: Rotation, x: usize, y: usize, w: usize, h: usize) -> (usize, usize) {
    match rotation {
        Rotation::None => (x, y),
        Rotation::Cw90 => (y, h - 1 - x),
        Rotation::Cw180 => (w - 1 - x, h - 1 - y),
        Rotation::Cw270 => (w - 1 - y, x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_move_corners_clockwise() {
        // 2x1 image: red at left, blue at right.
        let img = RgbImage::from_raw(2, 1, vec![255, 0, 0, 0, 0, 255]);
        let cw = img.rotated(Rotation::Cw90);
        assert_eq!((cw.width, cw.height), (1, 2));
        // After a clockwise quarter turn the left pixel is on top.
        assert_eq!(&cw.data[..3], &[255, 0, 0]);
        let ccw = img.rotated(Rotation::Cw270);
        assert_eq!(&ccw.data[..3], &[0, 0, 255]);
        assert_eq!(
            img.rotated(Rotation::Cw180).data,
            vec![0, 0, 255, 255, 0, 0]
        );
    }
}
