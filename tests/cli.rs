//! The `reel` binary end to end on the CPU: probe, frames, embed, transcode.

use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::SafeTensors;
use serde_json::Value;

/// `reel transcode` of small frames: quick on the CPU.
const SMALL_FRAMES: [&str; 6] = [
    "--what",
    "frames",
    "--min-pixels",
    "3136",
    "--max-pixels",
    "20000",
];

fn reel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_reel"))
}

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(rel)
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("reel runs");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn probe_prints_json_stream_info() {
    let out = run_ok(
        reel()
            .args(["probe", "--json"])
            .arg(data("video/h264_rotated.mp4")),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stream"]["codec"], "h264");
    assert_eq!(v["stream"]["frame_count"], 30);
    assert_eq!(v["stream"]["rotation"], 270, "degrees clockwise, a number");
    let err = reel()
        .args(["probe"])
        .arg(data("video/random.bin"))
        .output()
        .unwrap();
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("unrecognized container"));
}

#[test]
fn embed_writes_embeddings_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e.safetensors");
    run_ok(
        reel()
            .args(["embed", "--device", "cpu", "--model"])
            .arg(data("tiny-qwen2.5-vl"))
            .arg(data("video/hevc_main.mp4"))
            .arg("-o")
            .arg(&out),
    );
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let grid: Vec<i64> = st
        .tensor("video_grid_thw")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let emb = st.tensor("embeddings").unwrap();
    assert_eq!(
        emb.shape(),
        [(grid[0] * grid[1] * grid[2] / 4) as usize, 96]
    );
    assert!(f32s(emb.data()).iter().all(|v| v.is_finite()));
}

/// Split encoding works on GPUs only: on the CPU it is a clear error, with no output.
#[test]
fn embed_split_encode_on_the_cpu_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("e.safetensors");
    let err = reel()
        .args(["embed", "--device", "cpu", "--split-encode", "--model"])
        .arg(data("tiny-qwen2.5-vl"))
        .arg(data("video/hevc_main.mp4"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!err.status.success());
    assert!(
        String::from_utf8_lossy(&err.stderr).contains("--split-encode needs a GPU"),
        "{}",
        String::from_utf8_lossy(&err.stderr)
    );
    assert!(!out.exists());
}

#[test]
fn transcode_shards_agree_with_the_manifest_and_with_frames() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    for f in [
        "h264_main_bframes.mp4",
        "vp9.webm",
        "hevc.hevc",
        "empty.mp4",
    ] {
        std::fs::copy(data(&format!("video/{f}")), inputs.join(f)).unwrap();
    }
    let out = dir.path().join("out");
    let status = reel()
        .args([
            "transcode",
            "--device",
            "cpu",
            "--quiet",
            "--shard-size",
            "3MiB",
            "-o",
        ])
        .arg(&out)
        .arg(&inputs)
        .status()
        .unwrap();
    assert_eq!(
        status.code(),
        Some(2),
        "a failed video must make the exit code say so"
    );
    let rows: Vec<Value> = std::fs::read_to_string(out.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows.iter().filter(|r| r["status"] == "error").count(), 1);
    for row in rows.iter().filter(|r| r["status"] == "ok") {
        let shard = std::fs::read(out.join(row["shard"].as_str().unwrap())).unwrap();
        let st = SafeTensors::deserialize(&shard).unwrap();
        let pv = st
            .tensor(row["tensors"]["pixel_values"].as_str().unwrap())
            .unwrap();
        let grid = &row["video_grid_thw"];
        let rows_expected = (0..3).map(|i| grid[i].as_u64().unwrap()).product::<u64>() as usize;
        assert_eq!(pv.shape(), [rows_expected, 1176]);
        // The same video through `reel frames`.
        let single = dir.path().join("single.safetensors");
        run_ok(
            reel()
                .args(["frames", "--device", "cpu"])
                .arg(row["source"].as_str().unwrap())
                .arg("-o")
                .arg(&single),
        );
        let single = std::fs::read(&single).unwrap();
        let st1 = SafeTensors::deserialize(&single).unwrap();
        assert_eq!(
            st1.tensor("pixel_values").unwrap().data(),
            pv.data(),
            "{}",
            row["source"]
        );
    }
    // A rerun skips what is done and writes no new rows for it.
    let again = reel()
        .args(["transcode", "--device", "cpu", "--json", "-o"])
        .arg(&out)
        .arg(&inputs)
        .output()
        .unwrap();
    let summary: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(summary["skipped"], 3);
    assert_eq!(summary["ok"], 0);
}

