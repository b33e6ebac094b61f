//! Random Qwen2.5-VL and Qwen3-VL-family checkpoints for tests and benchmarks, without
//! downloading weights.
//!
//! [`write_random`] writes a Hugging Face-compatible folder: `config.json` with the real
//! checkpoint's values for the chosen size, and `model.safetensors` with seeded random
//! **vision** weights under the `visual.` prefix (Qwen2.5-VL) or `model.visual.` (the
//! Qwen3-VL family, as its checkpoints name them). The language model's weights are not
//! written: the folder loads as a vision tower (reel, or transformers'
//! `Qwen2_5_VisionTransformerPretrainedModel`), not as a full
//! `Qwen2_5_VLForConditionalGeneration` with pretrained text weights.
//!
//! Initialization follows transformers' `_init_weights`: linear and conv weights
//! ~ N(0, 0.02²) (`initializer_range`), biases 0, norm weights 1.
//!
//! Provenance of the configs (from the released `Qwen/Qwen2.5-VL-*-Instruct`
//! `config.json` files as remembered, not re-downloaded): the vision configs' depth,
//! hidden_size, num_heads, out_hidden_size, window and patch values are certain; the
//! vision `intermediate_size` of 32B/72B (3456), `max_window_layers` and
//! `transformers_version` of the text part are believed but unchecked.
//!
//! The Qwen3-VL family's vision configs (depth, hidden, heads, intermediate, out_hidden,
//! deepstack indexes) are those of the published `config.json` files as found in public
//! copies (docs/qwen3-vl-blueprint.md §1); their text parts are small placeholders
//! (reel reads only the vision tower), not the released language models' sizes.

use std::io::Write;
use std::path::Path;

use half::{bf16, f16};
use rayon::prelude::*;
use serde_json::{json, Value};

use crate::config::{TowerKind, VisionConfig};
use crate::dtype::{DType, Elem};
use crate::error::{Error, Result};
use crate::weights::expected_tensors;

/// Model sizes [`write_random`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// Qwen2.5-VL-3B-Instruct (vision out_hidden_size 2048).
    Qwen25Vl3b,
    /// Qwen2.5-VL-7B-Instruct (out_hidden_size 3584).
    Qwen25Vl7b,
    /// Qwen2.5-VL-32B-Instruct (out_hidden_size 5120).
    Qwen25Vl32b,
    /// Qwen2.5-VL-72B-Instruct (out_hidden_size 8192).
    Qwen25Vl72b,
    /// Qwen3-VL-2B-Instruct's tower (head_dim 64, out_hidden 2048, deepstack 5/11/17).
    Qwen3Vl2b,
    /// Qwen3-VL-4B-Instruct's tower (as 2B, out_hidden 2560).
    Qwen3Vl4b,
    /// Qwen3-VL-8B-Instruct's tower (head_dim 72, out_hidden 4096, deepstack 8/16/24).
    Qwen3Vl8b,
    /// Qwen3-VL-32B-Instruct's tower (as 8B, out_hidden 5120).
    Qwen3Vl32b,
    /// Qwen3.5-27B's tower (the 8B tower without deepstack, out_hidden 5120).
    Qwen35_27b,
    /// Qwen3.5-35B-A3B's tower (without deepstack, out_hidden 2048).
    Qwen35_35bA3b,
    /// A small test tower: depth 4, hidden 64, 2 heads (head_dim 32), intermediate 128,
    /// out_hidden 96, full attention in blocks 1 and 3, window 112, patch 14x14x2, merge 2.
    Tiny,
}

impl Arch {
    /// All architectures.
    pub const ALL: [Arch; 11] = [
        Arch::Qwen25Vl3b,
        Arch::Qwen25Vl7b,
        Arch::Qwen25Vl32b,
        Arch::Qwen25Vl72b,
        Arch::Qwen3Vl2b,
        Arch::Qwen3Vl4b,
        Arch::Qwen3Vl8b,
        Arch::Qwen3Vl32b,
        Arch::Qwen35_27b,
        Arch::Qwen35_35bA3b,
        Arch::Tiny,
    ];

