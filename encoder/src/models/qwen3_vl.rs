//! The Qwen3-VL tower family (transformers 5.17): Qwen3-VL and Qwen3-VL-MoE
//! (`Qwen3VLVisionModel`, with deepstack mergers) and Qwen3.5, Qwen3.5-MoE and Qwen4-Exp
//! (`Qwen3_5VisionModel` and its twins: the same tower without deepstack). All of them
//! use `Qwen3VLVideoProcessor`.
//!
//! This module reads their folders: the vision config (5.17's class defaults for absent
//! keys, as transformers does) and the video processor's parameters. The tower is built
//! from the [`TowerKind::Qwen3Vl`] blocks of the shared CPU and CUDA towers; the weight
//! names are in [`crate::weights`]. See docs/qwen3-vl-blueprint.md for the checked facts.

use std::path::Path;

use serde_json::Value;

use super::{build_tower, Family, Preprocessing, ProcessorConfig, Qwen3VideoSampling, Sampling};
use crate::config::{opt_f64, opt_usize, vision_section, TowerKind, VisionConfig};
use crate::error::{Error, Result};

/// Qwen3-VL and Qwen3-VL-MoE: the tower with deepstack mergers.
pub const FAMILY: Family = Family {
    name: "qwen3_vl",
    description: "Qwen3-VL vision tower (LayerNorm, GELU-tanh, learned + 2D RoPE positions, deepstack, patch 16, merge 2x2)",
    architectures: &[
        "Qwen3VLForConditionalGeneration",
        "Qwen3VLModel",
        "Qwen3VLMoeForConditionalGeneration",
        "Qwen3VLMoeModel",
    ],
    model_types: &["qwen3_vl", "qwen3_vl_moe"],
    presets: &["qwen3-vl-2b", "qwen3-vl-4b", "qwen3-vl-8b", "qwen3-vl-32b"],
    vision_config: vision_config_with_deepstack,
    preprocessing,
    tower: build_tower,
};

/// Qwen3.5, Qwen3.5-MoE and Qwen4-Exp: the same tower without deepstack.
pub const FAMILY_WITHOUT_DEEPSTACK: Family = Family {
    name: "qwen3_5",
    description: "Qwen3.5 / Qwen4-Exp vision tower (the Qwen3-VL tower without deepstack)",
    architectures: &[
        "Qwen3_5ForConditionalGeneration",
        "Qwen3_5Model",
        "Qwen3_5MoeForConditionalGeneration",
        "Qwen3_5MoeModel",
        "Qwen4ExpForConditionalGeneration",
        "Qwen4ExpModel",
    ],
    model_types: &["qwen3_5", "qwen3_5_moe", "qwen4_exp"],
    presets: &["qwen3.5-27b", "qwen3.5-35b-a3b"],
    vision_config: vision_config_without_deepstack,
    preprocessing,
    tower: build_tower,
};

/// transformers 5.17's `Qwen3VLVisionConfig.deepstack_visual_indexes` default.
const DEFAULT_DEEPSTACK: [usize; 3] = [8, 16, 24];

fn vision_config_with_deepstack(config: &Value) -> Result<VisionConfig> {
    vision_config(config, true)
}

fn vision_config_without_deepstack(config: &Value) -> Result<VisionConfig> {
    vision_config(config, false)
}

