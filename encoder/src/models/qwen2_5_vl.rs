//! Qwen2.5-VL (<https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct>): its registry row,
//! its preprocessing (`Qwen2VLImageProcessor` / `Qwen2VLVideoProcessor`), and where its
//! parts live — the config in [`crate::config`], the weight map in [`crate::weights`],
//! the CPU tower in `cpu`, the CUDA tower in [`crate::cuda`].

use std::path::Path;

use super::{build_tower, Family, Preprocessing, ProcessorConfig, Sampling};
use crate::config::VisionConfig;
use crate::error::Result;

/// The registry row.
pub const FAMILY: Family = Family {
    name: "qwen2_5_vl",
    description: "Qwen2.5-VL vision tower (window attention, 2D RoPE, SwiGLU, patch 14, merge 2x2)",
    architectures: &["Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLModel"],
    model_types: &["qwen2_5_vl"],
    presets: &[
        "qwen2.5-vl-3b",
        "qwen2.5-vl-7b",
        "qwen2.5-vl-32b",
        "qwen2.5-vl-72b",
        "tiny",
    ],
    vision_config: VisionConfig::from_json,
    preprocessing,
    tower: build_tower,
};

/// OpenAI CLIP's normalization, the Qwen2-VL processors' default (the processor's
/// decimal constants, as torch rounds them to f32).
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// See [`CLIP_MEAN`].
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_11];

/// The processor's parameters: `video_preprocessor_config.json`, else
/// `preprocessor_config.json`, else the defaults of transformers' `Qwen2VLVideoProcessor`
/// with the tower's patch sizes. (Frame sampling and pixel budgets follow qwen-vl-utils,
/// as vLLM and the model card do, not the processor's own bounds.)
fn preprocessing(dir: &Path, vision: &VisionConfig) -> Result<Preprocessing> {
    let mut p = Preprocessing {
        patch_size: vision.patch_size,
        temporal_patch_size: vision.temporal_patch_size,
        merge_size: vision.spatial_merge_size,
        image_mean: CLIP_MEAN,
        image_std: CLIP_STD,
        sampling: Sampling::QwenVlUtils,
    };
    let names = ["video_preprocessor_config.json", "preprocessor_config.json"];
    if let Some(config) = ProcessorConfig::find(dir, &names)? {
        config.apply_common(&mut p)?;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processor_configs_are_read_when_present() {
        let dir = std::env::temp_dir().join(format!("reel-qwen25-pre-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let vision = crate::init::Arch::Tiny.vision_config();
        assert_eq!(preprocessing(&dir, &vision).unwrap().image_mean, CLIP_MEAN);
        std::fs::write(
            dir.join("preprocessor_config.json"),
            r#"{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
                "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2,
                "min_pixels": 3136, "max_pixels": 12845056}"#,
        )
        .unwrap();
        let p = preprocessing(&dir, &vision).unwrap();
        assert_eq!((p.image_mean, p.image_std), ([0.5; 3], [0.5; 3]));
        std::fs::write(
            dir.join("video_preprocessor_config.json"),
            r#"{"patch_size": "x"}"#,
        )
        .unwrap();
        let err = preprocessing(&dir, &vision).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains("patch_size"), "{err}");
    }
}