    /// Parses `qwen2.5-vl-7b` (also `Qwen/Qwen2.5-VL-7B-Instruct`, `qwen2_5_vl_7b`, …) or `tiny`.
    pub fn from_name(name: &str) -> Result<Self> {
        let mut n = name.trim().to_ascii_lowercase().replace('_', "-");
        if let Some(rest) = n.strip_prefix("qwen/") {
            n = rest.to_string();
        }
        let n = n
            .trim_end_matches("-instruct")
            .replace("qwen2-5", "qwen2.5")
            .replace("qwen3-5", "qwen3.5");
        match n.as_str() {
            "qwen2.5-vl-3b" => Ok(Arch::Qwen25Vl3b),
            "qwen2.5-vl-7b" => Ok(Arch::Qwen25Vl7b),
            "qwen2.5-vl-32b" => Ok(Arch::Qwen25Vl32b),
            "qwen2.5-vl-72b" => Ok(Arch::Qwen25Vl72b),
            "qwen3-vl-2b" => Ok(Arch::Qwen3Vl2b),
            "qwen3-vl-4b" => Ok(Arch::Qwen3Vl4b),
            "qwen3-vl-8b" => Ok(Arch::Qwen3Vl8b),
            "qwen3-vl-32b" => Ok(Arch::Qwen3Vl32b),
            "qwen3.5-27b" => Ok(Arch::Qwen35_27b),
            "qwen3.5-35b-a3b" => Ok(Arch::Qwen35_35bA3b),
            "tiny" | "qwen2.5-vl-tiny" => Ok(Arch::Tiny),
            _ => Err(Error::UnknownArch(name.to_string())),
        }
    }

