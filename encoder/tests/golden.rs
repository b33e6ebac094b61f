//! Parity with HF transformers 5.17 on the committed tiny Qwen2.5-VL tower.
//!
//! Reference: tests/data/golden/encoder.safetensors, written by
//! tests/golden/encoder/make_encoder_golden.py (`Qwen2_5_VisionTransformerPretrainedModel`,
//! attn_implementation="sdpa", outputs in float32 and in bfloat16).
//!
//! Error metric, per case: `max_i |reel_i - hf_i| / max_i |hf_i|` (absolute error relative
//! to the largest reference magnitude). Bounds: f32 ≤ 1e-4, bf16 ≤ 2e-2.

mod common;

use common::*;
use reel_encoder::init::Arch;
use reel_encoder::{DType, VisionTower};

/// Runs every golden case in `dtype` on the CPU against the reference `which`.
fn parity(dtype: DType, which: &str, bound: f64) {
    let tower = VisionTower::load(&tiny_dir(), dtype).unwrap();
    golden_parity(&tower, which, bound);
}

#[test]
fn parity_f32() {
    parity(DType::F32, "f32", 1e-4);
}

#[test]
fn parity_bf16() {
    parity(DType::BF16, "bf16", 2e-2);
}

/// f16 is not in the HF goldens; it must stay close to the f32 reference.
#[test]
fn f16_close_to_f32_reference() {
    parity(DType::F16, "f32", 2e-2);
}

#[test]
fn committed_config_matches_arch_tiny() {
    let text = std::fs::read_to_string(tiny_dir().join("config.json")).unwrap();
    let committed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(committed, Arch::Tiny.config_json(DType::BF16));
    let cfg = reel_encoder::ModelSpec::read(&tiny_dir()).unwrap().vision;
    assert_eq!(cfg, Arch::Tiny.vision_config());
}

/// Encoding a batch equals encoding its items one by one (items never attend to each other).
#[test]
fn batch_equals_separate_items() {
    assert_batch_equals_separate(&VisionTower::load(&tiny_dir(), DType::F32).unwrap());
}

/// Every temporal slice of a video is encoded independently (full attention is per slice,
/// windows never cross slices, RoPE is spatial): encoding slice by slice, as a streaming
/// encoder does, gives the rows of encoding the whole video at once.
#[test]
fn slices_encode_independently() {
    let tower = VisionTower::load(&tiny_dir(), DType::F32).unwrap();
    assert_slices_independent(&tower);
}
