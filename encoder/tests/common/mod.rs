//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use reel_encoder::VisionTower;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use sha2::{Digest, Sha256};

/// The repository root: `REEL_REPO` when set (a test binary carried to another
/// machine), else where this crate was built.
pub fn repo() -> PathBuf {
    match std::env::var_os("REEL_REPO") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf(),
    }
}

/// The committed tiny model folder.
pub fn tiny_dir() -> PathBuf {
    repo().join("tests/data/tiny-qwen2.5-vl")
}

/// A committed tiny Qwen3-VL-family folder: `qwen3_vl` (head_dim 64, deepstack after
/// blocks 0 and 1) or `qwen3_5` (head_dim 72, no deepstack).
pub fn qwen3_dir(tower: &str) -> PathBuf {
    repo().join(match tower {
        "qwen3_vl" => "tests/data/tiny-qwen3-vl",
        _ => "tests/data/tiny-qwen3.5",
    })
}

/// Runs every case of tests/data/golden/qwen3_vl_encoder.safetensors (written by
/// tests/golden/encoder/make_qwen3_vl_golden.py) for the tiny tower `name` against HF's
/// float32 output, packed `[main | deepstack…]`. f32 towers must be within 1e-4
/// (max|d| / max|ref|); bf16 towers within twice HF's own bf16 error on that case.
pub fn qwen3_golden_parity(tower: &VisionTower, name: &str) {
    let path = repo().join("tests/data/golden/qwen3_vl_encoder.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["golden"]).unwrap();
    let golden = read_all(&path);
    let dtype = tower.dtype();
    let cases = meta["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    println!("tiny {name} tower, reel {dtype} vs HF f32 (max|d| / max|ref|):");
    for c in cases {
        let case = c["name"].as_str().unwrap();
        let grids: Vec<[usize; 3]> = serde_json::from_value(c["grids"].clone()).unwrap();
        let rows = c["input_rows"].as_u64().unwrap() as usize;
        let pv = pixel_values(c["input_seed"].as_u64().unwrap(), rows, 1536);
        let bytes: Vec<u8> = pv.iter().flat_map(|v| v.to_le_bytes()).collect();
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sha, c["input_sha256"], "{case}: input generator differs");
        let reference = f32s(&golden[&format!("{name}.{case}.f32")]);
        let emb = tower.encode(&pv, &grids).unwrap();
        let info = &c["towers"][name];
        assert_eq!(emb.hidden as u64, info["width"].as_u64().unwrap(), "{case}");
        assert_eq!(emb.data.len(), reference.len(), "{case}");
        let err = rel_err(&emb.data, &reference);
        let hf_bf16 = info["hf_bf16_rel_err"].as_f64().unwrap();
        let bound = if dtype == reel_encoder::DType::F32 {
            1e-4
        } else {
            2.0 * hf_bf16
        };
        println!("  {case:<14} grids {grids:?}: {err:.3e} (HF's own bf16: {hf_bf16:.3e}; bound {bound:.1e})");
        assert!(
            err <= bound,
            "{name} {case}: {dtype} parity {err:.3e} > {bound:.1e}"
        );
    }
}

/// The golden file written by tests/golden/encoder/make_encoder_golden.py.
pub fn golden_path() -> PathBuf {
    repo().join("tests/data/golden/encoder.safetensors")
}

/// The golden input generator (see make_encoder_golden.py `pixel_values`).
pub fn pixel_values(seed: u64, rows: usize, cols: usize) -> Vec<f32> {
    reel_encoder::init::seeded_pixels(seed, rows, cols)
}

/// One tensor read from a safetensors file.
#[derive(Clone)]
pub struct Raw {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

/// Reads every tensor of a safetensors file.
pub fn read_all(path: &Path) -> BTreeMap<String, Raw> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                Raw {
                    dtype: v.dtype(),
                    shape: v.shape().to_vec(),
                    data: v.data().to_vec(),
                },
            )
        })
        .collect()
}

