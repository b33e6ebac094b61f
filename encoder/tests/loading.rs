//! Checkpoint loading: errors, prefixes, shards, dtypes, random checkpoints.

mod common;

use std::collections::BTreeMap;

use common::*;
use reel_encoder::init::{write_random, Arch};
use reel_encoder::{DType, Error, VisionTower};

/// A small encode of the tiny tower, for comparing loads.
fn encode_small(t: &VisionTower) -> Vec<f32> {
    let grids = [[2, 8, 8], [1, 6, 10]];
    let pv = pixel_values(9, 188, t.config().patch_dim());
    t.encode(&pv, &grids).unwrap().data
}

fn tiny_tensors() -> BTreeMap<String, Raw> {
    read_all(&tiny_dir().join("model.safetensors"))
}

#[test]
fn missing_tensor_is_named_with_its_shape() {
    let dir = tempfile::tempdir().unwrap();
    copy_config(dir.path());
    let mut t = tiny_tensors();
    t.remove("visual.blocks.2.attn.proj.bias").unwrap();
    write_all(&dir.path().join("model.safetensors"), &t);
    let e = VisionTower::load(dir.path(), DType::F32).err().unwrap();
    match &e {
        Error::MissingTensor { name, expected } => {
            assert_eq!(name, "visual.blocks.2.attn.proj.bias");
            assert_eq!(expected, &vec![64]);
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("visual.blocks.2.attn.proj.bias") && msg.contains("[64]"),
        "{msg}"
    );
}

#[test]
fn misshaped_tensor_is_named_with_expected_shape() {
    let dir = tempfile::tempdir().unwrap();
    copy_config(dir.path());
    let mut t = tiny_tensors();
    let r = t.get_mut("visual.blocks.1.mlp.up_proj.weight").unwrap();
    assert_eq!(r.shape, vec![128, 64]);
    r.shape = vec![64, 128];
    write_all(&dir.path().join("model.safetensors"), &t);
    let e = VisionTower::load(dir.path(), DType::BF16).err().unwrap();
    match &e {
        Error::ShapeMismatch {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "visual.blocks.1.mlp.up_proj.weight");
            assert_eq!(expected, &vec![128, 64]);
            assert_eq!(found, &vec![64, 128]);
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("visual.blocks.1.mlp.up_proj.weight") && msg.contains("[128, 64]"),
        "{msg}"
    );
}

#[test]
fn no_vision_tower_and_no_weights() {
    let dir = tempfile::tempdir().unwrap();
    copy_config(dir.path());
    assert!(matches!(
        VisionTower::load(dir.path(), DType::F32),
        Err(Error::NoWeights { .. })
    ));
    let mut t = BTreeMap::new();
    t.insert(
        "model.language_model.norm.weight".to_string(),
        Raw {
            dtype: safetensors::Dtype::F32,
            shape: vec![2],
            data: vec![0; 8],
        },
    );
    write_all(&dir.path().join("model.safetensors"), &t);
    assert!(matches!(
        VisionTower::load(dir.path(), DType::F32),
        Err(Error::NoVisionTower { .. })
    ));
}

#[test]
fn model_visual_and_bare_prefixes_load() {
    let reference = encode_small(&VisionTower::load(&tiny_dir(), DType::F32).unwrap());
    for prefix in ["model.visual.", ""] {
        let dir = tempfile::tempdir().unwrap();
        copy_config(dir.path());
        let t: BTreeMap<String, Raw> = tiny_tensors()
            .into_iter()
            .map(|(k, v)| (format!("{prefix}{}", k.strip_prefix("visual.").unwrap()), v))
            .collect();
        write_all(&dir.path().join("model.safetensors"), &t);
        let tower = VisionTower::load(dir.path(), DType::F32).unwrap();
        assert_eq!(encode_small(&tower), reference, "prefix `{prefix}`");
    }
}

/// A bare vision config loads when it names its model type (HF's vision sub-configs
/// carry `model_type`); without any name the registry cannot tell what it is.
#[test]
fn bare_vision_config_loads() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Arch::Tiny.vision_config();
    let mut bare = cfg.to_json();
    std::fs::write(dir.path().join("config.json"), bare.to_string()).unwrap();
    let anonymous = VisionTower::load(dir.path(), DType::F32).err().unwrap();
    assert!(
        matches!(anonymous, Error::UnsupportedModel { .. }),
        "{anonymous}"
    );
    bare["model_type"] = "qwen2_5_vl".into();
    std::fs::write(dir.path().join("config.json"), bare.to_string()).unwrap();
    std::fs::copy(
        tiny_dir().join("model.safetensors"),
        dir.path().join("model.safetensors"),
    )
    .unwrap();
    let tower = VisionTower::load(dir.path(), DType::F32).unwrap();
    assert_eq!(tower.config(), &cfg);
}

