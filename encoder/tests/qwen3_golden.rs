//! Parity with HF transformers 5.17 on the committed tiny Qwen3-VL-family towers, on the
//! CPU: `qwen3_vl` (Qwen3VLVisionModel, head_dim 64, deepstack after blocks 0 and 1) and
//! `qwen3_5` (Qwen3_5VisionModel, head_dim 72, no deepstack).
//!
//! Reference: tests/data/golden/qwen3_vl_encoder.safetensors, written by
//! tests/golden/encoder/make_qwen3_vl_golden.py. Bounds: f32 ≤ 1e-4 of the largest
//! reference magnitude; bf16 ≤ twice HF's own bf16 error on the same case.

mod common;

use common::*;
use reel_encoder::{DType, ModelSpec, VisionTower};

#[test]
fn qwen3_vl_parity_f32() {
    let tower = VisionTower::load(&qwen3_dir("qwen3_vl"), DType::F32).unwrap();
    qwen3_golden_parity(&tower, "qwen3_vl");
}

#[test]
fn qwen3_vl_parity_bf16() {
    let tower = VisionTower::load(&qwen3_dir("qwen3_vl"), DType::BF16).unwrap();
    qwen3_golden_parity(&tower, "qwen3_vl");
}

#[test]
fn qwen3_5_parity_f32() {
    let tower = VisionTower::load(&qwen3_dir("qwen3_5"), DType::F32).unwrap();
    qwen3_golden_parity(&tower, "qwen3_5");
}

#[test]
fn qwen3_5_parity_bf16() {
    let tower = VisionTower::load(&qwen3_dir("qwen3_5"), DType::BF16).unwrap();
    qwen3_golden_parity(&tower, "qwen3_5");
}

/// The registry reads the folders as their families, with the output layout vLLM takes.
#[test]
fn folders_select_their_family_and_layout() {
    let spec = ModelSpec::read(&qwen3_dir("qwen3_vl")).unwrap();
    assert_eq!(spec.family.name, "qwen3_vl");
    assert_eq!(spec.vision.head_dim(), 64);
    assert_eq!(spec.outputs.width(), 3 * 64);
    let names: Vec<&str> = spec.outputs.extra.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["deepstack0", "deepstack1"]);
    let spec = ModelSpec::read(&qwen3_dir("qwen3_5")).unwrap();
    assert_eq!(spec.family.name, "qwen3_5");
    assert_eq!((spec.vision.head_dim(), spec.outputs.width()), (72, 64));
}

#[test]
fn batch_equals_separate_items() {
    for name in ["qwen3_vl", "qwen3_5"] {
        assert_batch_equals_separate(&VisionTower::load(&qwen3_dir(name), DType::F32).unwrap());
    }
}

#[test]
fn slices_encode_independently() {
    for name in ["qwen3_vl", "qwen3_5"] {
        assert_slices_independent(&VisionTower::load(&qwen3_dir(name), DType::F32).unwrap());
    }
}
