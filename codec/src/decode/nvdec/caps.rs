//! What the GPU's decoders accept (cuvidGetDecoderCaps).

use super::api::{check, nvcuvid};
use super::ffi;
use crate::stream::{Chroma, Codec, StreamInfo};
use crate::Error;

/// Limits of the NVDEC engines for one codec, chroma format and bit depth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DecoderCaps {
    pub supported: bool,
    /// Number of NVDEC engines on the GPU.
    pub engines: u32,
    pub max_width: u32,
    pub max_height: u32,
    pub min_width: u32,
    pub min_height: u32,
    /// Largest picture in 16×16 macroblocks.
    pub max_mb_count: u32,
    /// Bit mask of cudaVideoSurfaceFormat values the decoder can output.
    pub output_formats: u16,
}

pub(crate) fn codec_of(codec: Codec) -> ffi::cudaVideoCodec {
    match codec {
        Codec::H264 => ffi::cudaVideoCodec::cudaVideoCodec_H264,
        Codec::Hevc => ffi::cudaVideoCodec::cudaVideoCodec_HEVC,
        Codec::Vp9 => ffi::cudaVideoCodec::cudaVideoCodec_VP9,
        Codec::Av1 => ffi::cudaVideoCodec::cudaVideoCodec_AV1,
    }
}

pub(crate) fn chroma_of(chroma: Chroma) -> ffi::cudaVideoChromaFormat {
    match chroma {
        Chroma::Monochrome => ffi::cudaVideoChromaFormat::cudaVideoChromaFormat_Monochrome,
        Chroma::Yuv420 => ffi::cudaVideoChromaFormat::cudaVideoChromaFormat_420,
        Chroma::Yuv422 => ffi::cudaVideoChromaFormat::cudaVideoChromaFormat_422,
        Chroma::Yuv444 => ffi::cudaVideoChromaFormat::cudaVideoChromaFormat_444,
    }
}

/// Queries the decoder caps. The GPU's CUDA context must be current on this thread.
pub fn query(codec: Codec, chroma: Chroma, bit_depth: u8) -> Result<DecoderCaps, Error> {
    let lib = nvcuvid().map_err(|e| Error::DecoderUnavailable(e.to_string()))?;
    // SAFETY: CUVIDDECODECAPS is plain integers (all-zero is a valid value), and
    // cuvidGetDecoderCaps only reads and writes the struct it is given; the caller has the
    // GPU's CUDA context current (this function's documented precondition).
    let caps = unsafe {
        let mut caps: ffi::CUVIDDECODECAPS = std::mem::zeroed();
        caps.eCodecType = codec_of(codec);
        caps.eChromaFormat = chroma_of(chroma);
        caps.nBitDepthMinus8 = u32::from(bit_depth.saturating_sub(8));
        check((lib.get_decoder_caps)(&mut caps), "cuvidGetDecoderCaps")
            .map_err(Error::DecoderUnavailable)?;
        caps
    };
    Ok(DecoderCaps {
        supported: caps.bIsSupported != 0,
        engines: u32::from(caps.nNumNVDECs),
        max_width: caps.nMaxWidth,
        max_height: caps.nMaxHeight,
        min_width: u32::from(caps.nMinWidth),
        min_height: u32::from(caps.nMinHeight),
        max_mb_count: caps.nMaxMBCount,
        output_formats: caps.nOutputFormatMask,
    })
}

/// Checks that the GPU can decode a stream; the error names the limit it breaks.
pub fn check_stream(pool: &super::DecoderPool, info: &StreamInfo) -> Result<DecoderCaps, Error> {
    let what = format!(
        "{}-bit {} {}",
        info.bit_depth,
        info.chroma.name(),
        info.codec
    );
    let caps = pool.caps(info.codec, info.chroma, info.bit_depth)?;
    let unsupported = |limit: String| {
        Err(Error::Unsupported(format!(
            "NVDEC cannot decode this stream: {limit}"
        )))
    };
    if !caps.supported {
        return unsupported(format!("{what} is not supported by this GPU's decoders"));
    }
    let (w, h) = (
        info.coded_width.max(info.width),
        info.coded_height.max(info.height),
    );
    if w > caps.max_width || h > caps.max_height {
        return unsupported(format!(
            "{w}x{h} exceeds the {}x{} maximum for {what}",
            caps.max_width, caps.max_height
        ));
    }
    if w < caps.min_width || h < caps.min_height {
        return unsupported(format!(
            "{w}x{h} is below the {}x{} minimum for {what}",
            caps.min_width, caps.min_height
        ));
    }
    let mbs = w.div_ceil(16) * h.div_ceil(16);
    if mbs > caps.max_mb_count {
        return unsupported(format!(
            "{mbs} macroblocks exceed the {} maximum",
            caps.max_mb_count
        ));
    }
    Ok(caps)
}
