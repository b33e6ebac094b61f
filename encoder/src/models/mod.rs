//! The model registry: a Hugging Face folder's `config.json` (`architectures`, else
//! `model_type`) selects a model family, and the family reads everything else.
//!
//! One immutable table, [`FAMILIES`]; no run-time registration. A second family is one
//! module beside [`qwen2_5_vl`] plus its row (and, until towers share a trait, a variant of
//! the crate's tower enum). Each family owns its config, its weight map, its preprocessing
//! parameters, its towers and its output layout; the rest of reel only sees [`ModelSpec`]
//! and [`crate::VisionTower`].

pub mod qwen2_5_vl;
pub mod qwen3_vl;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cudarc::driver::CudaContext;
use serde_json::Value;

use crate::config::VisionConfig;
use crate::cpu::CpuTower;
use crate::cuda::CudaTower;
use crate::error::{Error, Result};
use crate::weights::VisionWeights;
use crate::{Backend, DType};

/// One model family: the names that select it and how to read its folders.
pub struct Family {
    /// reel's name of the family (`qwen2_5_vl`), shown by `reel model list`.
    pub name: &'static str,
    /// What it is, for listings.
    pub description: &'static str,
    /// HF `architectures` entries that select it (exact strings).
    pub architectures: &'static [&'static str],
    /// HF `model_type` values that select it when no architecture matches.
    pub model_types: &'static [&'static str],
    /// Sizes `reel model init --arch` can write (`qwen2.5-vl-7b`, …).
    pub presets: &'static [&'static str],
    /// Reads the vision config from `config.json`'s value.
    pub vision_config: fn(&Value) -> Result<VisionConfig>,
    /// The preprocessing the model was trained with, from the folder's preprocessor
    /// configs when present (else the family's defaults).
    pub preprocessing: fn(&Path, &VisionConfig) -> Result<Preprocessing>,
    /// Loads the family's weights and builds its tower: on the GPU of the context when
    /// one is given, else on the CPU.
    pub(crate) tower: fn(&ModelSpec, DType, Option<Arc<CudaContext>>) -> Result<Backend>,
}

/// Every family reel runs.
pub static FAMILIES: &[Family] = &[
    qwen2_5_vl::FAMILY,
    qwen3_vl::FAMILY,
    qwen3_vl::FAMILY_WITHOUT_DEEPSTACK,
];

/// The weights of `spec`'s folder in `dtype`, as the CPU (candle) or CUDA tower: every
/// family's towers are built from the blocks its [`crate::config::TowerKind`] names.
pub(crate) fn build_tower(
    spec: &ModelSpec,
    dtype: DType,
    ctx: Option<Arc<CudaContext>>,
) -> Result<Backend> {
    let cfg = &spec.vision;
    let weights = VisionWeights::load(&spec.dir, cfg, dtype)?;
    Ok(match ctx {
        Some(ctx) => Backend::Cuda(Box::new(CudaTower::new(cfg.clone(), dtype, weights, ctx)?)),
        None => Backend::Cpu(Box::new(CpuTower::new(cfg.clone(), dtype, weights)?)),
    })
}

/// What reel needs to know of a model folder, read once.
#[derive(Clone, Debug)]
pub struct ModelSpec {
    /// The folder.
    pub dir: PathBuf,
    /// The family its config selected.
    pub family: &'static Family,
    /// The architecture (or model type) that selected it.
    pub architecture: String,
    /// The vision tower's hyper-parameters.
    pub vision: VisionConfig,
    /// How frames are prepared for it.
    pub preprocessing: Preprocessing,
    /// What the tower outputs.
    pub outputs: OutputLayout,
}

/// The numerics of a model's image/video processor.
#[derive(Clone, Debug, PartialEq)]
pub struct Preprocessing {
    /// Spatial patch side in pixels.
    pub patch_size: usize,
    /// Frames per temporal patch.
    pub temporal_patch_size: usize,
    /// Side of the square of patches merged into one token.
    pub merge_size: usize,
    /// Per-channel mean and std of the normalization (after rescaling to [0, 1]).
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// How frames are sampled from a video and sized.
    pub sampling: Sampling,
}

