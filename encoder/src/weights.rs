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

use crate::config::{TowerKind, VisionConfig};
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

/// A linear layer's weight `[out, in]` and bias `[out]`.
#[derive(Debug)]
pub(crate) struct LinearWeights {
    pub w: HostTensor,
    pub b: HostTensor,
}

/// A norm's scale, and its shift for a LayerNorm (`None`: RMSNorm).
#[derive(Debug)]
pub(crate) struct NormWeights {
    pub w: HostTensor,
    pub b: Option<HostTensor>,
}

/// A block's MLP.
#[derive(Debug)]
pub(crate) enum MlpWeights {
    /// Qwen2.5-VL: `down(silu(gate(x)) * up(x))`.
    SwiGlu {
        gate: LinearWeights,
        up: LinearWeights,
        down: LinearWeights,
    },
    /// Qwen3-VL: `fc2(gelu_tanh(fc1(x)))`.
    Gelu {
        fc1: LinearWeights,
        fc2: LinearWeights,
    },
}

/// Weights of one transformer block (names relative to `blocks.N.`).
#[derive(Debug)]
pub(crate) struct BlockWeights {
    pub norm1: NormWeights,
    pub norm2: NormWeights,
    pub qkv: LinearWeights,
    pub proj: LinearWeights,
    pub mlp: MlpWeights,
}

/// Weights of a patch merger: norm, then `fc2(gelu(fc1(·)))` over merge_unit patches.
#[derive(Debug)]
pub(crate) struct MergerWeights {
    pub norm: NormWeights,
    pub fc1: LinearWeights,
    pub fc2: LinearWeights,
}

/// All vision-tower weights; the patch embedding is reshaped to `[hidden, patch_dim]`.
#[derive(Debug)]
pub(crate) struct VisionWeights {
    pub patch_embed: HostTensor,
    /// The patch embedding's bias (Qwen3-VL).
    pub patch_bias: Option<HostTensor>,
    /// The learned position table `[num_position_embeddings, hidden]` (Qwen3-VL).
    pub pos_embed: Option<HostTensor>,
    pub blocks: Vec<BlockWeights>,
    pub merger: MergerWeights,
    /// One merger per deepstack index, in order (Qwen3-VL).
    pub deepstack: Vec<MergerWeights>,
}

/// The checkpoint names of one family's tensors (relative to the tower's prefix).
struct Names {
    norm1: &'static str,
    norm2: &'static str,
    /// (gate, up, down) or (fc1, fc2).
    mlp: &'static [&'static str],
    merger_norm: &'static str,
    merger_fc1: &'static str,
    merger_fc2: &'static str,
}

fn names(kind: TowerKind) -> Names {
    match kind {
        TowerKind::Qwen2_5Vl => Names {
            norm1: "norm1",
            norm2: "norm2",
            mlp: &["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"],
            merger_norm: "merger.ln_q",
            merger_fc1: "merger.mlp.0",
            merger_fc2: "merger.mlp.2",
        },
        TowerKind::Qwen3Vl => Names {
            norm1: "norm1",
            norm2: "norm2",
            mlp: &["mlp.linear_fc1", "mlp.linear_fc2"],
            merger_norm: "merger.norm",
            merger_fc1: "merger.linear_fc1",
            merger_fc2: "merger.linear_fc2",
        },
    }
}

