//! YUV → RGB conversion, defined once for both the CPU path and the CUDA kernel
//! (kernels/preprocess.cu implements the same arithmetic), in two modes ([`ColorMode`]):
//!
//! - `reference` (the default): what the reference readers hand to Hugging Face's
//!   processors, FFmpeg swscale's integer arithmetic ([`super::swscale`]);
//! - `accurate`: the signalled matrix and range in floating point with MPEG-2-sited
//!   bilinear chroma:
//!
//! - normalized luma `y = (Y - off_y) / range_y` and chroma `c = (C - off_c) / range_c`
//!   (limited range: 16/219 and 128/224 scaled by 2^(bits-8); full range: 0 and
//!   2^bits - 1, chroma centred on 2^(bits-1));
//! - `R = y + 2(1-Kr)·cr`, `B = y + 2(1-Kb)·cb`, `G = y - 2Kb(1-Kb)/Kg·cb - 2Kr(1-Kr)/Kg·cr`;
//! - 4:2:0 chroma is MPEG-2 sited (co-sited horizontally, between lines vertically) and
//!   upsampled bilinearly: weights 3/4 and 1/4 vertically, 1/2 and 1/2 horizontally on
//!   odd columns;
//! - output `round(clamp(255·v, 0, 255))`.

use multiversion::multiversion;

use crate::stream::{Chroma, Matrix, Range};

use super::swscale::{self, Swscale};
use super::{Planes, RgbImage};

/// Which YUV → RGB conversion preprocessing uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorMode {
    /// What the reference readers (OpenCV and PyAV: FFmpeg's swscale with default
    /// flags) give for the same file, bit for bit: what the models were trained and are
    /// served on. On 10-bit video the two readers differ; PyAV is followed.
    #[default]
    Reference,
    /// The signalled matrix and range in floating point, chroma upsampled bilinearly with
    /// MPEG-2 siting: closer to the true colours, not what the models saw.
    Accurate,
}

impl std::str::FromStr for ColorMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "reference" => Ok(ColorMode::Reference),
            "accurate" => Ok(ColorMode::Accurate),
            _ => Err(format!(
                "unknown colour conversion '{s}' (expected reference or accurate)"
            )),
        }
    }
}

impl std::fmt::Display for ColorMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ColorMode::Reference => "reference",
            ColorMode::Accurate => "accurate",
        })
    }
}

