//! Qwen3-VL "from the file": `reel embed` on the CPU in f32 against HF transformers on the
//! same video (PyAV frames → `Qwen3VLVideoProcessor` with the model folder's
//! video_preprocessor_config.json → the tiny tower loaded with `from_pretrained` in f32),
//! tests/golden/make_qwen3_e2e_golden.py. Needs the CPU decoder (feature `ffmpeg`).
#![cfg(feature = "ffmpeg")]

use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::SafeTensors;

/// (clip, model folder, tower key in the golden file). Both towers take the same
/// processor configuration, so the same sampling and grid.
const CASES: [(&str, &str, &str); 4] = [
    ("h264_main_bframes.mp4", "tiny-qwen3-vl", "qwen3_vl"),
    ("h264_main_bframes.mp4", "tiny-qwen3.5", "qwen3_5"),
    ("av1.mp4", "tiny-qwen3-vl", "qwen3_vl"),
    ("av1.mp4", "tiny-qwen3.5", "qwen3_5"),
];

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn values<const N: usize, T>(st: &SafeTensors, name: &str, from: fn([u8; N]) -> T) -> Vec<T> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    t.data()
        .chunks_exact(N)
        .map(|c| from(c.try_into().unwrap()))
        .collect()
}

/// Runs `reel COMMAND --device cpu --model MODEL ARGS… VIDEO -o OUT` and returns the
/// bytes of the safetensors file it wrote.
fn run_reel(command: &str, model: &Path, args: &[&str], video: &Path, out: &Path) -> Vec<u8> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_reel"));
    cmd.args([command, "--device", "cpu", "--model"])
        .arg(model)
        .args(args)
        .arg(video)
        .arg("-o")
        .arg(out);
    let run = cmd.output().expect("reel runs");
    assert!(
        run.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    std::fs::read(out).unwrap()
}

#[test]
fn qwen3_embeddings_from_the_file_are_hfs() {
    let golden = std::fs::read(data("golden/qwen3_e2e.safetensors")).unwrap();
    let golden = SafeTensors::deserialize(&golden).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for (clip, model, tower) in CASES {
        let out = dir.path().join(format!("{clip}.{tower}.safetensors"));
        let bytes = run_reel(
            "embed",
            &data(model),
            &["--dtype", "f32"],
            &data(&format!("video/{clip}")),
            &out,
        );
        let ours = SafeTensors::deserialize(&bytes).unwrap();

        let grid = values(&ours, "video_grid_thw", i64::from_le_bytes);
        let frames = values(&ours, "frame_indices", i64::from_le_bytes);
        let stamps = values(&ours, "grid_timestamps", f64::from_le_bytes);
        let g = |what: &str| format!("{clip}.{what}");
        assert_eq!(
            grid,
            values(&golden, &g("video_grid_thw"), i64::from_le_bytes),
            "{clip} {tower} grid"
        );
        assert_eq!(
            frames,
            values(&golden, &g("frame_indices"), i64::from_le_bytes),
            "{clip} {tower} frames"
        );
        assert_eq!(
            stamps,
            values(&golden, &g("grid_timestamps"), f64::from_le_bytes),
            "{clip} {tower} timestamps"
        );

        let emb = ours.tensor("embeddings").unwrap();
        let reference = golden.tensor(&g(&format!("{tower}.f32"))).unwrap();
        assert_eq!(
            emb.shape(),
            reference.shape(),
            "{clip} {tower} embeddings shape"
        );
        let a = values(&ours, "embeddings", f32::from_le_bytes);
        let b = values(&golden, &g(&format!("{tower}.f32")), f32::from_le_bytes);
        let max_d = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        let max_ref = b.iter().map(|y| y.abs()).fold(0f32, f32::max);
        let rel = max_d / max_ref;
        println!("{clip} {tower}: grid {grid:?}, frames {frames:?}, max|d|/max|ref| {rel:.2e}");
        if rel.is_nan() || rel > 1e-4 {
            failures.push(format!("{clip} {tower}: max|d|/max|ref| {rel:e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The model folder's processor sets the sampling defaults (here `fps` 1), and a flag
/// given on the command line still wins.
#[test]
fn the_folders_processor_sets_the_sampling_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir(&model).unwrap();
    std::fs::copy(data("tiny-qwen3-vl/config.json"), model.join("config.json")).unwrap();
    let mut processor: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data("tiny-qwen3-vl/video_preprocessor_config.json")).unwrap(),
    )
    .unwrap();
    processor["fps"] = serde_json::json!(1);
    std::fs::write(
        model.join("video_preprocessor_config.json"),
        processor.to_string(),
    )
    .unwrap();
    let frames = |extra: &[&str]| -> Vec<i64> {
        let out = dir.path().join("frames.safetensors");
        let video = data("video/h264_main_bframes.mp4");
        let bytes = run_reel("frames", &model, extra, &video, &out);
        values(
            &SafeTensors::deserialize(&bytes).unwrap(),
            "frame_indices",
            i64::from_le_bytes,
        )
    };
    // 90 frames at 30 fps: 3 at 1 fps, raised to min_frames 4; 6 at 2 fps.
    assert_eq!(frames(&[]), [0, 30, 59, 89]);
    assert_eq!(frames(&["--fps", "2"]), [0, 18, 36, 53, 71, 89]);
}