    /// Canonical name (`qwen2.5-vl-7b`, `tiny`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Qwen25Vl3b => "qwen2.5-vl-3b",
            Arch::Qwen25Vl7b => "qwen2.5-vl-7b",
            Arch::Qwen25Vl32b => "qwen2.5-vl-32b",
            Arch::Qwen25Vl72b => "qwen2.5-vl-72b",
            Arch::Qwen3Vl2b => "qwen3-vl-2b",
            Arch::Qwen3Vl4b => "qwen3-vl-4b",
            Arch::Qwen3Vl8b => "qwen3-vl-8b",
            Arch::Qwen3Vl32b => "qwen3-vl-32b",
            Arch::Qwen35_27b => "qwen3.5-27b",
            Arch::Qwen35_35bA3b => "qwen3.5-35b-a3b",
            Arch::Tiny => "tiny",
        }
    }

    /// The tower's family.
    pub fn kind(self) -> TowerKind {
        match self {
            Arch::Qwen3Vl2b
            | Arch::Qwen3Vl4b
            | Arch::Qwen3Vl8b
            | Arch::Qwen3Vl32b
            | Arch::Qwen35_27b
            | Arch::Qwen35_35bA3b => TowerKind::Qwen3Vl,
            _ => TowerKind::Qwen2_5Vl,
        }
    }

    /// The Qwen3-VL family's towers: (depth, hidden, intermediate, out_hidden, deepstack).
    fn qwen3_shape(self) -> (usize, usize, usize, usize, Vec<usize>) {
        let (small, large) = (vec![5, 11, 17], vec![8, 16, 24]);
        match self {
            Arch::Qwen3Vl2b => (24, 1024, 4096, 2048, small),
            Arch::Qwen3Vl4b => (24, 1024, 4096, 2560, small),
            Arch::Qwen3Vl8b => (27, 1152, 4304, 4096, large),
            Arch::Qwen3Vl32b => (27, 1152, 4304, 5120, large),
            Arch::Qwen35_27b => (27, 1152, 4304, 5120, Vec::new()),
            _ => (27, 1152, 4304, 2048, Vec::new()),
        }
    }

    /// The vision tower's hyper-parameters.
    pub fn vision_config(self) -> VisionConfig {
        if self.kind() == TowerKind::Qwen3Vl {
            let (depth, hidden, inter, out, deepstack) = self.qwen3_shape();
            return VisionConfig {
                kind: TowerKind::Qwen3Vl,
                depth,
                hidden_size: hidden,
                num_heads: 16,
                intermediate_size: inter,
                out_hidden_size: out,
                patch_size: 16,
                temporal_patch_size: 2,
                spatial_merge_size: 2,
                window_size: 0,
                fullatt_block_indexes: Vec::new(),
                in_channels: 3,
                hidden_act: "gelu_pytorch_tanh".into(),
                norm_eps: 1e-6,
                tokens_per_second: 2.0,
                rope_theta: 10000.0,
                num_position_embeddings: 2304,
                deepstack_visual_indexes: deepstack,
            };
        }
        let (inter, out) = match self {
            Arch::Qwen25Vl3b => (3420, 2048),
            Arch::Qwen25Vl7b => (3420, 3584),
            Arch::Qwen25Vl32b => (3456, 5120),
            Arch::Qwen25Vl72b => (3456, 8192),
            Arch::Tiny => {
                return VisionConfig {
                    kind: TowerKind::Qwen2_5Vl,
                    depth: 4,
                    hidden_size: 64,
                    num_heads: 2,
                    intermediate_size: 128,
                    out_hidden_size: 96,
                    patch_size: 14,
                    temporal_patch_size: 2,
                    spatial_merge_size: 2,
                    window_size: 112,
                    fullatt_block_indexes: vec![1, 3],
                    in_channels: 3,
                    hidden_act: "silu".into(),
                    norm_eps: 1e-6,
                    tokens_per_second: 2.0,
                    rope_theta: 10000.0,
                    num_position_embeddings: 0,
                    deepstack_visual_indexes: Vec::new(),
                }
            }
            _ => unreachable!("Qwen3-VL towers returned above"),
        };
        VisionConfig {
            kind: TowerKind::Qwen2_5Vl,
            depth: 32,
            hidden_size: 1280,
            num_heads: 16,
            intermediate_size: inter,
            out_hidden_size: out,
            patch_size: 14,
            temporal_patch_size: 2,
            spatial_merge_size: 2,
            window_size: 112,
            fullatt_block_indexes: vec![7, 15, 23, 31],
            in_channels: 3,
            hidden_act: "silu".into(),
            norm_eps: 1e-6,
            tokens_per_second: 2.0,
            rope_theta: 10000.0,
            num_position_embeddings: 0,
            deepstack_visual_indexes: Vec::new(),
        }
    }

    /// The full `config.json` of a Qwen3-VL-family size: its `vision_config` and a
    /// small placeholder `text_config` whose hidden size is the tower's out_hidden_size.
    fn qwen3_config_json(self, dtype: DType) -> Value {
        let vision = self.vision_config();
        let deepstack = !vision.deepstack_visual_indexes.is_empty();
        let (arch, model_type) = if deepstack {
            ("Qwen3VLForConditionalGeneration", "qwen3_vl")
        } else {
            ("Qwen3_5ForConditionalGeneration", "qwen3_5")
        };
        let mut vision_json = vision.to_json();
        vision_json["model_type"] = json!(format!("{model_type}_vision"));
        if !deepstack {
            // Qwen3.5 checkpoints ship an empty list; its config class has no such key.
            vision_json["deepstack_visual_indexes"] = json!([]);
        }
        json!({
            "architectures": [arch],
            "model_type": model_type,
            "image_token_id": 151655,
            "video_token_id": 151656,
            "vision_start_token_id": 151652,
            "vision_end_token_id": 151653,
            "tie_word_embeddings": false,
            "torch_dtype": dtype.torch_name(),
            "dtype": dtype.torch_name(),
            "text_config": {
                "model_type": format!("{model_type}_text"),
                "hidden_size": vision.out_hidden_size,
                "intermediate_size": 2 * vision.out_hidden_size,
                "num_hidden_layers": 1,
                "num_attention_heads": 16,
                "num_key_value_heads": 8,
                "head_dim": 128,
                "vocab_size": 151936,
                "rms_norm_eps": 1e-6,
                "dtype": dtype.torch_name(),
            },
            "vision_config": vision_json,
        })
    }

    /// The full `config.json` (text hyper-parameters + `vision_config`), `torch_dtype` set
    /// to `dtype`.
    pub fn config_json(self, dtype: DType) -> Value {
        if self.kind() == TowerKind::Qwen3Vl {
            return self.qwen3_config_json(dtype);
        }
        // (hidden, intermediate, layers, heads, kv_heads, max_window_layers, vocab, tie, mrope)
        let (hid, inter, layers, heads, kv, mwl, vocab, tie, mrope) = match self {
            Arch::Qwen25Vl3b => (2048, 11008, 36, 16, 2, 70, 151936, true, [16, 24, 24]),
            Arch::Qwen25Vl7b => (3584, 18944, 28, 28, 4, 28, 152064, false, [16, 24, 24]),
            Arch::Qwen25Vl32b => (5120, 27648, 64, 40, 8, 64, 152064, false, [16, 24, 24]),
            Arch::Qwen25Vl72b => (8192, 29568, 80, 64, 8, 80, 152064, false, [16, 24, 24]),
            // Small text settings so transformers can build the whole model; head_dim 48.
            Arch::Tiny => (96, 192, 1, 2, 1, 1, 151936, true, [8, 8, 8]),
            _ => unreachable!("Qwen3-VL configs returned above"),
        };
        let max_pos = if self == Arch::Tiny { 2048 } else { 128000 };
        json!({
            "architectures": ["Qwen2_5_VLForConditionalGeneration"],
            "attention_dropout": 0.0,
            "bos_token_id": 151643,
            "eos_token_id": 151645,
            "vision_start_token_id": 151652,
            "vision_end_token_id": 151653,
            "vision_token_id": 151654,
            "image_token_id": 151655,
            "video_token_id": 151656,
            "hidden_act": "silu",
            "hidden_size": hid,
            "initializer_range": 0.02,
            "intermediate_size": inter,
            "max_position_embeddings": max_pos,
            "max_window_layers": mwl,
            "model_type": "qwen2_5_vl",
            "num_attention_heads": heads,
            "num_hidden_layers": layers,
            "num_key_value_heads": kv,
            "rms_norm_eps": 1e-6,
            "rope_theta": 1000000.0,
            "sliding_window": 32768,
            "tie_word_embeddings": tie,
            "torch_dtype": dtype.torch_name(),
            "transformers_version": "4.49.0",
            "use_cache": true,
            "use_sliding_window": false,
            "vision_config": self.vision_config().to_json(),
            "rope_scaling": {"type": "mrope", "mrope_section": mrope},
            "vocab_size": vocab,
        })
    }
}