/// The tower's hyper-parameters from `config.json` (the keys under `vision_config`, or a
/// bare vision config), 5.17's defaults for absent keys. Towers without deepstack ignore
/// `deepstack_visual_indexes` (Qwen3.5 checkpoints ship `[]`; its config class has no
/// such field).
fn vision_config(config: &Value, deepstack: bool) -> Result<VisionConfig> {
    let v = vision_section(config)?;
    let usize_or = |key: &'static str, default: usize| -> Result<usize> {
        Ok(opt_usize(v, key)?.unwrap_or(default))
    };
    let deepstack_visual_indexes = match (deepstack, v.get("deepstack_visual_indexes")) {
        (false, _) => Vec::new(),
        (true, None | Some(Value::Null)) => DEFAULT_DEEPSTACK.to_vec(),
        (true, Some(Value::Array(a))) => a
            .iter()
            .map(|x| {
                x.as_u64().map(|x| x as usize).ok_or(Error::InvalidConfig {
                    key: "deepstack_visual_indexes",
                    message: format!("not a non-negative integer: {x}"),
                })
            })
            .collect::<Result<_>>()?,
        (true, Some(other)) => {
            return Err(Error::InvalidConfig {
                key: "deepstack_visual_indexes",
                message: format!("not an array: {other}"),
            })
        }
    };
    let rope = v.get("rope_parameters").filter(|r| !r.is_null());
    if let Some(kind) = rope
        .and_then(|r| r.get("rope_type"))
        .and_then(Value::as_str)
    {
        if kind != "axial" {
            return Err(Error::InvalidConfig {
                key: "rope_parameters",
                message: format!("rope_type `{kind}`: the vision tower's rotary is `axial`"),
            });
        }
    }
    let rope_theta = match rope.and_then(|r| r.get("rope_theta")) {
        Some(t) => t.as_f64().ok_or(Error::InvalidConfig {
            key: "rope_theta",
            message: format!("not a number: {t}"),
        })?,
        None => opt_f64(v, "rope_theta")?.unwrap_or(10000.0),
    };
    let cfg = VisionConfig {
        kind: TowerKind::Qwen3Vl,
        depth: usize_or("depth", 27)?,
        hidden_size: usize_or("hidden_size", 1152)?,
        num_heads: match opt_usize(v, "num_heads")? {
            Some(n) => n,
            None => usize_or("num_attention_heads", 16)?,
        },
        intermediate_size: usize_or("intermediate_size", 4304)?,
        out_hidden_size: usize_or("out_hidden_size", 3584)?,
        patch_size: usize_or("patch_size", 16)?,
        temporal_patch_size: usize_or("temporal_patch_size", 2)?,
        spatial_merge_size: usize_or("spatial_merge_size", 2)?,
        window_size: 0,
        fullatt_block_indexes: Vec::new(),
        in_channels: usize_or("in_channels", 3)?,
        hidden_act: match v.get("hidden_act") {
            None | Some(Value::Null) => "gelu_pytorch_tanh".into(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(Error::InvalidConfig {
                    key: "hidden_act",
                    message: format!("not a string: {other}"),
                })
            }
        },
        norm_eps: 1e-6,
        tokens_per_second: 2.0,
        rope_theta,
        num_position_embeddings: usize_or("num_position_embeddings", 2304)?,
        deepstack_visual_indexes,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// `Qwen3VLVideoProcessor`'s parameters: the folder's `video_preprocessor_config.json`
/// over 5.17's class defaults (patch geometry from the tower).
fn preprocessing(dir: &Path, vision: &VisionConfig) -> Result<Preprocessing> {
    let mut sampling = Qwen3VideoSampling {
        min_pixels: 128 * 32 * 32,
        max_pixels: 32 * 32 * 768,
        fps: 2.0,
        min_frames: 4,
        max_frames: 768,
        cap_pixels_per_frame: false,
        max_video_tokens: 768,
    };
    let mut p = Preprocessing {
        patch_size: vision.patch_size,
        temporal_patch_size: vision.temporal_patch_size,
        merge_size: vision.spatial_merge_size,
        image_mean: [0.5; 3],
        image_std: [0.5; 3],
        sampling: Sampling::QwenVlUtils,
    };
    if let Some(config) = ProcessorConfig::find(dir, &["video_preprocessor_config.json"])? {
        config.apply_common(&mut p)?;
        let s = &mut sampling;
        if let Some(v) = config.usize("size.shortest_edge")? {
            s.min_pixels = v as u64;
        }
        if let Some(v) = config.usize("size.longest_edge")? {
            s.max_pixels = v as u64;
        }
        if let Some(v) = config.f64("fps")? {
            s.fps = v;
        }
        if let Some(v) = config.usize("min_frames")? {
            s.min_frames = v;
        }
        if let Some(v) = config.usize("max_frames")? {
            s.max_frames = v;
        }
        if let Some(v) = config.bool("cap_pixels_per_frame")? {
            s.cap_pixels_per_frame = v;
        }
        if let Some(v) = config.usize("max_video_tokens")? {
            s.max_video_tokens = v;
        }
    }
    p.sampling = Sampling::Qwen3Vl(sampling);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_keys_take_the_5_17_defaults() {
        let c = vision_config(&json!({"vision_config": {"out_hidden_size": 4096}}), true).unwrap();
        assert_eq!(
            (c.depth, c.hidden_size, c.num_heads, c.intermediate_size),
            (27, 1152, 16, 4304)
        );
        assert_eq!(
            (c.head_dim(), c.patch_dim(), c.output_width()),
            (72, 1536, 4 * 4096)
        );
        assert_eq!(c.deepstack_visual_indexes, DEFAULT_DEEPSTACK);
        assert_eq!(c.position_grid_side(), 48);
        let c = vision_config(
            &json!({"vision_config": {"deepstack_visual_indexes": [], "out_hidden_size": 5120}}),
            false,
        )
        .unwrap();
        assert!(c.deepstack_visual_indexes.is_empty());
        assert_eq!(c.output_width(), 5120);
    }

    #[test]
    fn bad_values_are_refused() {
        for (vision, key) in [
            (json!({"hidden_act": "silu"}), "hidden_act"),
            (
                json!({"num_position_embeddings": 2300}),
                "num_position_embeddings",
            ),
            (
                json!({"deepstack_visual_indexes": [8, 30]}),
                "deepstack_visual_indexes",
            ),
            (
                json!({"rope_parameters": {"rope_type": "default"}}),
                "rope_parameters",
            ),
        ] {
            let e = vision_config(&json!({ "vision_config": vision }), true).unwrap_err();
            assert!(
                matches!(e, Error::InvalidConfig { key: k, .. } if k == key),
                "{e}"
            );
        }
    }

    #[test]
    fn the_video_processor_config_is_read() {
        let dir = std::env::temp_dir().join(format!("reel-qwen3-pre-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vision = vision_config(&json!({}), true).unwrap();
        let p = preprocessing(&dir, &vision).unwrap();
        assert_eq!((p.patch_size, p.image_mean), (16, [0.5; 3]));
        let Sampling::Qwen3Vl(s) = &p.sampling else {
            panic!("{p:?}")
        };
        assert_eq!((s.min_pixels, s.max_pixels), (131072, 786432));
        std::fs::write(
            dir.join("video_preprocessor_config.json"),
            r#"{"size": {"shortest_edge": 4096, "longest_edge": 25165824}, "fps": 2,
                "min_frames": 4, "max_frames": 768, "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5], "patch_size": 16, "cap_pixels_per_frame": true}"#,
        )
        .unwrap();
        let p = preprocessing(&dir, &vision).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let Sampling::Qwen3Vl(s) = &p.sampling else {
            panic!("{p:?}")
        };
        assert_eq!((s.min_pixels, s.max_pixels), (4096, 25165824));
        assert!(s.cap_pixels_per_frame);
    }
}
