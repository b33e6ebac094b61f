//! Loading the vision tower's weights from a Hugging Face safetensors checkpoint.
//!
//! Backend-neutral: produces host arrays in the requested dtype, which a backend
//! (the candle CPU backend today, a CUDA backend later) turns into its own tensors.
//!
//! Files are memory-mapped; only the tensors of the vision tower are read (the language
//! model's tensors are never touched). `model.safetensors`, sharded checkpoints
//! (`model.safetensors.index.json`) and, failing both, every `*.safetensors` file of the
//! folder are accepted. Tensor names may carry the `visual.` prefix (original checkpoints),
//! `model.visual.` (re-saved by recent transformers) or none (a bare vision model).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::Mmap;
use rayon::prelude::*;
use safetensors::tensor::{Dtype as StDtype, TensorInfo};
use safetensors::SafeTensors;

use crate::config::VisionConfig;
use crate::dtype::{DType, Elem};
use crate::error::{Error, Result};

/// Prefixes under which the vision tower is looked for, in order.
pub const PREFIXES: [&str; 3] = ["visual.", "model.visual.", ""];

/// Host storage of one tensor in the model dtype.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HostData {
    F32(Vec<f32>),
    BF16(Vec<bf16>),
    F16(Vec<f16>),
}

/// One weight tensor on the host.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HostTensor {
    pub shape: Vec<usize>,
    pub data: HostData,
}

/// Weights of one transformer block (names relative to `blocks.N.`).
#[derive(Debug)]
pub(crate) struct BlockWeights {
    pub norm1: HostTensor,
    pub norm2: HostTensor,
    pub qkv_w: HostTensor,
    pub qkv_b: HostTensor,
    pub proj_w: HostTensor,
    pub proj_b: HostTensor,
    pub gate_w: HostTensor,
    pub gate_b: HostTensor,
    pub up_w: HostTensor,
    pub up_b: HostTensor,
    pub down_w: HostTensor,
    pub down_b: HostTensor,
}

/// Weights of the patch merger.
#[derive(Debug)]
pub(crate) struct MergerWeights {
    pub ln_q: HostTensor,
    pub fc1_w: HostTensor,
    pub fc1_b: HostTensor,
    pub fc2_w: HostTensor,
    pub fc2_b: HostTensor,
}

/// All vision-tower weights; the patch embedding is reshaped to `[hidden, patch_dim]`.
#[derive(Debug)]
pub(crate) struct VisionWeights {
    pub patch_embed: HostTensor,
    pub blocks: Vec<BlockWeights>,
    pub merger: MergerWeights,
}

/// Names (without prefix) and shapes of every vision-tower tensor the config implies, in
/// checkpoint order.
pub fn expected_tensors(cfg: &VisionConfig) -> Vec<(String, Vec<usize>)> {
    let h = cfg.hidden_size;
    let i = cfg.intermediate_size;
    let m = h * cfg.merge_unit();
    let mut v = vec![(
        "patch_embed.proj.weight".to_string(),
        vec![
            h,
            cfg.in_channels,
            cfg.temporal_patch_size,
            cfg.patch_size,
            cfg.patch_size,
        ],
    )];
    for b in 0..cfg.depth {
        let p = |s: &str| format!("blocks.{b}.{s}");
        v.extend([
            (p("norm1.weight"), vec![h]),
            (p("norm2.weight"), vec![h]),
            (p("attn.qkv.weight"), vec![3 * h, h]),
            (p("attn.qkv.bias"), vec![3 * h]),
            (p("attn.proj.weight"), vec![h, h]),
            (p("attn.proj.bias"), vec![h]),
            (p("mlp.gate_proj.weight"), vec![i, h]),
            (p("mlp.gate_proj.bias"), vec![i]),
            (p("mlp.up_proj.weight"), vec![i, h]),
            (p("mlp.up_proj.bias"), vec![i]),
            (p("mlp.down_proj.weight"), vec![h, i]),
            (p("mlp.down_proj.bias"), vec![h]),
        ]);
    }
    v.extend([
        ("merger.ln_q.weight".to_string(), vec![h]),
        ("merger.mlp.0.weight".to_string(), vec![m, m]),
        ("merger.mlp.0.bias".to_string(), vec![m]),
        (
            "merger.mlp.2.weight".to_string(),
            vec![cfg.out_hidden_size, m],
        ),
        ("merger.mlp.2.bias".to_string(), vec![cfg.out_hidden_size]),
    ]);
    v
}