/// Writes a random checkpoint of `arch` into `dir` (created if needed): `config.json`
/// and `model.safetensors` with only the vision tower (under the family's prefix), in
/// `dtype`.
///
/// Deterministic: the same `(arch, seed, dtype)` gives byte-identical files, whatever the
/// thread count (every 64 Ki-element chunk of every tensor has its own seeded stream).
/// Both files are written to temporary names and renamed into place.
pub fn write_random(arch: Arch, seed: u64, dtype: DType, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let cfg = arch.vision_config();
    let tensors = expected_tensors(&cfg);
    let prefix = match cfg.kind {
        TowerKind::Qwen2_5Vl => "visual.",
        TowerKind::Qwen3Vl => "model.visual.",
    };

    // safetensors header: tensors in order, contiguous.
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut off = 0usize;
    for (name, shape) in &tensors {
        let n: usize = shape.iter().product::<usize>() * dtype.size_in_bytes();
        header.insert(
            format!("{prefix}{name}"),
            json!({"dtype": dtype.safetensors_name(), "shape": shape, "data_offsets": [off, off + n]}),
        );
        off += n;
    }
    let mut hbytes = serde_json::to_vec(&Value::Object(header)).expect("JSON of plain values");
    while hbytes.len() % 8 != 0 {
        hbytes.push(b' ');
    }

    let st_path = dir.join("model.safetensors");
    let tmp = dir.join(format!(".model.safetensors.tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::with_capacity(1 << 22, std::fs::File::create(&tmp)?);
        f.write_all(&(hbytes.len() as u64).to_le_bytes())?;
        f.write_all(&hbytes)?;
        for (ti, (name, shape)) in tensors.iter().enumerate() {
            let n: usize = shape.iter().product();
            let kind = if name.ends_with(".bias") {
                Fill::Zeros
            } else if name.contains("norm") || name.contains("ln_q") {
                Fill::Ones
            } else {
                Fill::Normal(0.02)
            };
            let bytes = match dtype {
                DType::F32 => fill::<f32>(n, kind, seed, ti as u64),
                DType::BF16 => fill::<bf16>(n, kind, seed, ti as u64),
                DType::F16 => fill::<f16>(n, kind, seed, ti as u64),
            };
            f.write_all(&bytes)?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(&tmp, e)
    })?;
    std::fs::rename(&tmp, &st_path).map_err(|e| Error::io(&st_path, e))?;

    let cfg_path = dir.join("config.json");
    let tmp = dir.join(format!(".config.json.tmp{}", std::process::id()));
    let text =
        serde_json::to_string_pretty(&arch.config_json(dtype)).expect("JSON of plain values");
    std::fs::write(&tmp, text + "\n").map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Fill {
    Zeros,
    Ones,
    Normal(f32),
}

const CHUNK: usize = 1 << 16;

fn splitmix64(x: &mut u64) -> u64 {
    *x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256++ seeded from (seed, tensor, chunk) through splitmix64.
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64, tensor: u64, chunk: u64) -> Self {
        let mut s = seed
            ^ tensor.wrapping_mul(0xD1B5_4A32_D192_ED03)
            ^ chunk.wrapping_mul(0x8CB9_2BA7_2F3D_8DD7);
        Rng([
            splitmix64(&mut s),
            splitmix64(&mut s),
            splitmix64(&mut s),
            splitmix64(&mut s),
        ])
    }

    #[inline(always)]
    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let r = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        r
    }
}