/// The frame-sampling and sizing rules of a model's video processor.
#[derive(Clone, Debug, PartialEq)]
pub enum Sampling {
    /// qwen-vl-utils 0.0.14's `fetch_video` (what Qwen2.5-VL's model card and vLLM use).
    QwenVlUtils,
    /// transformers' `Qwen3VLVideoProcessor`: frames from the video's metadata, pixel
    /// budgets over t·h·w.
    Qwen3Vl(Qwen3VideoSampling),
}

/// `Qwen3VLVideoProcessor`'s parameters (transformers 5.17 class defaults, overridden
/// by the folder's `video_preprocessor_config.json`).
#[derive(Clone, Debug, PartialEq)]
pub struct Qwen3VideoSampling {
    /// `size.shortest_edge`: the least pixels over t·h·w (131072).
    pub min_pixels: u64,
    /// `size.longest_edge`: the most pixels over t·h·w (786432).
    pub max_pixels: u64,
    /// Frames per second to sample (2).
    pub fps: f64,
    pub min_frames: usize,
    pub max_frames: usize,
    /// Caps the pixels per frame at `max_video_tokens` merged tokens (5.17: off unless
    /// set; transformers says the default becomes on in 5.22).
    pub cap_pixels_per_frame: bool,
    pub max_video_tokens: usize,
}

/// A processor config file of a model folder, with typed getters that name the file
/// and the key in their errors.
pub(crate) struct ProcessorConfig {
    path: PathBuf,
    value: Value,
}

impl ProcessorConfig {
    /// The first of `names` that exists in `dir`, parsed; `None` if none does.
    pub(crate) fn find(dir: &Path, names: &[&str]) -> Result<Option<Self>> {
        let Some(path) = names.iter().map(|n| dir.join(n)).find(|p| p.is_file()) else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let value = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(Some(Self { path, value }))
    }

    fn bad(&self, key: &str, v: &Value) -> Error {
        Error::Json {
            path: self.path.clone(),
            message: format!("`{key}` is not what the model's processor takes: {v}"),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        key.split('.')
            .try_fold(&self.value, |v, k| v.get(k))
            .filter(|v| !v.is_null())
    }

    pub(crate) fn usize(&self, key: &str) -> Result<Option<usize>> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| self.bad(key, v))
            })
            .transpose()
    }

    pub(crate) fn f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| v.as_f64().ok_or_else(|| self.bad(key, v)))
            .transpose()
    }

    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| v.as_bool().ok_or_else(|| self.bad(key, v)))
            .transpose()
    }

    pub(crate) fn triple(&self, key: &str) -> Result<Option<[f32; 3]>> {
        self.get(key)
            .map(|v| {
                let values: Option<Vec<f32>> = v.as_array().map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_f64().map(|x| x as f32))
                        .collect()
                });
                match values.as_deref() {
                    Some(&[a, b, c]) => Ok([a, b, c]),
                    _ => Err(self.bad(key, v)),
                }
            })
            .transpose()
    }

    /// Overrides the patch geometry and normalization of `p` with the file's values.
    pub(crate) fn apply_common(&self, p: &mut Preprocessing) -> Result<()> {
        if let Some(v) = self.usize("patch_size")? {
            p.patch_size = v;
        }
        if let Some(v) = self.usize("temporal_patch_size")? {
            p.temporal_patch_size = v;
        }
        if let Some(v) = self.usize("merge_size")? {
            p.merge_size = v;
        }
        if let Some(v) = self.triple("image_mean")? {
            p.image_mean = v;
        }
        if let Some(v) = self.triple("image_std")? {
            p.image_std = v;
        }
        Ok(())
    }
}

/// What a tower returns per video.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputLayout {
    /// Width of the main embeddings (the LLM's hidden size).
    pub hidden: usize,
    /// Spatial patches merged into one output row (merge_size²).
    pub patches_per_row: usize,
    /// Extra outputs beside the main embeddings, by name and width, packed after them
    /// along the hidden axis in this order (Qwen3-VL: `deepstack0`, `deepstack1`, …;
    /// none for Qwen2.5-VL).
    pub extra: Vec<(String, usize)>,
}

impl OutputLayout {
    /// Width of one packed output row: the main embeddings and every extra output.
    pub fn width(&self) -> usize {
        self.hidden + self.extra.iter().map(|(_, w)| w).sum::<usize>()
    }
}