#[test]
fn transcode_shards_cover_the_inputs_once() {
    let dir = tempfile::tempdir().unwrap();
    let videos = data("video");
    let mut sources = Vec::new();
    for i in 0..3 {
        let out = dir.path().join(format!("o{i}"));
        let o = reel()
            .args([
                "transcode",
                "--device",
                "cpu",
                "--json",
                "--shard",
                &format!("{i}/3"),
            ])
            .args(SMALL_FRAMES)
            .arg("-o")
            .arg(&out)
            .arg(&videos)
            .output()
            .unwrap();
        let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
        let manifest =
            std::fs::read_to_string(out.join(format!("manifest-{i:05}-of-00003.jsonl"))).unwrap();
        for line in manifest.lines() {
            let row: Value = serde_json::from_str(line).unwrap();
            sources.push(row["source"].as_str().unwrap().to_string());
        }
        assert_eq!(
            summary["videos"].as_u64().unwrap() as usize,
            manifest.lines().count()
        );
    }
    let total = sources.len();
    sources.sort();
    sources.dedup();
    assert_eq!(sources.len(), total, "a video was taken by two shards");
    let all = std::fs::read_dir(&videos)
        .unwrap()
        .filter(|e| {
            let p = e.as_ref().unwrap().path();
            matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("mp4" | "mkv" | "webm" | "h264" | "hevc")
            )
        })
        .count();
    assert_eq!(total, all, "shards missed videos");
}

/// Copies of one file in one run (equal content hashes) land in one shard under distinct
/// tensor names, each row pointing at its own tensors.
#[test]
fn transcode_keeps_copies_of_a_file_apart() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    for copy in ["a.mp4", "b.mp4", "c.mp4"] {
        std::fs::copy(data("video/h264_main_bframes.mp4"), inputs.join(copy)).unwrap();
    }
    let out = dir.path().join("out");
    run_ok(
        reel()
            .args(["transcode", "--device", "cpu", "--quiet", "-o"])
            .arg(&out)
            .arg(&inputs),
    );
    let rows: Vec<Value> = std::fs::read_to_string(out.join("manifest.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    let names: std::collections::BTreeSet<&str> = rows
        .iter()
        .map(|r| r["tensors"]["pixel_values"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "tensor names collide: {names:?}");
    for row in &rows {
        assert_eq!(row["status"], "ok");
        let shard = std::fs::read(out.join(row["shard"].as_str().unwrap())).unwrap();
        let st = SafeTensors::deserialize(&shard).unwrap();
        st.tensor(row["tensors"]["pixel_values"].as_str().unwrap())
            .unwrap();
    }
}

/// `--trace` writes a Chrome trace of the job: demux, decode segments, frame conversions.
#[test]
fn trace_writes_a_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace.json");
    run_ok(
        reel()
            .arg("--trace")
            .arg(&trace)
            .args(["embed", "--device", "cpu", "--model"])
            .arg(data("tiny-qwen2.5-vl"))
            .arg("-o")
            .arg(dir.path().join("e.safetensors"))
            .arg(data("video/h264_longgop.mp4")),
    );
    let events: Vec<Value> = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let count = |name: &str| {
        events
            .iter()
            .filter(|e| e["name"] == name && e["ph"] == "B")
            .count()
    };
    assert_eq!(count("demux"), 1);
    assert!(count("segment") >= 1);
    assert_eq!(count("convert"), 24, "one conversion per sampled frame");
    for e in events.iter().filter(|e| e["ph"] == "B" || e["ph"] == "E") {
        assert!(
            e["ts"].as_f64().is_some() && e["tid"].as_u64().is_some(),
            "{e}"
        );
    }
}

/// A rerun skips what is done with the same settings, redoes it with other sampling, and
/// survives an unfinished last manifest row (an interrupted run): the row is cut and its
/// video redone, every line of the manifest stays a row.
#[test]
fn transcode_resumes_by_content_and_settings() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let inputs = [
        data("video/h264_main_bframes.mp4"),
        data("video/hevc_main.mp4"),
    ];
    let run = |fps: &str| -> Value {
        let stdout = run_ok(
            reel()
                .args(["transcode", "--device", "cpu", "--json"])
                .args(["--fps", fps])
                .args(SMALL_FRAMES)
                .arg("-o")
                .arg(&out)
                .args(&inputs),
        );
        serde_json::from_str(&stdout).unwrap()
    };
    let counts = |v: &Value| (v["ok"].as_u64().unwrap(), v["skipped"].as_u64().unwrap());
    assert_eq!(counts(&run("2")), (2, 0));
    assert_eq!(counts(&run("2")), (0, 2), "same settings: nothing to do");
    assert_eq!(counts(&run("1")), (2, 0), "other sampling: redone");
    let manifest = out.join("manifest.jsonl");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str(r#"{"source":"interrupted","si"#);
    std::fs::write(&manifest, &text).unwrap();
    assert_eq!(
        counts(&run("1")),
        (0, 2),
        "the torn row is cut, the rows before it count"
    );
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert_eq!(
        text.lines().count(),
        4,
        "two runs did work, two skipped everything"
    );
    for line in text.lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        assert_eq!(row["status"], "ok");
        assert_eq!(row["settings"].as_str().unwrap().len(), 16);
    }
}