/// Number of parameters of the tower `cfg` describes.
pub fn num_params(cfg: &VisionConfig) -> usize {
    expected_tensors(cfg)
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}

/// Whether a checkpoint tensor name belongs to the vision tower (under any accepted prefix).
fn is_vision_key(name: &str) -> bool {
    PREFIXES.iter().any(|p| {
        name.strip_prefix(p).is_some_and(|rest| {
            ["patch_embed.", "blocks.", "merger."]
                .iter()
                .any(|s| rest.starts_with(s))
        })
    })
}

struct MappedFile {
    path: PathBuf,
    mmap: Mmap,
    /// Offset of the data section (8 + header length).
    data_start: usize,
}

/// The safetensors files of a checkpoint, memory-mapped, with a name → (file, info) map.
struct Checkpoint {
    files: Vec<MappedFile>,
    tensors: HashMap<String, (usize, TensorInfo)>,
}

fn map_file(path: &Path) -> Result<(MappedFile, HashMap<String, TensorInfo>)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the mapping is read-only and lives as long as the weights are being read.
    // Like every mmap-based loader (safetensors, candle, transformers), this assumes the
    // file is not truncated or rewritten while it is loaded.
    let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let (n, meta) = SafeTensors::read_metadata(&mmap).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let tensors = meta
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.clone()))
        .collect();
    Ok((
        MappedFile {
            path: path.to_path_buf(),
            mmap,
            data_start: 8 + n,
        },
        tensors,
    ))
}

impl Checkpoint {
    /// Maps the files of `dir` that may hold vision tensors.
    fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let single = dir.join("model.safetensors");
        let paths: Vec<PathBuf> = if index_path.is_file() {
            let text =
                std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Json {
                path: index_path.clone(),
                message: e.to_string(),
            })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::Json {
                    path: index_path.clone(),
                    message: "no `weight_map` object".into(),
                })?;
            // Only the shards that hold vision tensors are mapped.
            let shards: BTreeSet<&str> = map
                .iter()
                .filter(|(k, _)| is_vision_key(k))
                .filter_map(|(_, f)| f.as_str())
                .collect();
            shards.into_iter().map(|f| dir.join(f)).collect()
        } else if single.is_file() {
            vec![single]
        } else {
            let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
            let mut v: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                .collect();
            v.sort();
            v
        };
        if paths.is_empty() {
            return Err(Error::NoWeights {
                dir: dir.to_path_buf(),
            });
        }
        let mut files = Vec::with_capacity(paths.len());
        let mut tensors = HashMap::new();
        for p in &paths {
            let (f, t) = map_file(p)?;
            let idx = files.len();
            tensors.extend(t.into_iter().map(|(k, v)| (k, (idx, v))));
            files.push(f);
        }
        Ok(Checkpoint { files, tensors })
    }

    fn prefix(&self) -> Result<&'static str> {
        const PROBE: &str = "patch_embed.proj.weight";
        PREFIXES
            .iter()
            .copied()
            .find(|p| self.tensors.contains_key(&format!("{p}{PROBE}")))
            .ok_or(Error::NoVisionTower {
                probe: PROBE.into(),
            })
    }

    /// Reads `name`, checks its shape and converts it to `dtype`.
    fn read(&self, name: &str, expected: &[usize], dtype: DType) -> Result<HostTensor> {
        let (fi, info) = self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            expected: expected.to_vec(),
        })?;
        if info.shape != expected {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                expected: expected.to_vec(),
                found: info.shape.clone(),
            });
        }
        let file = &self.files[*fi];
        let (s, e) = info.data_offsets;
        let bytes = file
            .mmap
            .get(file.data_start + s..file.data_start + e)
            .ok_or_else(|| Error::Safetensors {
                path: file.path.clone(),
                message: format!("tensor `{name}` lies outside the file"),
            })?;
        let src = match info.dtype {
            StDtype::F32 => DType::F32,
            StDtype::BF16 => DType::BF16,
            StDtype::F16 => DType::F16,
            other => {
                return Err(Error::UnsupportedTensorDtype {
                    name: name.to_string(),
                    dtype: format!("{other:?}"),
                })
            }
        };
        let n: usize = expected.iter().product();
        if bytes.len() != n * src.size_in_bytes() {
            return Err(Error::Safetensors {
                path: file.path.clone(),
                message: format!("tensor `{name}` has {} bytes for {n} elements", bytes.len()),
            });
        }
        let data = match dtype {
            DType::F32 => HostData::F32(convert(bytes, src)),
            DType::BF16 => HostData::BF16(convert(bytes, src)),
            DType::F16 => HostData::F16(convert(bytes, src)),
        };
        Ok(HostTensor {
            shape: expected.to_vec(),
            data,
        })
    }
}

