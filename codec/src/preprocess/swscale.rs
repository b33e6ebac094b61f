//! The reference readers' YUV → RGB: what OpenCV (vLLM's reader) and PyAV (HF transformers'
//! default) hand to Hugging Face's processors. Both convert through FFmpeg's libswscale with
//! default flags, and on x86 it gives the same bytes in every FFmpeg from 5.1 to 8.1 (measured,
//! see docs/preprocessing.md; torchcodec and decord use swscale too but were not measured). reel reproduces that arithmetic in integers, bit for bit:
//!
//! - **8-bit 4:2:0 and 4:2:2** (even heights): swscale's unscaled converter, x86 SSSE3 code
//!   (`yuv420_rgb24_ssse3`). Each chroma sample serves its whole 2×2 (4:2:2: 2×1) block,
//!   with no interpolation and no chroma siting. The arithmetic is 16-bit fixed point with
//!   floored products:
//!   `y = ((8Y − yOffset)·yCoeff) >> 16`, `u = 8(U − 128)`, `v = 8(V − 128)`,
//!   `R = y + (v·vr >> 16)`, `G = y + (u·ug >> 16) + (v·vg >> 16)`, `B = y + (u·ub >> 16)`,
//!   each clamped to 0..255.
//! - **9- to 16-bit 4:2:0** (the generic scaler): luma rounded to 8 bits
//!   (`round(Y / 2^(bits−8))`). Chroma goes to a 15-bit intermediate. For left-sited
//!   chroma (H.264's and HEVC's default) it is first moved to the centre with the
//!   horizontal filter (3·C[k] + C[k+1]) / 4, last sample repeated; unsited chroma
//!   (VP9) is not filtered. Then it is interpolated vertically with weights 1/4 and 3/4
//!   (centre-sited, edges clamped), rounded to 8 bits, and each sample serves two
//!   columns. swscale's C look-up tables come last (limited-range white comes out as 253).
//!   Measured exact against PyAV 18 / FFmpeg 8.1 (bilinear, its default) on 10-bit
//!   H.264, HEVC and VP9.
//! - **4:4:4 and monochrome**: the C tables on full-resolution chroma. Not measured against
//!   a reader.
//!
//! The coefficients come from FFmpeg's `ff_yuv2rgb_coeffs` for the stream's matrix
//! (BT.601 when unsignalled) and its range, as the readers pass them to swscale.

use crate::stream::{Matrix, Range};

/// `{crv, cbu, cgu, cgv}` of FFmpeg's `ff_yuv2rgb_coeffs`, 16.16 fixed point.
fn inverse_table(matrix: Matrix) -> [i64; 4] {
    match matrix {
        Matrix::Bt709 => [117489, 138438, 13975, 34925],
        Matrix::Fcc => [104448, 132798, 24759, 53109],
        Matrix::Smpte240m => [117579, 136230, 16907, 35559],
        Matrix::Bt2020 => [110013, 140363, 12277, 42626],
        Matrix::Bt601 | Matrix::Identity => [104597, 132201, 25675, 53279],
    }
}

/// The integer constants of one conversion (matrix and range), as
/// `ff_yuv2rgb_c_init_tables` derives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Swscale {
    /// SSSE3 path, Q13 16-bit: y, v→R, u→B, u→G, v→G coefficients and the luma offset.
    pub y_coeff: i32,
    pub vr: i32,
    pub ub: i32,
    pub ug: i32,
    pub vg: i32,
    pub y_offset: i32,
    /// C-table path: luma scale and offset (16.16), the table base, and the chroma
    /// steps in luma units (16.16).
    pub cy: i32,
    pub oy: i32,
    pub base: i32,
    pub crv: i32,
    pub cbu: i32,
    pub cgu: i32,
    pub cgv: i32,
}

/// `(f + 2^15) >> 16`, saturated to i16.
fn round_to_int16(f: i64) -> i32 {
    ((f + (1 << 15)) >> 16).clamp(-0x7fff, 0x7fff) as i32
}

impl Swscale {
    pub fn new(matrix: Matrix, range: Range) -> Self {
        let [crv, cbu, cgu, cgv] = inverse_table(matrix);
        let (mut crv, mut cbu, mut cgu, mut cgv) = (crv, cbu, -cgu, -cgv);
        // Rust's integer division truncates toward zero, as C's does.
        let (cy, oy): (i64, i64) = match range {
            Range::Limited => ((1 << 16) * 255 / 219, 16 << 16),
            Range::Full => {
                crv = (crv * 224) / 255;
                cbu = (cbu * 224) / 255;
                cgu = (cgu * 224) / 255;
                cgv = (cgv * 224) / 255;
                (1 << 16, 0)
            }
        };
        let step = |c: i64| ((c * (1 << 16) + 0x8000) / cy) as i32;
        Swscale {
            y_coeff: round_to_int16(cy << 13),
            vr: round_to_int16(crv << 13),
            ub: round_to_int16(cbu << 13),
            ug: round_to_int16(cgu << 13),
            vg: round_to_int16(cgv << 13),
            y_offset: round_to_int16(oy << 3),
            cy: cy as i32,
            oy: oy as i32,
            base: match range {
                Range::Limited => 326,
                Range::Full => 384,
            },
            crv: step(crv),
            cbu: step(cbu),
            cgu: step(cgu),
            cgv: step(cgv),
        }
    }

