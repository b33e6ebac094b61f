//! Compute/storage dtypes and the element trait the CPU kernels are generic over.

use half::{bf16, f16};

use crate::error::{Error, Result};

/// The dtype a vision tower is loaded and run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE float32.
    F32,
    /// bfloat16 (the released checkpoints' dtype).
    BF16,
    /// IEEE float16.
    F16,
}

impl DType {
    /// Parses `f32`/`float32`, `bf16`/`bfloat16`, `f16`/`float16`/`half` (case-insensitive).
    pub fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "float" | "fp32" => Ok(DType::F32),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            "f16" | "float16" | "half" | "fp16" => Ok(DType::F16),
            _ => Err(Error::UnknownDType(name.to_string())),
        }
    }

    /// The name torch and `config.json` use (`float32`, `bfloat16`, `float16`).
    pub fn torch_name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::BF16 => "bfloat16",
            DType::F16 => "float16",
        }
    }

    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::BF16 | DType::F16 => 2,
        }
    }

    /// The safetensors header name (`F32`, `BF16`, `F16`).
    pub(crate) fn safetensors_name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::BF16 => "BF16",
            DType::F16 => "F16",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::BF16 => "bf16",
            DType::F16 => "f16",
        })
    }
}

/// A floating-point element the CPU kernels work on: widened to f32 to compute, and
/// narrowed back with round-to-nearest-even (what torch's `.to(dtype)` does).
pub(crate) trait Elem: Copy + Send + Sync + 'static + candle_core::WithDType {
    const REEL_DTYPE: DType;
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
    /// Little-endian bytes → element (unaligned source).
    fn from_le(b: &[u8]) -> Self;
    fn write_le(self, out: &mut [u8]);
    /// Rounds an f32 to this dtype and back: the value torch holds after `.to(dtype)`.
    #[inline(always)]
    fn round(v: f32) -> f32 {
        Self::from_f32(v).to_f32()
    }
}

impl Elem for f32 {
    const REEL_DTYPE: DType = DType::F32;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
    #[inline(always)]
    fn from_le(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
    #[inline(always)]
    fn write_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_le_bytes())
    }
    #[inline(always)]
    fn round(v: f32) -> f32 {
        v
    }
}

impl Elem for bf16 {
    const REEL_DTYPE: DType = DType::BF16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    #[inline(always)]
    fn from_le(b: &[u8]) -> Self {
        bf16::from_bits(u16::from_le_bytes([b[0], b[1]]))
    }
    #[inline(always)]
    fn write_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_bits().to_le_bytes())
    }
}

impl Elem for f16 {
    const REEL_DTYPE: DType = DType::F16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    #[inline(always)]
    fn from_le(b: &[u8]) -> Self {
        f16::from_bits(u16::from_le_bytes([b[0], b[1]]))
    }
    #[inline(always)]
    fn write_le(self, out: &mut [u8]) {
        out.copy_from_slice(&self.to_bits().to_le_bytes())
    }
}