/// Sample storage of a planar YUV image.
#[derive(Clone, Copy, Debug)]
pub enum YuvSamples<'a> {
    /// 8-bit samples.
    U8([&'a [u8]; 3]),
    /// 9..16-bit samples, little-endian u16 (FFmpeg's `yuv420p10le` and friends).
    U16([&'a [u8]; 3]),
}

/// A planar YUV image as decoders hand it out.
#[derive(Clone, Copy, Debug)]
pub struct YuvImage<'a> {
    pub width: usize,
    pub height: usize,
    pub chroma: Chroma,
    pub samples: YuvSamples<'a>,
    /// Bytes per row of each plane.
    pub strides: [usize; 3],
}

/// Coefficients of one conversion (matrix, range and bit depth).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ColorConverter {
    y_offset: f32,
    y_scale: f32,
    c_offset: f32,
    c_scale: f32,
    cr_r: f32,
    cb_g: f32,
    cr_g: f32,
    cb_b: f32,
    identity: bool,
    /// The reference readers' integer constants, used in [`ColorMode::Reference`].
    swscale: Option<Swscale>,
    bit_depth: u8,
    /// 4:2:0 chroma sited on the left luma column (H.264's and HEVC's default), which
    /// the reference readers' scaler moves to the centre for wide samples.
    left_sited: bool,
}

impl ColorConverter {
    pub fn new(matrix: Matrix, range: Range, bit_depth: u8, mode: ColorMode) -> Self {
        let unit = f32::from(1u16 << (bit_depth.clamp(8, 16) - 8));
        let max = (1u32 << bit_depth.clamp(8, 16)) as f32 - 1.0;
        let (y_offset, y_scale, c_offset, c_scale) = match range {
            Range::Limited => (
                16.0 * unit,
                1.0 / (219.0 * unit),
                128.0 * unit,
                1.0 / (224.0 * unit),
            ),
            Range::Full => (0.0, 1.0 / max, 128.0 * unit, 1.0 / max),
        };
        let (kr, kb) = matrix.kr_kb();
        let kg = 1.0 - kr - kb;
        Self {
            y_offset,
            y_scale,
            c_offset,
            c_scale,
            cr_r: (2.0 * (1.0 - kr)) as f32,
            cb_g: if matrix == Matrix::Identity {
                0.0
            } else {
                (2.0 * kb * (1.0 - kb) / kg) as f32
            },
            cr_g: if matrix == Matrix::Identity {
                0.0
            } else {
                (2.0 * kr * (1.0 - kr) / kg) as f32
            },
            cb_b: (2.0 * (1.0 - kb)) as f32,
            identity: matrix == Matrix::Identity,
            // GBR stored as planes converts exactly either way (a copy of the levels).
            swscale: (mode == ColorMode::Reference && matrix != Matrix::Identity)
                .then(|| Swscale::new(matrix, range)),
            bit_depth: bit_depth.clamp(8, 16),
            left_sited: false,
        }
    }

    /// The same conversion for chroma sited on the left luma column
    /// ([`crate::StreamInfo::chroma_left_sited`]).
    pub fn left_sited(mut self, left: bool) -> Self {
        self.left_sited = left;
        self
    }

    /// Whether chroma is taken as left-sited.
    pub fn is_left_sited(&self) -> bool {
        self.left_sited
    }

    /// The reference readers' integer constants, in [`ColorMode::Reference`].
    pub fn swscale(&self) -> Option<&Swscale> {
        self.swscale.as_ref()
    }

    /// The constants in the order the CUDA kernel takes them.
    pub fn constants(&self) -> [f32; 8] {
        [
            self.y_offset,
            self.y_scale,
            self.c_offset,
            self.c_scale,
            self.cr_r,
            self.cb_g,
            self.cr_g,
            self.cb_b,
        ]
    }

    /// Converts a whole image to 8-bit RGB.
    pub fn convert(&self, img: &YuvImage) -> RgbImage {
        self.convert_planar(img).to_rgb()
    }

    /// Converts a whole image into planes of 8-bit values held as f32, the input the
    /// resize works on.
    pub fn convert_planar(&self, img: &YuvImage) -> Planes {
        match &self.swscale {
            Some(sws) => self.convert_reference(sws, img),
            None => self.convert_accurate(img),
        }
    }

    /// [`ColorMode::Reference`]: swscale's integer arithmetic (module [`swscale`]).
    fn convert_reference(&self, sws: &Swscale, img: &YuvImage) -> Planes {
        let (w, h) = (img.width, img.height);
        let mut out = Planes::new(w, h);
        let chroma_rows = match img.chroma {
            Chroma::Yuv420 => h.div_ceil(2),
            _ => h,
        };
        let cw = match img.chroma {
            Chroma::Yuv420 | Chroma::Yuv422 => w.div_ceil(2),
            Chroma::Yuv444 | Chroma::Monochrome => w,
        };
        let bits = self.bit_depth;
        let subsampled = matches!(img.chroma, Chroma::Yuv420 | Chroma::Yuv422);
        // 8-bit subsampled chroma takes swscale's unscaled converter, the rest its tables.
        let unscaled = bits == 8 && subsampled;
        let (mut luma, mut u, mut v) = (vec![0i32; w], vec![128i32; cw], vec![128i32; cw]);
        let (mut above, mut below) = (vec![0u16; cw], vec![0u16; cw]);
        let widen = |row: &[u16], out: &mut Vec<i64>| {
            out.clear();
            out.extend((0..row.len()).map(|k| {
                let next = row[(k + 1).min(row.len() - 1)];
                swscale::chroma_15bit(row[k], next, bits, self.left_sited)
            }));
        };
        let (mut above15, mut below15) = (Vec::with_capacity(cw), Vec::with_capacity(cw));
        let [r_plane, g_plane, b_plane] = &mut out.planes;
        for y in 0..h {
            read_row_8bit(img, 0, y, bits, &mut luma);
            if img.chroma != Chroma::Monochrome {
                for (plane, values) in [(1, &mut u), (2, &mut v)] {
                    match (img.chroma, bits) {
                        // The unscaled converter: each chroma sample for its block.
                        (Chroma::Yuv420, 8) => read_row_8bit(img, plane, y / 2, 8, values),
                        // The generic scaler: vertical interpolation of wide 4:2:0.
                        (Chroma::Yuv420, _) => {
                            let (a, b, weight) = swscale::chroma_rows_420(y, chroma_rows);
                            read_row(img, plane, a, &mut above, |s| s);
                            read_row(img, plane, b, &mut below, |s| s);
                            widen(&above, &mut above15);
                            widen(&below, &mut below15);
                            for ((o, &x), &z) in values.iter_mut().zip(&above15).zip(&below15) {
                                *o = swscale::blend_420(x, z, weight);
                            }
                        }
                        _ => read_row_8bit(img, plane, y, bits, values),
                    }
                }
            }
            let row = y * w;
            for x in 0..w {
                let c = if subsampled { x / 2 } else { x };
                let rgb = if unscaled {
                    sws.unscaled(luma[x] as u8, u[c] as u8, v[c] as u8)
                } else {
                    sws.table(luma[x], u[c], v[c])
                };
                r_plane[row + x] = f32::from(rgb[0]);
                g_plane[row + x] = f32::from(rgb[1]);
                b_plane[row + x] = f32::from(rgb[2]);
            }
        }
        out
    }

    /// [`ColorMode::Accurate`]: floating point, bilinear MPEG-2-sited chroma.
    fn convert_accurate(&self, img: &YuvImage) -> Planes {
        let (w, h) = (img.width, img.height);
        let mut out = Planes::new(w, h);
        let (cw, ch) = match img.chroma {
            Chroma::Yuv420 => (w.div_ceil(2), h.div_ceil(2)),
            Chroma::Yuv422 => (w.div_ceil(2), h),
            Chroma::Yuv444 | Chroma::Monochrome => (w, h),
        };
        let subsampled_h = matches!(img.chroma, Chroma::Yuv420 | Chroma::Yuv422);
        let mut luma = vec![0f32; w];
        let (mut a, mut b) = (vec![0f32; cw], vec![0f32; cw]);
        let (mut cv, mut cb, mut cr) = (vec![0f32; cw], vec![0f32; w], vec![0f32; w]);
        let [r_plane, g_plane, b_plane] = &mut out.planes;
        for y in 0..h {
            // Chroma rows and weight of the second one for this luma row.
            let (c0, c1, w1) = match img.chroma {
                Chroma::Yuv420 if y % 2 == 0 => (y / 2, (y / 2).saturating_sub(1), 0.25f32),
                Chroma::Yuv420 => (y / 2, (y / 2 + 1).min(ch - 1), 0.25),
                _ => (y.min(ch - 1), y.min(ch - 1), 0.0),
            };
            read_row(img, 0, y, &mut luma, f32::from);
            for (plane, full) in [(1, &mut cb), (2, &mut cr)] {
                if img.chroma == Chroma::Monochrome {
                    full.fill(self.c_offset);
                    continue;
                }
                read_row(img, plane, c0, &mut a, f32::from);
                read_row(img, plane, c1, &mut b, f32::from);
                blend_rows(&a, &b, w1, &mut cv);
                if subsampled_h {
                    upsample_row(&cv, full);
                } else {
                    full.copy_from_slice(&cv);
                }
            }
            let row = y * w..(y + 1) * w;
            self.pixels(
                &luma,
                &cb,
                &cr,
                [
                    &mut r_plane[row.clone()],
                    &mut g_plane[row.clone()],
                    &mut b_plane[row],
                ],
            );
        }
        out
    }

    /// Converts one row of samples (chroma already at luma resolution).
    fn pixels(&self, y: &[f32], cb: &[f32], cr: &[f32], out: [&mut [f32]; 3]) {
        pixels_row(self, y, cb, cr, out);
    }
}

/// Rounds a normalized value to an 8-bit level (kept as f32).
#[inline(always)]
fn level(v: f32) -> f32 {
    super::round_level(v * 255.0)
}

#[multiversion(targets("x86_64+avx2+fma", "x86_64+sse4.1", "aarch64+neon"))]
fn pixels_row(c: &ColorConverter, y: &[f32], cb: &[f32], cr: &[f32], out: [&mut [f32]; 3]) {
    let [r, g, b] = out;
    if c.identity {
        // GBR stored in YUV planes: Y = G, Cb = B, Cr = R, all full scale.
        for i in 0..y.len() {
            r[i] = level((cr[i] - c.y_offset) * c.y_scale);
            g[i] = level((y[i] - c.y_offset) * c.y_scale);
            b[i] = level((cb[i] - c.y_offset) * c.y_scale);
        }
        return;
    }
    for i in 0..y.len() {
        let yn = (y[i] - c.y_offset) * c.y_scale;
        let cbn = (cb[i] - c.c_offset) * c.c_scale;
        let crn = (cr[i] - c.c_offset) * c.c_scale;
        r[i] = level(yn + c.cr_r * crn);
        g[i] = level(yn - c.cb_g * cbn - c.cr_g * crn);
        b[i] = level(yn + c.cb_b * cbn);
    }
}

/// Reads row `y` of `plane`, each sample (8-bit ones widened) through `map`.
fn read_row<T>(img: &YuvImage, plane: usize, y: usize, out: &mut [T], map: impl Fn(u16) -> T) {
    let start = y * img.strides[plane];
    let len = out.len();
    match img.samples {
        YuvSamples::U8(p) => {
            for (o, &s) in out.iter_mut().zip(&p[plane][start..start + len]) {
                *o = map(u16::from(s));
            }
        }
        YuvSamples::U16(p) => {
            let bytes = &p[plane][start..start + 2 * len];
            for (o, s) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = map(u16::from_le_bytes([s[0], s[1]]));
            }
        }
    }
}