/// Embeddings keep the tower's precision in the shards: a bf16 tower writes BF16 tensors
/// whose values are exactly those of `reel embed --dtype bf16`.
#[test]
fn transcode_stores_bf16_embeddings_as_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let video = data("video/h264_main_bframes.mp4");
    let out = dir.path().join("out");
    run_ok(
        reel()
            .args([
                "transcode",
                "--device",
                "cpu",
                "--quiet",
                "--what",
                "embeddings",
            ])
            .args(["--dtype", "bf16", "--model"])
            .arg(data("tiny-qwen2.5-vl"))
            .arg("-o")
            .arg(&out)
            .arg(&video),
    );
    let row: Value = serde_json::from_str(
        std::fs::read_to_string(out.join("manifest.jsonl"))
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let shard = std::fs::read(out.join(row["shard"].as_str().unwrap())).unwrap();
    let st = SafeTensors::deserialize(&shard).unwrap();
    let emb = st
        .tensor(row["tensors"]["embeddings"].as_str().unwrap())
        .unwrap();
    assert_eq!(emb.dtype(), safetensors::Dtype::BF16);
    let widened: Vec<f32> = emb
        .data()
        .chunks_exact(2)
        .map(|c| f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16))
        .collect();
    let single = dir.path().join("e.safetensors");
    run_ok(
        reel()
            .args(["embed", "--device", "cpu", "--dtype", "bf16", "--model"])
            .arg(data("tiny-qwen2.5-vl"))
            .arg("-o")
            .arg(&single)
            .arg(&video),
    );
    let single = std::fs::read(&single).unwrap();
    let st1 = SafeTensors::deserialize(&single).unwrap();
    assert_eq!(widened, f32s(st1.tensor("embeddings").unwrap().data()));
}