/// `n` little-endian elements of `T`, generated chunk-parallel.
fn fill<T: Elem>(n: usize, kind: Fill, seed: u64, tensor: u64) -> Vec<u8> {
    let es = T::REEL_DTYPE.size_in_bytes();
    let mut out = vec![0u8; n * es];
    out.par_chunks_mut(CHUNK * es)
        .enumerate()
        .for_each(|(ci, o)| match kind {
            Fill::Zeros => {}
            Fill::Ones => {
                for o in o.chunks_exact_mut(es) {
                    T::from_f32(1.0).write_le(o);
                }
            }
            Fill::Normal(std) => {
                let mut rng = Rng::new(seed, tensor, ci as u64);
                let mut it = o.chunks_exact_mut(es);
                // Box-Muller: two normals per two uniforms.
                loop {
                    let r = rng.next_u64();
                    // u1 in (0, 1], u2 in [0, 1), 32 bits each.
                    let u1 = ((r >> 32) as f32 + 1.0) * (1.0 / 4_294_967_296.0);
                    let u2 = (r & 0xFFFF_FFFF) as f32 * (1.0 / 4_294_967_296.0);
                    let rad = std * (-2.0 * u1.ln()).sqrt();
                    let (s, c) = (std::f32::consts::TAU * u2).sin_cos();
                    match it.next() {
                        Some(o) => T::from_f32(rad * c).write_le(o),
                        None => break,
                    }
                    match it.next() {
                        Some(o) => T::from_f32(rad * s).write_le(o),
                        None => break,
                    }
                }
            }
        });
    out
}

/// Seeded pseudo-random pixel values in [-2, 2), `rows × cols`, the inputs of the encoder
/// goldens and benchmarks. The same generator is written in Python
/// (tests/golden/encoder/make_encoder_golden.py) so both sides encode identical inputs:
/// value(i) = (splitmix64(seed · 0x9E3779B97F4A7C15 + i) >> 40) · 2⁻²² − 2.
pub fn seeded_pixels(seed: u64, rows: usize, cols: usize) -> Vec<f32> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for a in Arch::ALL {
            assert_eq!(Arch::from_name(a.name()).unwrap(), a);
        }
        assert_eq!(
            Arch::from_name("Qwen/Qwen2.5-VL-7B-Instruct").unwrap(),
            Arch::Qwen25Vl7b
        );
        assert_eq!(
            Arch::from_name("qwen2_5_vl_72b").unwrap(),
            Arch::Qwen25Vl72b
        );
        assert_eq!(
            Arch::from_name("Qwen/Qwen3-VL-8B-Instruct").unwrap(),
            Arch::Qwen3Vl8b
        );
        assert_eq!(Arch::from_name("qwen3_5_27b").unwrap(), Arch::Qwen35_27b);
        assert!(Arch::from_name("qwen3-vl").is_err());
    }

    #[test]
    fn configs_parse_back() {
        for a in Arch::ALL {
            let j = a.config_json(DType::BF16);
            let (family, _) = crate::models::select(&j).unwrap();
            assert_eq!((family.vision_config)(&j).unwrap(), a.vision_config());
            assert!(family.presets.contains(&a.name()), "{}", a.name());
            let text = j.get("text_config").unwrap_or(&j);
            assert_eq!(text["hidden_size"], j["vision_config"]["out_hidden_size"]);
        }
    }

    #[test]
    fn normal_moments() {
        let b = fill::<f32>(1 << 20, Fill::Normal(0.02), 7, 3);
        let v: Vec<f64> = b.chunks_exact(4).map(|c| f32::from_le(c) as f64).collect();
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 1e-4, "mean {mean}");
        assert!((var.sqrt() - 0.02).abs() < 1e-4, "std {}", var.sqrt());
    }
}