/// Reads row `y` of `plane` as 8-bit values: 8-bit samples as they are, wider ones
/// rounded the way swscale's input stage does.
fn read_row_8bit(img: &YuvImage, plane: usize, y: usize, bits: u8, out: &mut [i32]) {
    read_row(img, plane, y, out, |s| match bits {
        8 => i32::from(s),
        _ => swscale::narrow(s, bits),
    });
}

/// Vertical chroma interpolation: `a·(1-w1) + b·w1`.
fn blend_rows(a: &[f32], b: &[f32], w1: f32, out: &mut [f32]) {
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x * (1.0 - w1) + y * w1;
    }
}

/// Horizontal chroma interpolation to luma width: co-sited samples on even columns,
/// the mean of two neighbours on odd columns.
fn upsample_row(c: &[f32], out: &mut [f32]) {
    let last = c.len() - 1;
    for (x, o) in out.iter_mut().enumerate() {
        let i = x / 2;
        *o = if x % 2 == 0 {
            c[i]
        } else {
            0.5 * c[i] + 0.5 * c[(i + 1).min(last)]
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert_one(conv: &ColorConverter, y: u8, u: u8, v: u8) -> [u8; 3] {
        let (py, pu, pv) = ([y], [u], [v]);
        let img = YuvImage {
            width: 1,
            height: 1,
            chroma: Chroma::Yuv444,
            samples: YuvSamples::U8([&py, &pu, &pv]),
            strides: [1, 1, 1],
        };
        let rgb = conv.convert(&img);
        [rgb.data[0], rgb.data[1], rgb.data[2]]
    }

    #[test]
    fn limited_range_extremes() {
        let bt601 = ColorConverter::new(Matrix::Bt601, Range::Limited, 8, ColorMode::Accurate);
        assert_eq!(convert_one(&bt601, 16, 128, 128), [0, 0, 0]);
        assert_eq!(convert_one(&bt601, 235, 128, 128), [255, 255, 255]);
        // BT.601 red: Y 81, Cb 90, Cr 240.
        let red = convert_one(&bt601, 81, 90, 240);
        assert!(red[0] >= 254 && red[1] <= 1 && red[2] <= 1, "{red:?}");
        // BT.709 red: Y 63, Cb 102, Cr 240.
        let bt709 = ColorConverter::new(Matrix::Bt709, Range::Limited, 8, ColorMode::Accurate);
        let red = convert_one(&bt709, 63, 102, 240);
        assert!(red[0] >= 254 && red[1] <= 1 && red[2] <= 1, "{red:?}");
    }

    #[test]
    fn ten_bit_matches_eight_bit_scaled() {
        let c8 = ColorConverter::new(Matrix::Bt709, Range::Limited, 8, ColorMode::Accurate);
        let c10 = ColorConverter::new(Matrix::Bt709, Range::Limited, 10, ColorMode::Accurate);
        let (y, u, v) = (150u16, 100u16, 170u16);
        let s = |v: u16| (v * 4).to_le_bytes();
        let (py, pu, pv) = (s(y), s(u), s(v));
        let img = YuvImage {
            width: 1,
            height: 1,
            chroma: Chroma::Yuv444,
            samples: YuvSamples::U16([&py, &pu, &pv]),
            strides: [2, 2, 2],
        };
        let ten = c10.convert(&img).data;
        assert_eq!(ten, convert_one(&c8, y as u8, u as u8, v as u8).to_vec());
    }

    #[test]
    fn chroma_420_is_upsampled_bilinearly() {
        // 2x2 luma, one chroma sample: every pixel gets the same chroma.
        let (py, pu, pv) = ([128u8; 4], [200u8], [60u8]);
        let img = YuvImage {
            width: 2,
            height: 2,
            chroma: Chroma::Yuv420,
            samples: YuvSamples::U8([&py, &pu, &pv]),
            strides: [2, 1, 1],
        };
        let conv = ColorConverter::new(Matrix::Bt601, Range::Limited, 8, ColorMode::Accurate);
        let rgb = conv.convert(&img).data;
        assert!(rgb.chunks(3).all(|p| p == &rgb[..3]));
    }

    /// A frame through the reference conversion against the same arithmetic written
    /// out per pixel: chroma of its 2x2 block, odd sizes included.
    #[test]
    fn reference_420_uses_each_chroma_sample_for_its_block() {
        let (w, h) = (5usize, 4usize);
        let luma: Vec<u8> = (0..w * h).map(|i| (16 + 11 * i) as u8).collect();
        let cb: Vec<u8> = (0..3 * 2).map(|i| (60 + 31 * i) as u8).collect();
        let cr: Vec<u8> = (0..3 * 2).map(|i| (240 - 29 * i) as u8).collect();
        let img = YuvImage {
            width: w,
            height: h,
            chroma: Chroma::Yuv420,
            samples: YuvSamples::U8([&luma, &cb, &cr]),
            strides: [w, 3, 3],
        };
        let conv = ColorConverter::new(Matrix::Bt709, Range::Limited, 8, ColorMode::Reference);
        let rgb = conv.convert(&img).data;
        let sws = Swscale::new(Matrix::Bt709, Range::Limited);
        for y in 0..h {
            for x in 0..w {
                let c = (y / 2) * 3 + x / 2;
                let want = sws.unscaled(luma[y * w + x], cb[c], cr[c]);
                assert_eq!(
                    rgb[3 * (y * w + x)..3 * (y * w + x) + 3],
                    want,
                    "({x}, {y})"
                );
            }
        }
    }

    #[test]
    fn reference_10bit_interpolates_chroma_vertically() {
        // 2x4 luma of 10-bit grey, chroma rows 512 and 1023: rows blend 1/4 and 3/4.
        let word = |v: u16| v.to_le_bytes();
        let luma: Vec<u8> = (0..8).flat_map(|_| word(400)).collect();
        let cb: Vec<u8> = [512u16, 1023].iter().flat_map(|&v| word(v)).collect();
        let cr: Vec<u8> = [512u16, 512].iter().flat_map(|&v| word(v)).collect();
        let img = YuvImage {
            width: 2,
            height: 4,
            chroma: Chroma::Yuv420,
            samples: YuvSamples::U16([&luma, &cb, &cr]),
            strides: [4, 2, 2],
        };
        let conv = ColorConverter::new(Matrix::Bt601, Range::Limited, 10, ColorMode::Reference);
        let rgb = conv.convert(&img).data;
        let sws = Swscale::new(Matrix::Bt601, Range::Limited);
        // Row 0 uses chroma rows (0, 0); row 1 (0, 1) at 3/4 + 1/4; row 2 (0, 1) at 1/4 + 3/4.
        let blue = |y: usize| rgb[3 * (2 * y) + 2];
        let cb8 = |a: u16, b: u16, wa: i64| {
            let wide = |c: u16| swscale::chroma_15bit(c, c, 10, false);
            swscale::blend_420(wide(a), wide(b), wa)
        };
        assert_eq!(blue(0), sws.table(100, cb8(512, 512, 1024), 128)[2]);
        assert_eq!(blue(1), sws.table(100, cb8(512, 1023, 3072), 128)[2]);
        assert_eq!(blue(2), sws.table(100, cb8(512, 1023, 1024), 128)[2]);
        assert!(blue(0) < blue(1) && blue(1) < blue(2), "{rgb:?}");
    }
}