#[test]
fn a_folder_of_another_architecture_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
            "vision_config": {"hidden_act": "gelu_pytorch_tanh", "depth": 2}}"#,
    )
    .unwrap();
    let out = reel()
        .args(["embed", "--device", "cpu", "-o"])
        .arg(dir.path().join("out.safetensors"))
        .arg("--model")
        .arg(dir.path())
        .arg(data("video/h264_main_bframes.mp4"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported model"), "{err}");
    assert!(err.contains("LlavaForConditionalGeneration"), "{err}");
    assert!(err.contains("Qwen2_5_VLForConditionalGeneration"), "{err}");
    assert!(err.contains("Qwen3VLForConditionalGeneration"), "{err}");
    assert!(!dir.path().join("out.safetensors").exists());
    let list = run_ok(reel().args(["model", "list", "--json"]));
    let list: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["family"], "qwen2_5_vl");
    assert!(list[0]["architectures"]
        .as_array()
        .unwrap()
        .contains(&Value::from("Qwen2_5_VLForConditionalGeneration")));
}

#[test]
fn serve_prints_its_configuration_from_file_and_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("reel.toml");
    std::fs::write(
        &file,
        "cache_mib = 3\nworkers = 2\nlisten = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let out = run_ok(
        reel()
            .args(["serve", "--print-config", "--workers", "6", "--config"])
            .arg(&file),
    );
    let printed: toml::Value = toml::from_str(&out).unwrap();
    assert_eq!(printed["cache_mib"].as_integer(), Some(3), "{out}");
    assert_eq!(printed["workers"].as_integer(), Some(6), "{out}");
    assert_eq!(printed["listen"].as_str(), Some("127.0.0.1:1"), "{out}");
    std::fs::write(&file, "cache_mb = 3\n").unwrap();
    let bad = reel()
        .args(["serve", "--print-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cache_mb"));
}

#[test]
fn a_closed_stdout_ends_quietly() {
    use std::process::Stdio;
    let mut child = reel()
        .args(["probe", "--json", "--packets"])
        .arg(data("video/h264_longgop.mp4"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn embeddings_from_the_file_are_hfs() {
    // HF's tiny tower on HF's processor on PyAV's frames of the same file
    // (tests/golden/make_color_golden.py), against `reel embed` on the CPU in f32.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("emb.safetensors");
    run_ok(
        reel()
            .args(["embed", "--device", "cpu", "--dtype", "f32", "--model"])
            .arg(data("tiny-qwen2.5-vl"))
            .arg("-o")
            .arg(&out)
            .arg(data("video/h264_main_bframes.mp4")),
    );
    let bytes = std::fs::read(&out).unwrap();
    let ours = SafeTensors::deserialize(&bytes).unwrap();
    let ours = f32s(ours.tensor("embeddings").unwrap().data());
    let golden = std::fs::read(data("golden/color.safetensors")).unwrap();
    let golden = SafeTensors::deserialize(&golden).unwrap();
    let theirs = f32s(
        golden
            .tensor("h264_main_bframes.mp4.tiny_embeddings")
            .unwrap()
            .data(),
    );
    assert_eq!(ours.len(), theirs.len());
    let diff: f64 = ours
        .iter()
        .zip(&theirs)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum();
    let norm: f64 = theirs.iter().map(|b| f64::from(*b).powi(2)).sum();
    let rel = (diff / norm).sqrt();
    println!("tiny tower from the file: relative L2 {rel:.2e} against HF");
    assert!(rel <= 2e-3, "relative L2 {rel}");
}

#[test]
fn frames_take_the_colour_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let frames = |color: &str| {
        let out = dir.path().join(format!("{color}.safetensors"));
        run_ok(
            reel()
                .args(["frames", "--device", "cpu", "--color", color, "-o"])
                .arg(&out)
                .arg(data("video/h264_main_bframes.mp4")),
        );
        let bytes = std::fs::read(&out).unwrap();
        let t = SafeTensors::deserialize(&bytes).unwrap();
        f32s(t.tensor("pixel_values").unwrap().data())
    };
    let (reference, accurate) = (frames("reference"), frames("accurate"));
    assert_eq!(reference.len(), accurate.len());
    assert_ne!(reference, accurate);
    let bad = reel()
        .args(["frames", "--color", "pretty", "-o", "/dev/null"])
        .arg(data("video/h264_main_bframes.mp4"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