impl std::fmt::Debug for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// Every architecture name the registry knows, comma-separated (for errors).
pub fn supported() -> String {
    FAMILIES
        .iter()
        .flat_map(|f| f.architectures.iter())
        .copied()
        .collect::<Vec<_>>()
        .join(", ")
}

/// The family `config.json`'s value selects: the first of its `architectures` that a
/// family lists, else its `model_type`. `None` (with what was found) otherwise.
pub fn select(config: &Value) -> std::result::Result<(&'static Family, String), String> {
    let architectures: Vec<&str> = config
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for name in &architectures {
        if let Some(f) = FAMILIES.iter().find(|f| f.architectures.contains(name)) {
            return Ok((f, name.to_string()));
        }
    }
    let model_type = config.get("model_type").and_then(Value::as_str);
    if let Some(t) = model_type {
        if let Some(f) = FAMILIES.iter().find(|f| f.model_types.contains(&t)) {
            return Ok((f, t.to_string()));
        }
    }
    Err(match (architectures.is_empty(), model_type) {
        (true, None) => "no `architectures` or `model_type` in config.json".into(),
        (_, t) => format!(
            "architectures {architectures:?}, model_type {}",
            t.map_or("none".into(), |t| format!("{t:?}"))
        ),
    })
}

impl ModelSpec {
    /// Reads the model folder `dir`: `config.json` selects the family, which reads the
    /// vision config and the preprocessing. An architecture no family lists is an
    /// [`Error::UnsupportedModel`] naming what was found and what is supported.
    pub fn read(dir: &Path) -> Result<ModelSpec> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let config: Value = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let (family, architecture) = select(&config).map_err(|found| Error::UnsupportedModel {
            dir: dir.to_path_buf(),
            found,
            supported: supported(),
        })?;
        let vision = (family.vision_config)(&config).map_err(|e| match e {
            Error::Json { message, .. } => Error::Json { path, message },
            other => other,
        })?;
        let preprocessing = (family.preprocessing)(dir, &vision)?;
        let outputs = OutputLayout {
            hidden: vision.out_hidden_size,
            patches_per_row: vision.merge_unit(),
            extra: (0..vision.deepstack_visual_indexes.len())
                .map(|k| (format!("deepstack{k}"), vision.out_hidden_size))
                .collect(),
        };
        Ok(ModelSpec {
            dir: dir.to_path_buf(),
            family,
            architecture,
            vision,
            preprocessing,
            outputs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn architectures_then_model_type_select_the_family() {
        let (f, name) =
            select(&json!({"architectures": ["Qwen2_5_VLForConditionalGeneration"]})).unwrap();
        assert_eq!(
            (f.name, name.as_str()),
            ("qwen2_5_vl", "Qwen2_5_VLForConditionalGeneration")
        );
        let (f, name) = select(&json!({"model_type": "qwen2_5_vl"})).unwrap();
        assert_eq!((f.name, name.as_str()), ("qwen2_5_vl", "qwen2_5_vl"));
    }

    #[test]
    fn unknown_architectures_are_named() {
        let found = select(&json!({
            "architectures": ["LlavaForConditionalGeneration"],
            "model_type": "llava"
        }))
        .unwrap_err();
        assert!(found.contains("LlavaForConditionalGeneration"), "{found}");
        assert!(found.contains("llava"), "{found}");
        let found = select(&json!({"hidden_size": 3})).unwrap_err();
        assert!(found.contains("no `architectures`"), "{found}");
    }

    #[test]
    fn a_folder_of_another_architecture_is_refused_with_the_supported_list() {
        let dir = std::env::temp_dir().join(format!("reel-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.json"),
            r#"{"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
                "vision_config": {"hidden_act": "gelu_pytorch_tanh"}}"#,
        )
        .unwrap();
        let err = ModelSpec::read(&dir).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        let msg = err.to_string();
        assert!(matches!(err, Error::UnsupportedModel { .. }), "{msg}");
        assert!(msg.contains("LlavaForConditionalGeneration"), "{msg}");
        assert!(msg.contains("Qwen2_5_VLForConditionalGeneration"), "{msg}");
        assert!(msg.contains("Qwen3VLForConditionalGeneration"), "{msg}");
    }
}