    /// One pixel through the unscaled converter (8-bit samples).
    #[inline(always)]
    pub fn unscaled(&self, y: u8, u: u8, v: u8) -> [u8; 3] {
        let y = ((8 * i32::from(y) - self.y_offset) * self.y_coeff) >> 16;
        let u = 8 * (i32::from(u) - 128);
        let v = 8 * (i32::from(v) - 128);
        let clamp = |x: i32| x.clamp(0, 255) as u8;
        [
            clamp(y + ((v * self.vr) >> 16)),
            clamp(y + (((u * self.ug) >> 16) + ((v * self.vg) >> 16))),
            clamp(y + ((u * self.ub) >> 16)),
        ]
    }

    /// One pixel through the C look-up tables (8-bit luma and chroma, `y` may reach 256
    /// after rounding a wider sample).
    #[inline(always)]
    pub fn table(&self, y: i32, u: i32, v: i32) -> [u8; 3] {
        // fill_table / fill_gv_table: a chroma value's step in luma units.
        let off = |c: i32, inc: i32| ((i64::from(c) * i64::from(inc)) >> 16) as i32 - (inc >> 9);
        // The luma table: ytab[k] for k = y + chroma step.
        let ytab = |k: i32| -> u8 {
            let v =
                (i64::from(k + self.base) * i64::from(self.cy) - (384 << 16) - i64::from(self.oy)
                    + 0x8000)
                    >> 16;
            v.clamp(0, 255) as u8
        };
        [
            ytab(y + off(v, self.crv)),
            ytab(y + off(u, self.cgu) + off(v, self.cgv)),
            ytab(y + off(u, self.cbu)),
        ]
    }
}

/// A wide sample (`bits` > 8) rounded to 8 bits the way swscale's input stage and
/// vertical scaler do (`((s << (15 − bits)) · 4096 + 2^18) >> 19`).
#[inline(always)]
pub fn narrow(sample: u16, bits: u8) -> i32 {
    let shift = 15 - i64::from(bits.clamp(9, 15));
    (((i64::from(sample) << shift) * 4096 + (1 << 18)) >> 19) as i32
}

/// A wide chroma sample (`bits` > 8) as swscale's 15-bit intermediate. `next` is the
/// sample to its right (the last one repeats itself); left-sited chroma is moved half a
/// luma pixel to the centre: `(3·c + next) / 4`, in Q14 taps.
#[inline(always)]
pub fn chroma_15bit(c: u16, next: u16, bits: u8, left_sited: bool) -> i64 {
    let bits = i64::from(bits.clamp(9, 15));
    if left_sited {
        (i64::from(c) * 12288 + i64::from(next) * 4096) >> (bits - 1)
    } else {
        i64::from(c) << (15 - bits)
    }
}

/// Two 15-bit chroma rows blended for one luma row (4:2:0, `above_weight` of 4096 on
/// the first) and rounded to 8 bits.
#[inline(always)]
pub fn blend_420(above: i64, below: i64, above_weight: i64) -> i32 {
    ((above * above_weight + below * (4096 - above_weight) + (1 << 18)) >> 19).clamp(0, 255) as i32
}

/// The two chroma rows luma row `y` blends (4:2:0, `rows` chroma rows) and the weight of
/// the first, in 1/4096.
#[inline(always)]
pub fn chroma_rows_420(y: usize, rows: usize) -> (usize, usize, i64) {
    let k = y / 2;
    if y % 2 == 0 {
        (k.saturating_sub(1), k, 1024)
    } else {
        (k, (k + 1).min(rows - 1), 3072)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_are_ffmpegs() {
        // The values FFmpeg's SSSE3 converter loads for BT.601 and BT.709, limited range.
        let bt601 = Swscale::new(Matrix::Bt601, Range::Limited);
        assert_eq!(
            (
                bt601.y_coeff,
                bt601.y_offset,
                bt601.vr,
                bt601.ub,
                bt601.ug,
                bt601.vg
            ),
            (9539, 128, 13075, 16525, -3209, -6660)
        );
        let bt709 = Swscale::new(Matrix::Bt709, Range::Limited);
        assert_eq!(
            (bt709.vr, bt709.ub, bt709.ug, bt709.vg),
            (14686, 17305, -1747, -4366)
        );
        assert_eq!(Swscale::new(Matrix::Bt601, Range::Full).y_coeff, 8192);
        // The C tables' chroma steps for BT.601 limited.
        assert_eq!(
            (bt601.crv, bt601.cbu, bt601.cgu, bt601.cgv),
            (89830, 113537, -22049, -45756)
        );
    }

    #[test]
    fn known_pixels() {
        let s = Swscale::new(Matrix::Bt601, Range::Limited);
        // Black and white: the SSSE3 path reaches 255, the C tables stop at 253.
        assert_eq!(s.unscaled(16, 128, 128), [0, 0, 0]);
        assert_eq!(s.unscaled(235, 128, 128), [255, 255, 255]);
        assert_eq!(s.table(235, 128, 128), [253, 253, 253]);
        assert_eq!(s.table(16, 128, 128), [0, 0, 0]);
        // 10-bit white (940) rounds to 235.
        assert_eq!(narrow(940, 10), 235);
        assert_eq!(narrow(1023, 10), 256);
        assert_eq!(narrow(2, 10), 1);
    }

    #[test]
    fn chroma_rows_clamp_at_the_edges() {
        assert_eq!(chroma_rows_420(0, 4), (0, 0, 1024));
        assert_eq!(chroma_rows_420(1, 4), (0, 1, 3072));
        assert_eq!(chroma_rows_420(2, 4), (0, 1, 1024));
        assert_eq!(chroma_rows_420(7, 4), (3, 3, 3072));
    }
}