/// Little-endian `src`-typed bytes → `T` elements (parallel; RNE narrowing via f32).
fn convert<T: Elem>(bytes: &[u8], src: DType) -> Vec<T> {
    const CHUNK: usize = 1 << 16;
    let es = src.size_in_bytes();
    let n = bytes.len() / es;
    let mut out = vec![T::from_f32(0.0); n];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(ci, o)| {
        let b = &bytes[ci * CHUNK * es..(ci * CHUNK + o.len()) * es];
        match (src, T::REEL_DTYPE) {
            (DType::F32, _) => {
                for (d, s) in o.iter_mut().zip(b.chunks_exact(4)) {
                    *d = T::from_f32(f32::from_le(s));
                }
            }
            (DType::BF16, DType::BF16) | (DType::F16, DType::F16) => {
                // Same dtype: a bit copy (T is a 2-byte float here).
                for (d, s) in o.iter_mut().zip(b.chunks_exact(2)) {
                    *d = T::from_le(s);
                }
            }
            (DType::BF16, _) => {
                for (d, s) in o.iter_mut().zip(b.chunks_exact(2)) {
                    *d = T::from_f32(bf16::from_le(s).to_f32());
                }
            }
            (DType::F16, _) => {
                for (d, s) in o.iter_mut().zip(b.chunks_exact(2)) {
                    *d = T::from_f32(f16::from_le(s).to_f32());
                }
            }
        }
    });
    out
}

impl VisionWeights {
    /// Loads and checks every vision-tower tensor of the checkpoint in `dir`, in `dtype`.
    pub(crate) fn load(dir: &Path, cfg: &VisionConfig, dtype: DType) -> Result<Self> {
        let ck = Checkpoint::open(dir)?;
        let prefix = ck.prefix()?;
        tracing::debug!(dir = %dir.display(), prefix, files = ck.files.len(), "loading vision tower");
        let expected: HashMap<String, Vec<usize>> = expected_tensors(cfg).into_iter().collect();
        let read = |name: &str| -> Result<HostTensor> {
            let shape = &expected[name];
            ck.read(&format!("{prefix}{name}"), shape, dtype)
        };
        let mut patch_embed = read("patch_embed.proj.weight")?;
        patch_embed.shape = vec![cfg.hidden_size, cfg.patch_dim()];
        let blocks = (0..cfg.depth)
            .map(|b| {
                let r = |s: &str| read(&format!("blocks.{b}.{s}"));
                Ok(BlockWeights {
                    norm1: r("norm1.weight")?,
                    norm2: r("norm2.weight")?,
                    qkv_w: r("attn.qkv.weight")?,
                    qkv_b: r("attn.qkv.bias")?,
                    proj_w: r("attn.proj.weight")?,
                    proj_b: r("attn.proj.bias")?,
                    gate_w: r("mlp.gate_proj.weight")?,
                    gate_b: r("mlp.gate_proj.bias")?,
                    up_w: r("mlp.up_proj.weight")?,
                    up_b: r("mlp.up_proj.bias")?,
                    down_w: r("mlp.down_proj.weight")?,
                    down_b: r("mlp.down_proj.bias")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let merger = MergerWeights {
            ln_q: read("merger.ln_q.weight")?,
            fc1_w: read("merger.mlp.0.weight")?,
            fc1_b: read("merger.mlp.0.bias")?,
            fc2_w: read("merger.mlp.2.weight")?,
            fc2_b: read("merger.mlp.2.bias")?,
        };
        Ok(VisionWeights {
            patch_embed,
            blocks,
            merger,
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_7b_tower_has_its_parameter_count() {
        let cfg = crate::init::Arch::Qwen25Vl7b.vision_config();
        assert_eq!(super::num_params(&cfg), 676_550_144);
    }
}