/// Names (without prefix) and shapes of every vision-tower tensor the config implies, in
/// checkpoint order.
pub fn expected_tensors(cfg: &VisionConfig) -> Vec<(String, Vec<usize>)> {
    let h = cfg.hidden_size;
    let i = cfg.intermediate_size;
    let m = h * cfg.merge_unit();
    let o = cfg.out_hidden_size;
    let n = names(cfg.kind);
    let layer_norm = cfg.kind == TowerKind::Qwen3Vl;
    let norm = |v: &mut Vec<(String, Vec<usize>)>, name: String, width: usize| {
        v.push((format!("{name}.weight"), vec![width]));
        if layer_norm {
            v.push((format!("{name}.bias"), vec![width]));
        }
    };
    let linear = |v: &mut Vec<(String, Vec<usize>)>, name: String, out: usize, inp: usize| {
        v.push((format!("{name}.weight"), vec![out, inp]));
        v.push((format!("{name}.bias"), vec![out]));
    };
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
    if cfg.kind == TowerKind::Qwen3Vl {
        v.push(("patch_embed.proj.bias".to_string(), vec![h]));
        v.push((
            "pos_embed.weight".to_string(),
            vec![cfg.num_position_embeddings, h],
        ));
    }
    for b in 0..cfg.depth {
        let p = |s: &str| format!("blocks.{b}.{s}");
        norm(&mut v, p(n.norm1), h);
        norm(&mut v, p(n.norm2), h);
        linear(&mut v, p("attn.qkv"), 3 * h, h);
        linear(&mut v, p("attn.proj"), h, h);
        match n.mlp {
            [gate, up, down] => {
                linear(&mut v, p(gate), i, h);
                linear(&mut v, p(up), i, h);
                linear(&mut v, p(down), h, i);
            }
            [fc1, fc2] => {
                linear(&mut v, p(fc1), i, h);
                linear(&mut v, p(fc2), h, i);
            }
            _ => unreachable!("an MLP has two or three layers"),
        }
    }
    norm(&mut v, n.merger_norm.to_string(), h);
    linear(&mut v, n.merger_fc1.to_string(), m, m);
    linear(&mut v, n.merger_fc2.to_string(), o, m);
    for k in 0..cfg.deepstack_visual_indexes.len() {
        let p = |s: &str| format!("deepstack_merger_list.{k}.{s}");
        norm(&mut v, p("norm"), m);
        linear(&mut v, p("linear_fc1"), m, m);
        linear(&mut v, p("linear_fc2"), o, m);
    }
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
            [
                "patch_embed.",
                "pos_embed.",
                "blocks.",
                "merger.",
                "deepstack_merger_list.",
            ]
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
        let linear = |name: &str| -> Result<LinearWeights> {
            Ok(LinearWeights {
                w: read(&format!("{name}.weight"))?,
                b: read(&format!("{name}.bias"))?,
            })
        };
        let layer_norm = cfg.kind == TowerKind::Qwen3Vl;
        let norm = |name: &str| -> Result<NormWeights> {
            Ok(NormWeights {
                w: read(&format!("{name}.weight"))?,
                b: layer_norm
                    .then(|| read(&format!("{name}.bias")))
                    .transpose()?,
            })
        };
        let n = names(cfg.kind);
        let mut patch_embed = read("patch_embed.proj.weight")?;
        patch_embed.shape = vec![cfg.hidden_size, cfg.patch_dim()];
        let blocks = (0..cfg.depth)
            .map(|b| {
                let p = |s: &str| format!("blocks.{b}.{s}");
                Ok(BlockWeights {
                    norm1: norm(&p(n.norm1))?,
                    norm2: norm(&p(n.norm2))?,
                    qkv: linear(&p("attn.qkv"))?,
                    proj: linear(&p("attn.proj"))?,
                    mlp: match n.mlp {
                        [gate, up, down] => MlpWeights::SwiGlu {
                            gate: linear(&p(gate))?,
                            up: linear(&p(up))?,
                            down: linear(&p(down))?,
                        },
                        [fc1, fc2] => MlpWeights::Gelu {
                            fc1: linear(&p(fc1))?,
                            fc2: linear(&p(fc2))?,
                        },
                        _ => unreachable!("an MLP has two or three layers"),
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let merger = MergerWeights {
            norm: norm(n.merger_norm)?,
            fc1: linear(n.merger_fc1)?,
            fc2: linear(n.merger_fc2)?,
        };
        let deepstack = (0..cfg.deepstack_visual_indexes.len())
            .map(|k| {
                let p = |s: &str| format!("deepstack_merger_list.{k}.{s}");
                Ok(MergerWeights {
                    norm: norm(&p("norm"))?,
                    fc1: linear(&p("linear_fc1"))?,
                    fc2: linear(&p("linear_fc2"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let qwen3 = cfg.kind == TowerKind::Qwen3Vl;
        Ok(VisionWeights {
            patch_embed,
            patch_bias: qwen3.then(|| read("patch_embed.proj.bias")).transpose()?,
            pos_embed: qwen3.then(|| read("pos_embed.weight")).transpose()?,
            blocks,
            merger,
            deepstack,
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

    #[test]
    fn the_qwen3_vl_8b_tower_has_its_parameter_count() {
        // Qwen3-VL-8B's vision tower: 576,388,336 parameters (transformers 5.17 on the meta device).
        let cfg = crate::init::Arch::Qwen3Vl8b.vision_config();
        assert_eq!(super::num_params(&cfg), 576_388_336);
    }
}
