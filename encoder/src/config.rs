//! The vision tower's hyper-parameters, read from a Hugging Face `config.json`.
//!
//! One struct for every tower family reel runs; [`TowerKind`] says which blocks it is
//! built from. Qwen2.5-VL's keys are read here ([`VisionConfig::from_json`]); other
//! families read their own keys in their module of [`crate::models`].

use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// The building blocks of a tower family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TowerKind {
    /// Qwen2.5-VL: RMSNorm, SiLU-gated MLP, window attention (full attention in
    /// `fullatt_block_indexes`), patch embedding without bias, RMSNorm merger.
    Qwen2_5Vl,
    /// The Qwen3-VL family (Qwen3-VL, Qwen3.5, their MoE models, Qwen4-Exp): LayerNorm,
    /// GELU-tanh MLP, full attention within every temporal patch, patch embedding with
    /// bias plus a learned position table interpolated to the grid, LayerNorm merger, and
    /// deepstack mergers after the blocks in `deepstack_visual_indexes`.
    Qwen3Vl,
}

/// Hyper-parameters of a vision tower.
///
/// Read by the model registry ([`crate::ModelSpec::read`]) from a model folder's
/// `config.json`: either
/// a full Qwen2.5-VL config (the tower's keys under `vision_config`) or a bare vision config.
/// `depth`, `hidden_size`, `num_heads`, `intermediate_size` and `out_hidden_size` must be
/// present. Every other key falls back to the default of transformers'
/// `Qwen2_5_VLVisionConfig` when absent, like transformers does; note that the shipped
/// checkpoints say `tokens_per_second: 2` while the class default is 4.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// The family's building blocks.
    pub kind: TowerKind,
    /// Number of transformer blocks (32 in every released size).
    pub depth: usize,
    /// Width of the residual stream (1280).
    pub hidden_size: usize,
    /// Attention heads (16; head_dim = hidden_size / num_heads).
    pub num_heads: usize,
    /// Width of the SiLU-gated MLP (3420 for 3B/7B).
    pub intermediate_size: usize,
    /// Width of the merger output, i.e. the LLM's hidden size (7B: 3584).
    pub out_hidden_size: usize,
    /// Spatial patch side in pixels (14).
    pub patch_size: usize,
    /// Frames per temporal patch (2).
    pub temporal_patch_size: usize,
    /// Side of the square of patches merged into one output token (2).
    pub spatial_merge_size: usize,
    /// Attention window side in pixels (112 = 4 merged tokens = 8 patches; Qwen2.5-VL).
    pub window_size: usize,
    /// Blocks that use full (per temporal slice) attention instead of windows.
    pub fullatt_block_indexes: Vec<usize>,
    /// Input channels (3). Read from `in_channels`, else `in_chans`.
    pub in_channels: usize,
    /// The MLP activation: `silu` (Qwen2.5-VL) or `gelu_pytorch_tanh` (Qwen3-VL).
    pub hidden_act: String,
    /// Norm epsilon (Qwen2.5-VL: `rms_norm_eps` when present; transformers hard-codes
    /// 1e-6 for both families' vision norms).
    pub norm_eps: f64,
    /// Temporal rate of the LLM's M-RoPE positions (metadata; unused by the tower).
    pub tokens_per_second: f64,
    /// Base of the 2D rotary embedding (`rope_parameters.rope_theta` / `rope_theta`, else 10000).
    pub rope_theta: f64,
    /// Rows of the learned position table (Qwen3-VL: 2304 = 48²; 0 without a table).
    pub num_position_embeddings: usize,
    /// Blocks after which a deepstack merger taps the hidden states (Qwen3-VL;
    /// ascending; empty for towers without deepstack).
    pub deepstack_visual_indexes: Vec<usize>,
}

