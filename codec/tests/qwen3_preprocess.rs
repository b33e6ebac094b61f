//! Parity with HF transformers 5.17's `Qwen3VLVideoProcessor` (torch 2.11 CPU), against
//! goldens made by tests/golden/make_qwen3_preprocess_golden.py: sampling plans exactly,
//! and pixel values from the fixture files bit for bit.

mod common;

use reel_codec::plan::{qwen3, Qwen3VideoProcessor, VideoProcessor};
use reel_codec::{Error, SamplePlan, SamplingOptions};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn golden_dir() -> std::path::PathBuf {
    common::video_dir().join("../golden")
}

fn golden() -> Value {
    let text = std::fs::read_to_string(golden_dir().join("qwen3_preprocess.json"))
        .expect("qwen3_preprocess.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// The processor a golden's constructor kwargs and `cap_pixels_per_frame` make.
fn processor(init: &Value, cap: bool) -> Qwen3VideoProcessor {
    let mut p = Qwen3VideoProcessor {
        cap_pixels_per_frame: cap,
        ..Default::default()
    };
    let u = |k: &str| init.get(k).and_then(Value::as_u64);
    if let Some(size) = init.get("size") {
        p.shortest_edge = size["shortest_edge"].as_u64().unwrap();
        p.longest_edge = size["longest_edge"].as_u64().unwrap();
    }
    if let Some(v) = u("min_frames") {
        p.min_frames = v as usize;
    }
    if let Some(v) = u("max_frames") {
        p.max_frames = v as usize;
    }
    if let Some(v) = u("max_video_tokens") {
        p.max_video_tokens = v;
    }
    p
}

/// Options for `p` with the call's `fps` or `num_frames`.
fn options(
    p: &Qwen3VideoProcessor,
    fps: Option<f64>,
    num_frames: Option<usize>,
) -> SamplingOptions {
    let mut o = SamplingOptions::for_processor(&VideoProcessor::Qwen3Vl(p.clone()));
    if let Some(f) = fps {
        o.fps = f;
    }
    o.nframes = num_frames;
    o
}

#[test]
fn plans_match_the_processors_sampling_and_resize() {
    let golden = golden();
    let (mut checked, mut skipped) = (0, 0);
    for case in golden["plan_cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let input = &case["input"];
        let out = &case["output"];
        let num_frames = input["num_frames"].as_u64().map(|n| n as usize);
        let fps = input["fps"].as_f64();
        if num_frames.is_none() && fps.is_none() {
            // HF's "neither fps nor num_frames": reel's options always carry an fps.
            skipped += 1;
            continue;
        }
        let p = processor(
            &input["processor"],
            input["cap_pixels_per_frame"].as_bool().unwrap(),
        );
        let o = options(&p, fps, num_frames);
        let total = input["total_frames"].as_u64().unwrap() as usize;
        let video_fps = input["video_fps"].as_f64().unwrap();
        let (h, w) = (
            input["height"].as_u64().unwrap(),
            input["width"].as_u64().unwrap(),
        );
        let indices = qwen3::sample_frames(&p, &o, total, video_fps);
        if out["stage"].as_str() == Some("frames") {
            assert!(indices.is_err(), "{name}: HF raised, reel gave {indices:?}");
            checked += 1;
            continue;
        }
        let indices = indices.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(indices, usizes(&out["indices"]), "{name}: frame indices");
        assert_eq!(
            qwen3::group_timestamps(&indices, video_fps, p.temporal_patch_size),
            f64s(&out["group_timestamps"]),
            "{name}: timestamps"
        );
        let size = qwen3::resized_size(&p, indices.len(), h, w);
        if out["stage"].as_str() == Some("resize") {
            assert!(
                size.is_err(),
                "{name}: HF raised {:?}, reel gave {size:?}",
                out["error"]
            );
            if indices.len() < 2 {
                assert!(matches!(size, Err(Error::Sampling(_))), "{name}: {size:?}");
            }
        } else {
            let size = size.unwrap_or_else(|e| panic!("{name}: {e}"));
            let expect = (
                out["resized_height"].as_u64().unwrap() as u32,
                out["resized_width"].as_u64().unwrap() as u32,
            );
            assert_eq!(size, expect, "{name}: resized size");
            let grid = usizes(&out["grid_thw"]);
            assert_eq!(
                [
                    indices.len().div_ceil(2),
                    (size.0 / 16) as usize,
                    (size.1 / 16) as usize
                ]
                .to_vec(),
                grid,
                "{name}: grid"
            );
        }
        checked += 1;
    }
    eprintln!("plan cases: {checked} checked, {skipped} skipped");
    assert!(checked > 250);
}

/// (processor, options) of a clip configuration of the golden.
fn clip_options(config: &Value) -> (Qwen3VideoProcessor, SamplingOptions) {
    let call = &config["call"];
    let p = processor(
        &config["processor"],
        call["cap_pixels_per_frame"].as_bool().unwrap_or(false),
    );
    let num_frames = call["num_frames"].as_u64().map(|n| n as usize);
    let o = options(&p, call["fps"].as_f64(), num_frames);
    (p, o)
}

#[test]
fn plans_of_the_clips_match() {
    for (name, clip) in golden()["clips"].as_object().unwrap() {
        let video = reel_codec::Video::open(common::fixture(name)).unwrap();
        let info = video.info();
        assert_eq!(
            video.index().len() as u64,
            clip["frames_total"].as_u64().unwrap(),
            "{name}: frames"
        );
        let hf_fps = clip["fps"].as_f64().unwrap();
        for (config_name, config) in clip["configs"].as_object().unwrap() {
            let (_, o) = clip_options(config);
            let plan = SamplePlan::new(info, video.index(), &o).unwrap();
            let what = format!("{name} {config_name}");
            assert_eq!(plan.frames, usizes(&config["indices"]), "{what}: frames");
            assert_eq!(
                (plan.resized_height, plan.resized_width),
                (
                    config["resized_height"].as_u64().unwrap() as u32,
                    config["resized_width"].as_u64().unwrap() as u32
                ),
                "{what}: size"
            );
            assert_eq!(
                plan.grid_thw.to_vec(),
                usizes(&config["video_grid_thw"]),
                "{what}: grid"
            );
            assert_eq!(plan.patch_dim(), 1536, "{what}");
            let expect = f64s(&config["group_timestamps"]);
            if info.frame_rate == hf_fps {
                assert_eq!(plan.group_timestamps, expect, "{what}: timestamps");
            } else {
                // reel's rate is frames / duration; PyAV's average_rate can differ in
                // the last digits (VFR, rounded container durations).
                for (a, b) in plan.group_timestamps.iter().zip(&expect) {
                    assert!((a - b).abs() < 1e-3, "{what}: timestamps {a} vs {b}");
                }
                eprintln!("{what}: stream rate {} vs PyAV's {hf_fps}", info.frame_rate);
            }
        }
    }
}

#[cfg(feature = "ffmpeg")]
fn sha256_f32(values: &[f32]) -> String {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    common::hex(&Sha256::digest(bytes))
}

#[cfg(feature = "ffmpeg")]
#[test]
fn pixel_values_from_the_file_are_hfs() {
    use reel_codec::{Cancel, Video};
    let golden = golden();
    let stored = std::fs::read(golden_dir().join("qwen3_preprocess.safetensors")).unwrap();
    let stored = safetensors::SafeTensors::deserialize(&stored).unwrap();
    let mut failures = Vec::new();
    let mut compared_stored = 0;
    for (name, clip) in golden["clips"].as_object().unwrap() {
        let video = Video::open(common::fixture(name)).unwrap();
        for (config_name, config) in clip["configs"].as_object().unwrap() {
            let (_, o) = clip_options(config);
            let plan = SamplePlan::new(video.info(), video.index(), &o).unwrap();
            let prepared = reel_codec::pipeline::prepare_cpu(&video, &plan, 2, &Cancel::new());
            let prepared = match prepared {
                Ok(p) => p,
                Err(e) => {
                    failures.push(format!("{name} {config_name}: {e}"));
                    continue;
                }
            };
            let pv = &prepared.pixel_values;
            assert_eq!(
                [pv.rows(), pv.patch_dim()].to_vec(),
                usizes(&config["pixel_values_shape"]),
                "{name} {config_name}: shape"
            );
            if let Ok(t) = stored.tensor(&format!("{name}.{config_name}.pixel_values")) {
                let reference: Vec<f32> = t
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect();
                let differing = reference
                    .iter()
                    .zip(&pv.data)
                    .filter(|(a, b)| a.to_bits() != b.to_bits())
                    .count();
                assert_eq!(differing, 0, "{name} {config_name}: stored pixel values");
                compared_stored += 1;
            }
            if sha256_f32(&pv.data) != config["pixel_values_sha256"].as_str().unwrap() {
                failures.push(format!("{name} {config_name}"));
            }
        }
    }
    assert_eq!(compared_stored, 1, "the stored case");
    assert!(
        failures.is_empty(),
        "pixel values differ from HF's: {failures:?}"
    );
}

#[test]
fn options_without_an_hf_equivalent_are_refused() {
    let video = reel_codec::Video::open(common::fixture("h264_main_bframes.mp4")).unwrap();
    let qwen3 = SamplingOptions::for_processor(&VideoProcessor::Qwen3Vl(Default::default()));
    let refused = [
        SamplingOptions {
            start: Some(1.0),
            ..qwen3.clone()
        },
        SamplingOptions {
            min_pixels: 3136.0,
            ..qwen3.clone()
        },
        SamplingOptions {
            max_pixels: Some(1e6),
            ..qwen3.clone()
        },
        SamplingOptions {
            total_pixels: 1e7,
            ..qwen3.clone()
        },
        SamplingOptions {
            resized: Some((224, 224)),
            ..qwen3.clone()
        },
        // One frame: HF's smart_resize raises (t < temporal_patch_size).
        SamplingOptions {
            frames: Some(vec![3]),
            ..qwen3.clone()
        },
    ];
    for o in &refused {
        match SamplePlan::new(video.info(), video.index(), o) {
            Err(Error::Sampling(msg)) => eprintln!("{msg}"),
            other => panic!("{o:?}: expected a sampling error, got {other:?}"),
        }
    }
    // Explicit frames and timestamps keep working, with HF's timestamps of them.
    let plan = SamplePlan::new(
        video.info(),
        video.index(),
        &SamplingOptions {
            frames: Some(vec![0, 10, 20]),
            ..qwen3
        },
    )
    .unwrap();
    assert_eq!(plan.grid_thw[0], 2);
    assert_eq!(plan.group_timestamps, [10.0 / 60.0, 20.0 / 30.0]);
}

#[test]
fn qwen2_5_plans_keep_their_geometry() {
    let video = reel_codec::Video::open(common::fixture("h264_main_bframes.mp4")).unwrap();
    let plan = SamplePlan::new(video.info(), video.index(), &SamplingOptions::default()).unwrap();
    assert_eq!(plan.patch_dim(), 1176);
    assert_eq!(plan.geometry, reel_codec::plan::PatchGeometry::QWEN2_5_VL);
    assert_eq!(plan.resize, reel_codec::preprocess::Resize::BicubicFloat);
    assert_eq!(plan.group_timestamps.len(), plan.grid_thw[0]);
    let t = &plan.timestamps;
    assert_eq!(plan.group_timestamps[0], (t[0] + t[1]) / 2.0);
}
