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
                // Source pixel shown at (x, y) after a clockwise turn.
                let (sx, sy) = match rotation {
                    Rotation::Cw90 => (y, h - 1 - x),
                    Rotation::Cw180 => (w - 1 - x, h - 1 - y),
                    Rotation::Cw270 => (w - 1 - y, x),
                    Rotation::None => unreachable!(),
                };
                let s = (sy * w + sx) * 3;
                let d = (y * out_w + x) * 3;
                out.data[d..d + 3].copy_from_slice(&self.data[s..s + 3]);
            }
        }
        out
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