impl VisionConfig {
    /// Parses the text of a `config.json` (full Qwen2.5-VL config or bare vision config).
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::Json {
            path: "config.json".into(),
            message: e.to_string(),
        })?;
        Self::from_json(&value)
    }

    /// Parses a `config.json` value (full Qwen2.5-VL config or bare vision config).
    pub fn from_json(value: &Value) -> Result<Self> {
        let v = vision_section(value)?;
        let cfg = VisionConfig {
            kind: TowerKind::Qwen2_5Vl,
            depth: req_usize(v, "depth")?,
            hidden_size: req_usize(v, "hidden_size")?,
            num_heads: match opt_usize(v, "num_heads")? {
                Some(n) => n,
                None => opt_usize(v, "num_attention_heads")?
                    .ok_or(Error::MissingConfig { key: "num_heads" })?,
            },
            intermediate_size: req_usize(v, "intermediate_size")?,
            out_hidden_size: req_usize(v, "out_hidden_size")?,
            patch_size: opt_usize(v, "patch_size")?.unwrap_or(14),
            temporal_patch_size: opt_usize(v, "temporal_patch_size")?.unwrap_or(2),
            spatial_merge_size: opt_usize(v, "spatial_merge_size")?.unwrap_or(2),
            window_size: opt_usize(v, "window_size")?.unwrap_or(112),
            fullatt_block_indexes: match v.get("fullatt_block_indexes") {
                None | Some(Value::Null) => vec![7, 15, 23, 31],
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|x| {
                        x.as_u64().map(|x| x as usize).ok_or(Error::InvalidConfig {
                            key: "fullatt_block_indexes",
                            message: format!("not a non-negative integer: {x}"),
                        })
                    })
                    .collect::<Result<_>>()?,
                Some(other) => {
                    return Err(Error::InvalidConfig {
                        key: "fullatt_block_indexes",
                        message: format!("not an array: {other}"),
                    })
                }
            },
            in_channels: match opt_usize(v, "in_channels")? {
                Some(c) => c,
                None => opt_usize(v, "in_chans")?.unwrap_or(3),
            },
            hidden_act: match v.get("hidden_act") {
                None | Some(Value::Null) => "silu".into(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => {
                    return Err(Error::InvalidConfig {
                        key: "hidden_act",
                        message: format!("not a string: {other}"),
                    })
                }
            },
            norm_eps: opt_f64(v, "rms_norm_eps")?.unwrap_or(1e-6),
            tokens_per_second: opt_f64(v, "tokens_per_second")?.unwrap_or(4.0),
            rope_theta: match v.get("rope_parameters").and_then(|r| r.get("rope_theta")) {
                Some(t) => t.as_f64().ok_or(Error::InvalidConfig {
                    key: "rope_theta",
                    message: format!("not a number: {t}"),
                })?,
                None => opt_f64(v, "rope_theta")?.unwrap_or(10000.0),
            },
            num_position_embeddings: 0,
            deepstack_visual_indexes: Vec::new(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the hyper-parameters describe a tower this crate can run.
    pub fn validate(&self) -> Result<()> {
        let bad = |key, message: String| Err(Error::InvalidConfig { key, message });
        for (key, v) in [
            ("depth", self.depth),
            ("hidden_size", self.hidden_size),
            ("num_heads", self.num_heads),
            ("intermediate_size", self.intermediate_size),
            ("out_hidden_size", self.out_hidden_size),
            ("patch_size", self.patch_size),
            ("temporal_patch_size", self.temporal_patch_size),
            ("spatial_merge_size", self.spatial_merge_size),
            ("in_channels", self.in_channels),
        ] {
            if v == 0 {
                return bad(key, "must be positive".into());
            }
        }
        if self.hidden_size % self.num_heads != 0 {
            return bad(
                "num_heads",
                format!(
                    "hidden_size {} is not a multiple of num_heads {}",
                    self.hidden_size, self.num_heads
                ),
            );
        }
        if self.head_dim() % 4 != 0 {
            return bad(
                "num_heads",
                format!(
                    "head_dim {} must be a multiple of 4 for the 2D rotary embedding",
                    self.head_dim()
                ),
            );
        }
        match self.kind {
            TowerKind::Qwen2_5Vl => self.validate_qwen2_5()?,
            TowerKind::Qwen3Vl => self.validate_qwen3()?,
        }
        if !(self.norm_eps.is_finite() && self.norm_eps >= 0.0) {
            return bad("norm_eps", format!("{}", self.norm_eps));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 0.0) {
            return bad("rope_theta", format!("{}", self.rope_theta));
        }
        Ok(())
    }

    fn validate_qwen2_5(&self) -> Result<()> {
        let bad = |key, message: String| Err(Error::InvalidConfig { key, message });
        if self.merger_window() == 0 {
            return bad(
                "window_size",
                format!(
                    "{} is smaller than spatial_merge_size * patch_size = {}",
                    self.window_size,
                    self.spatial_merge_size * self.patch_size
                ),
            );
        }
        if self.hidden_act != "silu" {
            return bad(
                "hidden_act",
                format!(
                    "`{}` is not supported by Qwen2.5-VL's tower (only silu)",
                    self.hidden_act
                ),
            );
        }
        Ok(())
    }

    fn validate_qwen3(&self) -> Result<()> {
        let bad = |key, message: String| Err(Error::InvalidConfig { key, message });
        if self.hidden_act != "gelu_pytorch_tanh" {
            return bad(
                "hidden_act",
                format!(
                    "`{}` is not supported by Qwen3-VL's tower (only gelu_pytorch_tanh)",
                    self.hidden_act
                ),
            );
        }
        let side = self.position_grid_side();
        if side < 2 || side * side != self.num_position_embeddings {
            return bad(
                "num_position_embeddings",
                format!(
                    "{} is not the square of a side of at least 2",
                    self.num_position_embeddings
                ),
            );
        }
        let ds = &self.deepstack_visual_indexes;
        if ds.windows(2).any(|w| w[0] >= w[1]) || ds.last().is_some_and(|&l| l >= self.depth) {
            return bad(
                "deepstack_visual_indexes",
                format!(
                    "{ds:?} must be ascending block indexes below depth {}",
                    self.depth
                ),
            );
        }
        Ok(())
    }

    /// Side of the learned position table's square grid (Qwen3-VL: 48).
    pub fn position_grid_side(&self) -> usize {
        (self.num_position_embeddings as f64).sqrt().round() as usize
    }

    /// Width of one output row: the main embeddings, then each deepstack feature
    /// (`out_hidden_size · (1 + deepstack mergers)`, vLLM's `[main | ds0 | ds1 | …]`).
    pub fn output_width(&self) -> usize {
        self.out_hidden_size * (1 + self.deepstack_visual_indexes.len())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Width of one row of `pixel_values`: in_channels * temporal_patch * patch * patch (1176).
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Patches merged into one output token (spatial_merge_size², 4).
    pub fn merge_unit(&self) -> usize {
        self.spatial_merge_size * self.spatial_merge_size
    }

    /// Window side in merged tokens (window_size / merge / patch, 4).
    pub fn merger_window(&self) -> usize {
        self.window_size / self.spatial_merge_size / self.patch_size
    }

    /// Whether block `i` uses full attention (else windowed attention).
    pub fn is_full_attention(&self, block: usize) -> bool {
        self.kind == TowerKind::Qwen3Vl || self.fullatt_block_indexes.contains(&block)
    }

    /// Whether rows are permuted into attention windows (Qwen2.5-VL).
    pub fn windowed(&self) -> bool {
        self.kind == TowerKind::Qwen2_5Vl
    }

    /// The vision config as the JSON object the family's checkpoints carry under
    /// `vision_config`.
    pub fn to_json(&self) -> Value {
        if self.kind == TowerKind::Qwen3Vl {
            return json!({
                "model_type": "qwen3_vl",
                "depth": self.depth,
                "hidden_act": self.hidden_act,
                "hidden_size": self.hidden_size,
                "intermediate_size": self.intermediate_size,
                "num_heads": self.num_heads,
                "in_channels": self.in_channels,
                "out_hidden_size": self.out_hidden_size,
                "patch_size": self.patch_size,
                "spatial_merge_size": self.spatial_merge_size,
                "temporal_patch_size": self.temporal_patch_size,
                "num_position_embeddings": self.num_position_embeddings,
                "deepstack_visual_indexes": self.deepstack_visual_indexes,
                "initializer_range": 0.02,
            });
        }
        let tps = if self.tokens_per_second.fract() == 0.0 {
            json!(self.tokens_per_second as i64)
        } else {
            json!(self.tokens_per_second)
        };
        json!({
            "depth": self.depth,
            "hidden_act": self.hidden_act,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_heads": self.num_heads,
            "in_chans": self.in_channels,
            "out_hidden_size": self.out_hidden_size,
            "patch_size": self.patch_size,
            "spatial_merge_size": self.spatial_merge_size,
            "spatial_patch_size": self.patch_size,
            "window_size": self.window_size,
            "fullatt_block_indexes": self.fullatt_block_indexes,
            "tokens_per_second": tps,
            "temporal_patch_size": self.temporal_patch_size,
        })
    }
}

/// The tower's keys of a `config.json` value: its `vision_config` object, or the whole
/// object for a bare vision config.
pub(crate) fn vision_section(value: &Value) -> Result<&Map<String, Value>> {
    let root = value.as_object().ok_or_else(|| Error::Json {
        path: "config.json".into(),
        message: "top level is not an object".into(),
    })?;
    match root.get("vision_config") {
        Some(Value::Object(v)) => Ok(v),
        Some(_) => Err(Error::InvalidConfig {
            key: "vision_config",
            message: "not an object".into(),
        }),
        None => Ok(root),
    }
}

pub(crate) fn opt_usize(v: &Map<String, Value>, key: &'static str) -> Result<Option<usize>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => match x.as_u64() {
            Some(n) => Ok(Some(n as usize)),
            // Some configs write integral values as floats.
            None => match x.as_f64() {
                Some(f) if f >= 0.0 && f.fract() == 0.0 => Ok(Some(f as usize)),
                _ => Err(Error::InvalidConfig {
                    key,
                    message: format!("not a non-negative integer: {x}"),
                }),
            },
        },
    }
}

pub(crate) fn req_usize(v: &Map<String, Value>, key: &'static str) -> Result<usize> {
    opt_usize(v, key)?.ok_or(Error::MissingConfig { key })
}

pub(crate) fn opt_f64(v: &Map<String, Value>, key: &'static str) -> Result<Option<f64>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x.as_f64().map(Some).ok_or(Error::InvalidConfig {
            key,
            message: format!("not a number: {x}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QWEN7B: &str = r#"{
      "architectures": ["Qwen2_5_VLForConditionalGeneration"],
      "model_type": "qwen2_5_vl",
      "hidden_size": 3584,
      "vision_config": {
        "depth": 32, "hidden_act": "silu", "hidden_size": 1280, "intermediate_size": 3420,
        "num_heads": 16, "in_chans": 3, "out_hidden_size": 3584, "patch_size": 14,
        "spatial_merge_size": 2, "spatial_patch_size": 14, "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31], "tokens_per_second": 2,
        "temporal_patch_size": 2
      }
    }"#;

    #[test]
    fn parses_full_config() {
        let c = VisionConfig::from_json_str(QWEN7B).unwrap();
        assert_eq!(c.depth, 32);
        assert_eq!(c.hidden_size, 1280);
        assert_eq!(c.out_hidden_size, 3584);
        assert_eq!(c.head_dim(), 80);
        assert_eq!(c.patch_dim(), 1176);
        assert_eq!(c.merger_window(), 4);
        assert_eq!(c.tokens_per_second, 2.0);
        assert_eq!(c.norm_eps, 1e-6);
        assert_eq!(c.rope_theta, 10000.0);
        assert!(c.is_full_attention(7) && !c.is_full_attention(8));
    }

    #[test]
    fn parses_bare_vision_config_and_roundtrips() {
        let c = VisionConfig::from_json_str(QWEN7B).unwrap();
        let bare = VisionConfig::from_json(&c.to_json()).unwrap();
        assert_eq!(c, bare);
    }

    #[test]
    fn missing_and_invalid_keys() {
        let e = VisionConfig::from_json_str(r#"{"vision_config": {"depth": 2}}"#).unwrap_err();
        assert!(
            matches!(e, Error::MissingConfig { key: "hidden_size" }),
            "{e}"
        );
        let e = VisionConfig::from_json_str(
            r#"{"depth": 2, "hidden_size": 60, "num_heads": 7, "intermediate_size": 8, "out_hidden_size": 8}"#,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidConfig {
                    key: "num_heads",
                    ..
                }
            ),
            "{e}"
        );
        let e = VisionConfig::from_json_str(
            r#"{"depth": 2, "hidden_size": 64, "num_heads": 2, "intermediate_size": 8, "out_hidden_size": 8, "hidden_act": "relu"}"#,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidConfig {
                    key: "hidden_act",
                    ..
                }
            ),
            "{e}"
        );
    }
}
