//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The committed tiny model folder.
pub fn tiny_dir() -> PathBuf {
    repo().join("tests/data/tiny-qwen2.5-vl")
}

/// The golden file written by tests/golden/encoder/make_encoder_golden.py.
pub fn golden_path() -> PathBuf {
    repo().join("tests/data/golden/encoder.safetensors")
}

/// The golden input generator (see make_encoder_golden.py `pixel_values`):
/// value(i) = (mix(seed * 0x9E3779B97F4A7C15 + i) >> 40) * 2^-22 - 2.
pub fn pixel_values(seed: u64, rows: usize, cols: usize) -> Vec<f32> {
    let base = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..(rows * cols) as u64)
        .map(|i| {
            let mut z = base.wrapping_add(i);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 * (1.0 / 4_194_304.0) - 2.0
        })
        .collect()
}

/// One tensor read from a safetensors file.
#[derive(Clone)]
pub struct Raw {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads every tensor of a safetensors file.
pub fn read_all(path: &Path) -> BTreeMap<String, Raw> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                Raw {
                    dtype: v.dtype(),
                    shape: v.shape().to_vec(),
                    data: v.data().to_vec(),
                },
            )
        })
        .collect()
}

/// Writes tensors to a safetensors file.
pub fn write_all(path: &Path, tensors: &BTreeMap<String, Raw>) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                TensorView::new(r.dtype, r.shape.clone(), &r.data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Reads f32 tensor data.
pub fn f32s(r: &Raw) -> Vec<f32> {
    assert_eq!(r.dtype, Dtype::F32);
    r.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Copies the tiny model's config.json into `dir`.
pub fn copy_config(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(tiny_dir().join("config.json"), dir.join("config.json")).unwrap();
}

/// max|a - b| / max|b|.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
    let d = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    d / scale
}
