//! What a demuxer reports about a video stream: its codec, geometry, colour and timing.

use serde::Serialize;

/// Compressed video formats reel knows about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    H264,
    Hevc,
    Vp9,
    Av1,
}

impl Codec {
    /// Short lowercase name, as ffprobe spells it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::Hevc => "hevc",
            Codec::Vp9 => "vp9",
            Codec::Av1 => "av1",
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Chroma subsampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Chroma {
    #[serde(rename = "400")]
    Monochrome,
    #[serde(rename = "420")]
    Yuv420,
    #[serde(rename = "422")]
    Yuv422,
    #[serde(rename = "444")]
    Yuv444,
}

impl Chroma {
    /// From the `chroma_format_idc` of H.264/HEVC sequence parameter sets.
    pub fn from_idc(idc: u32) -> Option<Self> {
        Some(match idc {
            0 => Chroma::Monochrome,
            1 => Chroma::Yuv420,
            2 => Chroma::Yuv422,
            3 => Chroma::Yuv444,
            _ => return None,
        })
    }

    /// "420", "422", ...
    pub fn name(self) -> &'static str {
        match self {
            Chroma::Monochrome => "400",
            Chroma::Yuv420 => "420",
            Chroma::Yuv422 => "422",
            Chroma::Yuv444 => "444",
        }
    }
}

/// YUV→RGB matrix (ITU-T H.273 MatrixCoefficients), reduced to those that matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Matrix {
    /// Rec. ITU-R BT.601 (H.273 values 5 and 6). Also used when the stream says nothing.
    Bt601,
    Bt709,
    /// BT.2020 non-constant luminance (values 9 and 10).
    Bt2020,
    Smpte240m,
    Fcc,
    /// RGB stored as YUV planes (GBR, value 0).
    Identity,
}

impl Matrix {
    /// Maps an H.273 MatrixCoefficients value; `None` for "unspecified" (2), reserved
    /// and values reel does not implement.
    pub fn from_h273(value: u32) -> Option<Self> {
        Some(match value {
            0 => Matrix::Identity,
            1 => Matrix::Bt709,
            4 => Matrix::Fcc,
            5 | 6 => Matrix::Bt601,
            7 => Matrix::Smpte240m,
            9 | 10 => Matrix::Bt2020,
            _ => return None,
        })
    }

    /// Luma weights (Kr, Kb) of the matrix.
    pub fn kr_kb(self) -> (f64, f64) {
        match self {
            Matrix::Bt601 => (0.299, 0.114),
            Matrix::Bt709 => (0.2126, 0.0722),
            Matrix::Bt2020 => (0.2627, 0.0593),
            Matrix::Smpte240m => (0.212, 0.087),
            Matrix::Fcc => (0.30, 0.11),
            Matrix::Identity => (0.0, 0.0),
        }
    }
}

/// Sample value range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Range {
    /// "TV" range: luma 16..235, chroma 16..240 (scaled for higher bit depths).
    Limited,
    /// "PC" range: 0..255.
    Full,
}

/// Colour description as signalled by the container or the bitstream (H.273 codes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ColorInfo {
    pub matrix: Option<u32>,
    pub primaries: Option<u32>,
    pub transfer: Option<u32>,
    pub full_range: Option<bool>,
    /// 4:2:0 chroma sample location (H.273 ChromaSampleLocType of the top field: 0 left,
    /// 1 centre, 2 top-left, 3 top, 4 bottom-left, 5 bottom), from H.264/HEVC VUI.
    pub chroma_location: Option<u32>,
}

impl ColorInfo {
    /// Fills fields this description leaves open from `other`.
    pub fn or(self, other: ColorInfo) -> ColorInfo {
        ColorInfo {
            matrix: self.matrix.or(other.matrix),
            primaries: self.primaries.or(other.primaries),
            transfer: self.transfer.or(other.transfer),
            full_range: self.full_range.or(other.full_range),
            chroma_location: self.chroma_location.or(other.chroma_location),
        }
    }

    /// The matrix used for conversion: the signalled one, else BT.601 — the same default
    /// as FFmpeg's swscale, and so as the decord/torchvision/PyAV readers that
    /// Qwen2.5-VL's preprocessing was built on.
    pub fn conversion_matrix(&self) -> Matrix {
        self.matrix
            .and_then(|m| match m {
                // 2 = unspecified: fall through to the default.
                2 => None,
                v => Matrix::from_h273(v),
            })
            .unwrap_or(Matrix::Bt601)
    }