/// Writes tensors to a safetensors file.
pub fn write_all(path: &Path, tensors: &BTreeMap<String, Raw>) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, r)| {
            (
                k.clone(),
                TensorView::new(r.dtype, r.shape.clone(), &r.data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Reads f32 tensor data.
pub fn f32s(r: &Raw) -> Vec<f32> {
    assert_eq!(r.dtype, Dtype::F32);
    r.data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Copies the tiny model's config.json into `dir`.
pub fn copy_config(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(tiny_dir().join("config.json"), dir.join("config.json")).unwrap();
}

/// max|a - b| / max|b|.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f64, |m, &x| m.max((x as f64).abs()));
    let d = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()));
    d / scale
}

/// One golden case (tests/data/golden/encoder.safetensors metadata).
pub struct Case {
    pub name: String,
    pub grids: Vec<[usize; 3]>,
    pub seed: u64,
    pub rows: usize,
    pub sha: String,
}

pub fn golden_cases() -> Vec<Case> {
    let bytes = std::fs::read(golden_path()).unwrap();
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&meta.metadata().as_ref().unwrap()["golden"]).unwrap();
    assert_eq!(meta["attn_implementation"], "sdpa");
    meta["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            grids: serde_json::from_value(c["grids"].clone()).unwrap(),
            seed: c["input_seed"].as_u64().unwrap(),
            rows: c["input_rows"].as_u64().unwrap() as usize,
            sha: c["input_sha256"].as_str().unwrap().to_string(),
        })
        .collect()
}

/// Runs every golden case on `tower` against the HF reference `which` ("f32" or "bf16");
/// panics if the worst error exceeds `bound`.
pub fn golden_parity(tower: &VisionTower, which: &str, bound: f64) {
    let dtype = tower.dtype();
    let golden = read_all(&golden_path());
    let cases = golden_cases();
    assert_eq!(cases.len(), 6);
    let mut worst = 0f64;
    println!("tiny Qwen2.5-VL tower, reel {dtype} vs HF {which} (max|d| / max|ref|):");
    for c in &cases {
        let pv = pixel_values(c.seed, c.rows, 1176);
        let bytes: Vec<u8> = pv.iter().flat_map(|v| v.to_le_bytes()).collect();
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            sha, c.sha,
            "{}: input generator differs from the Python one",
            c.name
        );
        let reference = f32s(&golden[&format!("{}.{which}", c.name)]);
        let emb = tower.encode(&pv, &c.grids).unwrap();
        assert_eq!(emb.rows, c.rows / 4);
        assert_eq!(emb.hidden, 96);
        assert_eq!(emb.data.len(), reference.len());
        let err = rel_err(&emb.data, &reference);
        let mean_abs = emb
            .data
            .iter()
            .zip(&reference)
            .map(|(a, b)| (a - b).abs() as f64)
            .sum::<f64>()
            / reference.len() as f64;
        println!(
            "  {:<22} grids {:?}: max rel {err:.3e}  mean abs {mean_abs:.3e}",
            c.name, c.grids
        );
        worst = worst.max(err);
    }
    println!("  worst {worst:.3e} (bound {bound:.0e})");
    assert!(worst <= bound, "{dtype} parity {worst:.3e} > {bound:.0e}");
}

/// Asserts that a (3, 8, 12) video encodes to the concatenation of its three (1, 8, 12)
/// slices encoded one by one.
pub fn assert_slices_independent(tower: &VisionTower) {
    let (slice, dim) = (8 * 12, tower.config().patch_dim());
    let pv = pixel_values(77, 3 * slice, dim);
    let whole = tower.encode(&pv, &[[3, 8, 12]]).unwrap();
    let per_slice = whole.data.len() / 3;
    for t in 0..3 {
        let one = tower
            .encode(&pv[t * slice * dim..(t + 1) * slice * dim], &[[1, 8, 12]])
            .unwrap();
        let err = rel_err(&whole.data[t * per_slice..(t + 1) * per_slice], &one.data);
        assert!(err < 1e-6, "slice {t}: whole vs slice {err:.3e}");
    }
}

/// Asserts that encoding three items in one batch gives each item's rows of encoding it
/// alone (items never attend to each other).
pub fn assert_batch_equals_separate(tower: &VisionTower) {
    let grids = [[2, 8, 8], [1, 6, 10], [1, 4, 4]];
    let items: Vec<Vec<f32>> = grids
        .iter()
        .enumerate()
        .map(|(i, g)| {
            pixel_values(
                100 + i as u64,
                g.iter().product(),
                tower.config().patch_dim(),
            )
        })
        .collect();
    let batch = tower.encode(&items.concat(), &grids).unwrap();
    let mut off = 0;
    for (g, pv) in grids.iter().zip(&items) {
        let one = tower.encode(pv, &[*g]).unwrap();
        let n = one.data.len();
        let err = rel_err(&batch.data[off..off + n], &one.data);
        assert!(err < 1e-6, "grid {g:?}: batch vs single {err:.3e}");
        off += n;
    }
    assert_eq!(off, batch.data.len());
}