#[test]
fn sharded_checkpoint_loads() {
    let reference = encode_small(&VisionTower::load(&tiny_dir(), DType::F32).unwrap());
    let dir = tempfile::tempdir().unwrap();
    copy_config(dir.path());
    let t = tiny_tensors();
    // Three shards: blocks 0-1 (+ patch embed), the rest, and a text-only shard.
    let mut shards: [BTreeMap<String, Raw>; 3] = Default::default();
    for (k, v) in t {
        let s = if k.starts_with("visual.blocks.0.")
            || k.starts_with("visual.blocks.1.")
            || k.contains("patch_embed")
        {
            0
        } else {
            1
        };
        shards[s].insert(k, v);
    }
    shards[2].insert(
        "model.language_model.embed_tokens.weight".into(),
        Raw {
            dtype: safetensors::Dtype::BF16,
            shape: vec![4, 2],
            data: vec![0; 16],
        },
    );
    let mut weight_map = serde_json::Map::new();
    for (i, s) in shards.iter().enumerate() {
        let file = format!("model-0000{}-of-00003.safetensors", i + 1);
        write_all(&dir.path().join(&file), s);
        for k in s.keys() {
            weight_map.insert(k.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    // The text shard is not needed: delete it to prove it is never opened.
    std::fs::remove_file(dir.path().join("model-00003-of-00003.safetensors")).unwrap();
    let tower = VisionTower::load(dir.path(), DType::F32).unwrap();
    assert_eq!(encode_small(&tower), reference);
}

#[test]
fn f32_checkpoint_converts_to_every_dtype() {
    // An f32 copy of the tiny model gives the same f32 result as the bf16 original, and
    // loads as bf16/f16 too.
    let reference = encode_small(&VisionTower::load(&tiny_dir(), DType::F32).unwrap());
    let dir = tempfile::tempdir().unwrap();
    copy_config(dir.path());
    let t: BTreeMap<String, Raw> = tiny_tensors()
        .into_iter()
        .map(|(k, v)| {
            assert_eq!(v.dtype, safetensors::Dtype::BF16);
            let data = v
                .data
                .chunks_exact(2)
                .flat_map(|c| {
                    half::bf16::from_le_bytes([c[0], c[1]])
                        .to_f32()
                        .to_le_bytes()
                })
                .collect();
            (
                k,
                Raw {
                    dtype: safetensors::Dtype::F32,
                    shape: v.shape,
                    data,
                },
            )
        })
        .collect();
    write_all(&dir.path().join("model.safetensors"), &t);
    assert_eq!(
        encode_small(&VisionTower::load(dir.path(), DType::F32).unwrap()),
        reference
    );
    let bf = VisionTower::load(dir.path(), DType::BF16).unwrap();
    let bf_orig = VisionTower::load(&tiny_dir(), DType::BF16).unwrap();
    assert_eq!(encode_small(&bf), encode_small(&bf_orig));
    let f16 = encode_small(&VisionTower::load(dir.path(), DType::F16).unwrap());
    assert!(rel_err(&f16, &reference) < 1e-2);
}

#[test]
fn write_random_roundtrips_and_is_deterministic() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let c = tempfile::tempdir().unwrap();
    write_random(Arch::Tiny, 42, DType::BF16, a.path()).unwrap();
    write_random(Arch::Tiny, 42, DType::BF16, b.path()).unwrap();
    write_random(Arch::Tiny, 43, DType::BF16, c.path()).unwrap();
    let st = |d: &std::path::Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert_eq!(st(a.path()), st(b.path()), "same seed, different bytes");
    assert_ne!(st(a.path()), st(c.path()), "different seeds, same bytes");
    assert_eq!(
        std::fs::read(a.path().join("config.json")).unwrap(),
        std::fs::read(b.path().join("config.json")).unwrap()
    );
    // Every tensor under `visual.`, HF-style init: biases 0, norms 1, weights ~N(0, 0.02²).
    let t = read_all(&a.path().join("model.safetensors"));
    assert_eq!(t.len(), 1 + 4 * 12 + 5);
    for (k, r) in &t {
        assert!(k.starts_with("visual."), "{k}");
        assert_eq!(r.dtype, safetensors::Dtype::BF16);
        let v: Vec<f32> = r
            .data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        if k.ends_with(".bias") {
            assert!(v.iter().all(|&x| x == 0.0), "{k}");
        } else if k.contains("norm") || k.contains("ln_q") {
            assert!(v.iter().all(|&x| x == 1.0), "{k}");
        } else {
            let sd = (v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32).sqrt();
            assert!((sd - 0.02).abs() < 0.003, "{k}: std {sd}");
        }
    }
    let cfg = reel_encoder::ModelSpec::read(a.path()).unwrap().vision;
    assert_eq!(cfg, Arch::Tiny.vision_config());
    for dt in [DType::F32, DType::BF16] {
        let tower = VisionTower::load(a.path(), dt).unwrap();
        let out = encode_small(&tower);
        assert_eq!(out.len(), 47 * 96);
        assert!(out.iter().all(|x| x.is_finite()));
        assert_eq!(out, encode_small(&tower), "encode is deterministic");
    }
    // An f32 checkpoint holds the same values before rounding.
    let d = tempfile::tempdir().unwrap();
    write_random(Arch::Tiny, 42, DType::F32, d.path()).unwrap();
    let t32 = read_all(&d.path().join("model.safetensors"));
    let w = &t32["visual.merger.mlp.0.weight"];
    let w16 = &t["visual.merger.mlp.0.weight"];
    for (x, y) in w
        .data
        .chunks_exact(4)
        .zip(w16.data.chunks_exact(2))
        .take(1000)
    {
        let x = f32::from_le_bytes(x.try_into().unwrap());
        assert_eq!(
            half::bf16::from_f32(x).to_bits(),
            u16::from_le_bytes([y[0], y[1]])
        );
    }
}

#[test]
fn bad_inputs_are_errors() {
    let tower = VisionTower::load(&tiny_dir(), DType::F32).unwrap();
    let pv = vec![0f32; 16 * 1176];
    assert!(tower.encode(&pv, &[[1, 4, 4]]).is_ok());
    assert!(matches!(
        tower.encode(&pv[1..], &[[1, 4, 4]]),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        tower.encode(&pv, &[[1, 2, 8], [0, 2, 2]]),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        tower.encode(&pv, &[[1, 3, 5]]),
        Err(Error::InvalidInput(_))
    ));
    let e = tower.encode(&[], &[]).unwrap();
    assert_eq!((e.rows, e.hidden, e.data.len()), (0, 96, 0));
}