    /// The range used for conversion: signalled, else limited.
    pub fn conversion_range(&self) -> Range {
        match self.full_range {
            Some(true) => Range::Full,
            _ => Range::Limited,
        }
    }
}

/// Clockwise rotation to apply for display (from the MP4 display matrix). Serialized as
/// a number of degrees clockwise (0, 90, 180, 270); ffprobe's `rotation` is
/// counter-clockwise, so ffprobe's -90 is reel's 90.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "u32")]
pub enum Rotation {
    #[default]
    None,
    Cw90,
    Cw180,
    Cw270,
}

impl From<Rotation> for u32 {
    fn from(r: Rotation) -> u32 {
        r.degrees()
    }
}

impl Rotation {
    /// Degrees clockwise.
    pub fn degrees(self) -> u32 {
        match self {
            Rotation::None => 0,
            Rotation::Cw90 => 90,
            Rotation::Cw180 => 180,
            Rotation::Cw270 => 270,
        }
    }

    /// True when width and height swap.
    pub fn is_transposed(self) -> bool {
        matches!(self, Rotation::Cw90 | Rotation::Cw270)
    }
}

/// A rational number (time bases, frame rates).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Rational {
    pub num: u32,
    pub den: u32,
}

impl Rational {
    pub fn new(num: u32, den: u32) -> Self {
        Self { num, den }
    }

    pub fn as_f64(self) -> f64 {
        if self.den == 0 {
            0.0
        } else {
            f64::from(self.num) / f64::from(self.den)
        }
    }
}

/// Everything known about a video stream without decoding it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StreamInfo {
    pub codec: Codec,
    /// Container name: "mp4", "matroska", "annexb".
    pub container: &'static str,
    /// Index of the track among the container's tracks.
    pub track_index: u32,
    /// Codec profile (profile_idc / general_profile_idc / VP9 and AV1 profile).
    pub profile: Option<u32>,
    /// Codec level (level_idc / general_level_idc / seq_level_idx), where known.
    pub level: Option<u32>,
    pub bit_depth: u8,
    pub chroma: Chroma,
    /// Coded (decoded surface) size, in luma samples.
    pub coded_width: u32,
    pub coded_height: u32,
    /// Visible size after cropping, before rotation.
    pub width: u32,
    pub height: u32,
    /// Crop of the visible area inside the coded picture (left, top).
    pub crop_left: u32,
    pub crop_top: u32,
    pub rotation: Rotation,
    pub color: ColorInfo,
    /// Unit of packet timestamps in seconds.
    pub time_base: Rational,
    /// Average frame rate: frames / duration.
    pub frame_rate: f64,
    /// Presentation duration in seconds.
    pub duration: f64,
    /// Number of frames (packets) in the stream.
    pub frame_count: usize,
}

impl StreamInfo {
    /// Whether 4:2:0 chroma is sited on the left luma column (left, top-left or
    /// bottom-left), as FFmpeg's decoders report it: the signalled location, else left for
    /// H.264 and HEVC (their default) and unsited for VP9 and AV1. Only the reference
    /// conversion of wide samples depends on it (the vertical part of top and bottom
    /// siting is not modelled).
    pub fn chroma_left_sited(&self) -> bool {
        match self.color.chroma_location {
            Some(location) => matches!(location, 0 | 2 | 4),
            None => matches!(self.codec, Codec::H264 | Codec::Hevc),
        }
    }

    /// Size of frames as displayed, after rotation: (height, width).
    pub fn display_size(&self) -> (u32, u32) {
        if self.rotation.is_transposed() {
            (self.width, self.height)
        } else {
            (self.height, self.width)
        }
    }
}

/// One compressed frame, located in the source but not read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Packet {
    /// Presentation timestamp in `time_base` units.
    pub pts: i64,
    /// Decode timestamp in `time_base` units.
    pub dts: i64,
    /// Byte offset of the payload in the source.
    pub offset: u64,
    /// Payload size in bytes.
    pub size: u32,
    /// Decoding can start here (sync sample, IDR/IRAP, VP9/AV1 key frame).
    pub keyframe: bool,
}
