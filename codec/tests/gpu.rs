//! GPU tests: NVDEC decoding and the CUDA preprocessing kernels. They need an NVIDIA
//! GPU with NVDEC; without one they skip, unless REEL_REQUIRE_GPU=1 (set by
//! scripts/gpu-suite.sh on the GPU machine), where a missing GPU fails them.
//!
//! They need no FFmpeg: NVDEC's pictures are checked against ffprobe's framemd5
//! (expected.json), and the GPU preprocessing against the CPU preprocessing run on the
//! very pictures NVDEC decoded.

mod common;
mod common_gpu;

use std::collections::BTreeMap;
use std::sync::Arc;

use reel_codec::decode::DecodedFrame;
use reel_codec::gpu::{Gpu, PixelDtype, PrepareOptions, SliceDone};
use reel_codec::pipeline::{frame_to_rgb, patchify_frames};
use reel_codec::preprocess::{YuvImage, YuvSamples};
use reel_codec::{Cancel, Chroma, Error, SamplePlan, SamplingOptions, Video};

fn gpu() -> Option<Arc<Gpu>> {
    match Gpu::open(0) {
        Ok(gpu) => Some(gpu),
        Err(e) if std::env::var_os("REEL_REQUIRE_GPU").is_some() => {
            panic!("REEL_REQUIRE_GPU is set but: {e}")
        }
        Err(e) => {
            eprintln!("no usable GPU ({e}): skipped");
            None
        }
    }
}

/// Fixtures NVDEC on Hopper cannot decode, by design of the hardware.
const UNSUPPORTED: [&str; 3] = ["h264_444.mp4", "h264_high10.mp4", "av1.mp4"];

fn decodable_fixtures() -> Vec<String> {
    common::expectations()
        .into_iter()
        .filter(|(name, e)| {
            e["error"].is_null()
                && !name.contains("truncated")
                && !UNSUPPORTED.contains(&name.as_str())
        })
        .map(|(name, _)| name)
        .collect()
}

#[test]
fn nvdec_decodes_every_fixture_bit_exactly() {
    let Some(gpu) = gpu() else { return };
    for name in decodable_fixtures() {
        let expect = &common::expectations()[&name];
        let video = Video::open(common::fixture(&name)).unwrap();
        let all: Vec<usize> = (0..video.index().len()).collect();
        let mut got = BTreeMap::new();
        let report = common_gpu::decode_yuv(&gpu, &video, &all, &mut |frame, yuv, _| {
            got.insert(frame, common::md5_hex(&yuv));
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let md5s = expect["framemd5"].as_array().unwrap();
        let damaged: Vec<u64> = expect
            .get("damaged_frames")
            .and_then(|d| d.as_array())
            .map(|d| d.iter().map(|v| v.as_u64().unwrap()).collect())
            .unwrap_or_default();
        assert_eq!(got.len(), md5s.len(), "{name}: frames delivered");
        let mut matched = 0;
        for (f, md5) in &got {
            if damaged.contains(&(*f as u64)) {
                continue;
            }
            assert_eq!(
                md5,
                md5s[*f].as_str().unwrap(),
                "{name}: frame {f} differs from FFmpeg"
            );
            matched += 1;
        }
        eprintln!(
            "{name}: {matched} frames bit-identical to FFmpeg; corrupt reported: {:?}",
            report.corrupt_frames
        );
    }
}

/// Packed planar YUV (decode_yuv's layout) as a YuvImage.
fn yuv_image<'a>(info: &reel_codec::StreamInfo, bytes: &'a [u8]) -> YuvImage<'a> {
    let (w, h) = (info.width as usize, info.height as usize);
    let bps = if info.bit_depth > 8 { 2 } else { 1 };
    let (cw, ch) = match info.chroma {
        Chroma::Yuv420 => (w.div_ceil(2), h.div_ceil(2)),
        _ => (w, h),
    };
    let (y, rest) = bytes.split_at(w * h * bps);
    let (u, v) = rest.split_at(cw * ch * bps);
    let planes = [y, u, v];
    YuvImage {
        width: w,
        height: h,
        chroma: info.chroma,
        samples: if bps == 2 {
            YuvSamples::U16(planes)
        } else {
            YuvSamples::U8(planes)
        },
        strides: [w * bps, cw * bps, cw * bps],
    }
}

#[test]
fn gpu_preprocessing_matches_cpu_on_the_same_pictures() {
    let Some(gpu) = gpu() else { return };
    // Both colour conversions: the readers' integers (default) and the float path.
    // Qwen3-VL: patch 16 and the uint8 resize arithmetic; a small budget makes both
    // passes downscale.
    let qwen3 = |p: reel_codec::plan::Qwen3VideoProcessor| {
        SamplingOptions::for_processor(&reel_codec::plan::VideoProcessor::Qwen3Vl(p))
    };
    let options = [
        SamplingOptions::default(),
        SamplingOptions {
            max_pixels: Some(28.0 * 28.0 * 30.0),
            min_pixels: 3136.0,
            color: reel_codec::preprocess::ColorMode::Accurate,
            ..Default::default()
        },
        qwen3(Default::default()),
        qwen3(reel_codec::plan::Qwen3VideoProcessor {
            shortest_edge: 4096,
            longest_edge: 16384 * 8,
            ..Default::default()
        }),
    ];
    for name in decodable_fixtures() {
        if name.contains("corrupt") {
            continue;
        }
        let video = Video::open(common::fixture(&name)).unwrap();
        for opts in &options {
            let plan = SamplePlan::new(video.info(), video.index(), opts).unwrap();
            let info = video.info();
            let (h, w) = (plan.resized_height as usize, plan.resized_width as usize);
            let mut by_frame = BTreeMap::new();
            common_gpu::decode_yuv(&gpu, &video, &plan.frames, &mut |frame, yuv, corrupt| {
                let decoded = DecodedFrame {
                    frame,
                    image: yuv_image(info, &yuv),
                    corrupt,
                    full_range: None,
                };
                by_frame.insert(
                    frame,
                    frame_to_rgb(info, &decoded, h, w, plan.color, plan.resize),
                );
            })
            .unwrap();
            let mut frames: Vec<_> = plan.frames.iter().map(|f| by_frame[f].clone()).collect();
            while frames.len() < plan.slots() {
                frames.push(frames.last().unwrap().clone());
            }
            let cpu = patchify_frames(&frames, plan.grid_thw, &plan.geometry, &plan.normalization);
            for dtype in [PixelDtype::F32, PixelDtype::Bf16] {
                let prepared = gpu
                    .prepare(&video, &plan, 4, dtype, &Cancel::new())
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                let got = prepared.to_host_f32().unwrap();
                assert_eq!(got.len(), cpu.data.len());
                let diffs: Vec<f32> = got
                    .iter()
                    .zip(&cpu.data)
                    .map(|(a, b)| (a - b).abs())
                    .collect();
                let max = diffs.iter().copied().fold(0.0, f32::max);
                let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
                eprintln!(
                    "{name} grid {:?} {:?} {dtype:?}: max abs diff {max:e}, mean {mean:e}",
                    plan.grid_thw, plan.color
                );
                let (max_tol, mean_tol) = match dtype {
                    PixelDtype::F32 => (0.05, 0.005),
                    // bf16 keeps 8 bits of mantissa: values up to ~2.2 round by ≤ 2^-8·2.
                    PixelDtype::Bf16 => (0.02, 0.005),
                };
                assert!(
                    max <= max_tol && mean <= mean_tol,
                    "{name}: max {max}, mean {mean}"
                );
            }
        }
    }
}

#[test]
fn streams_nvdec_cannot_decode_get_a_clear_error() {
    let Some(gpu) = gpu() else { return };
    for name in UNSUPPORTED {
        let video = Video::open(common::fixture(name)).unwrap();
        match gpu.check_stream(video.info()) {
            Err(Error::Unsupported(reason)) => eprintln!("{name}: {reason}"),
            other => panic!("{name}: expected an Unsupported error, got {other:?}"),
        }
    }
}

#[test]
fn corrupt_stream_yields_its_frames_and_reports_the_damage() {
    let Some(gpu) = gpu() else { return };
    let video = Video::open(common::fixture("h264_corrupt.mp4")).unwrap();
    let all: Vec<usize> = (0..video.index().len()).collect();
    let plan = SamplePlan::new(
        video.info(),
        video.index(),
        &SamplingOptions {
            frames: Some(all),
            ..Default::default()
        },
    )
    .unwrap();
    let prepared = gpu
        .prepare(&video, &plan, 2, PixelDtype::F32, &Cancel::new())
        .unwrap();
    eprintln!(
        "corrupt frames reported by NVDEC: {:?}",
        prepared.report.corrupt_frames
    );
    assert!(
        !prepared.report.corrupt_frames.is_empty(),
        "damage in frames 30..44 went unreported"
    );
    assert!(prepared
        .report
        .corrupt_frames
        .iter()
        .all(|f| (30..60).contains(f)));
}

#[test]
fn truncated_file_is_a_typed_error() {
    let Some(gpu) = gpu() else { return };
    let video = Video::open(common::fixture("h264_truncated.mp4")).unwrap();
    let plan = SamplePlan::new(video.info(), video.index(), &SamplingOptions::default()).unwrap();
    let err = gpu
        .prepare(&video, &plan, 2, PixelDtype::F32, &Cancel::new())
        .err()
        .expect("truncated file");
    assert!(matches!(err, Error::Truncated { .. }), "{err}");
}

#[test]
fn a_thousand_sessions_leave_memory_and_decoders_unchanged() {
    let Some(gpu) = gpu() else { return };
    let video = Video::open(common::fixture("h264_baseline.mp4")).unwrap();
    let plan = SamplePlan::new(
        video.info(),
        video.index(),
        &SamplingOptions {
            frames: Some(vec![0, 1]),
            ..Default::default()
        },
    )
    .unwrap();
    let run = || {
        gpu.prepare(&video, &plan, 1, PixelDtype::F32, &Cancel::new())
            .unwrap()
    };
    drop(run()); // warm up: kernels, decoder pool, allocator
    gpu.context().synchronize().unwrap();
    let (free_before, _) = gpu.context().mem_get_info().unwrap();
    let created_before = gpu.decoder_pool().created();
    for _ in 0..1000 {
        drop(run());
    }
    gpu.context().synchronize().unwrap();
    let (free_after, _) = gpu.context().mem_get_info().unwrap();
    let created_after = gpu.decoder_pool().created();
    eprintln!(
        "1000 sessions: free memory {} → {} MiB, decoders created {created_before} → {created_after}, idle {}",
        free_before >> 20,
        free_after >> 20,
        gpu.decoder_pool().idle()
    );
    assert_eq!(
        created_before, created_after,
        "sessions created new decoders instead of reusing them"
    );
    assert!(
        free_after + (64 << 20) >= free_before,
        "GPU memory leaked: {free_before} → {free_after}"
    );
}

/// A fixture and its plan at 6 fps (several slices on the short fixtures).
fn open_at_6fps(name: &str) -> (Video, SamplePlan) {
    let video = Video::open(common::fixture(name)).unwrap();
    let options = SamplingOptions {
        fps: 6.0,
        ..Default::default()
    };
    let plan = SamplePlan::new(video.info(), video.index(), &options).unwrap();
    (video, plan)
}

/// The pixel values' bytes, copied to the host.
fn bytes(prepared: &reel_codec::gpu::DeviceFrames) -> Vec<u8> {
    let buffer = &prepared.buffer;
    buffer.stream().clone_dtoh(&**buffer).unwrap()
}

/// Streamed preparation tells of every temporal slice exactly once, when its values are
/// already final, and the buffer equals that of plain preparation.
#[test]
fn streamed_slices_are_complete_when_announced() {
    use std::sync::Mutex;
    let Some(gpu) = gpu() else { return };
    for name in [
        "h264_main_bframes.mp4",
        "hevc_main.mp4",
        "h264_high_opengop.mkv",
        "vp9.webm",
    ] {
        let (video, plan) = open_at_6fps(name);
        let [t, h, w] = plan.grid_thw;
        let slice_bytes = h * w * plan.patch_dim() * 4;
        let seen: Mutex<Vec<(usize, Vec<u8>)>> = Mutex::new(Vec::new());
        let on_slice = |done: SliceDone<'_>| {
            let (buffer, s) = (done.buffer, done.slice);
            let all = buffer.stream().clone_dtoh(&**buffer).unwrap();
            let bytes = all[s * slice_bytes..(s + 1) * slice_bytes].to_vec();
            seen.lock().unwrap().push((s, bytes));
        };
        let options = PrepareOptions {
            on_slice: Some(&on_slice),
            ..PrepareOptions::new(7, PixelDtype::F32)
        };
        let streamed = gpu
            .prepare_with(&video, &plan, &options, &Cancel::new())
            .unwrap();
        let plain = gpu
            .prepare(&video, &plan, 7, PixelDtype::F32, &Cancel::new())
            .unwrap();
        let final_bytes = bytes(&plain);
        let streamed_bytes = bytes(&streamed);
        assert_eq!(
            final_bytes, streamed_bytes,
            "{name}: streamed vs plain buffer"
        );
        let mut seen = seen.into_inner().unwrap();
        seen.sort_by_key(|(s, _)| *s);
        let slices: Vec<usize> = seen.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            slices,
            (0..t).collect::<Vec<_>>(),
            "{name}: each slice once"
        );
        for (s, bytes) in &seen {
            assert!(
                bytes[..] == final_bytes[s * slice_bytes..(s + 1) * slice_bytes],
                "{name}: slice {s} changed after it was announced"
            );
        }
    }
}

/// Segments decoded on another GPU reach the output through the peer path (a one-slice
/// staging buffer there, 2-D copies of each frame's values into its slots here) and the
/// result is bit-identical to one session on the output's GPU. With two GPUs the peer is
/// cuda:1; on a one-GPU machine it is a second `Gpu` on the same device (its own decoder
/// pool and session share), so the staging and the copies still run, within one device.
#[test]
fn segments_decoded_on_a_peer_gpu_are_bit_identical() {
    let Some(gpu) = gpu() else { return };
    let peer = Gpu::open(usize::from(reel_codec::gpu::device_count() > 1)).unwrap();
    let peers = [peer.clone()];
    for name in [
        "h264_longgop.mp4",
        "h264_high_opengop.mkv",
        "h264_main_bframes.mp4",
        "hevc_main.mp4",
        "vp9.webm",
    ] {
        let (video, plan) = open_at_6fps(name);
        for dtype in [PixelDtype::F32, PixelDtype::Bf16] {
            let single = gpu
                .prepare(&video, &plan, 1, dtype, &Cancel::new())
                .unwrap();
            let options = PrepareOptions {
                peers: &peers,
                ..PrepareOptions::new(8, dtype)
            };
            let spread = gpu
                .prepare_with(&video, &plan, &options, &Cancel::new())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let (a, b) = (bytes(&single), bytes(&spread));
            assert!(
                a == b,
                "{name} {dtype:?}: spread over two GPUs vs one session"
            );
        }
        eprintln!(
            "{name}: bit-identical; peer decoders so far: {}",
            peer.decoder_pool().created()
        );
    }
    assert!(
        peer.decoder_pool().created() > 0,
        "the peer decoded no segment"
    );
}

/// Split preparation keeps each part on the GPU that decoded it: the parts cover the
/// slices once, in order, each part's buffer equals those slices of one-session decoding
/// (bit for bit), and every slice is announced once with its part. As above, the second
/// GPU is cuda:1 where there is one, else a second `Gpu` on the same device.
#[test]
fn split_parts_equal_their_slices_of_one_session() {
    use std::sync::Mutex;
    let Some(gpu) = gpu() else { return };
    let peer = Gpu::open(usize::from(reel_codec::gpu::device_count() > 1)).unwrap();
    let peers = [peer.clone()];
    let mut several = 0;
    for name in [
        "h264_longgop.mp4",
        "h264_high_opengop.mkv",
        "h264_main_bframes.mp4",
        "hevc_main.mp4",
        "vp9.webm",
    ] {
        let (video, plan) = open_at_6fps(name);
        let [t, h, w] = plan.grid_thw;
        for dtype in [PixelDtype::F32, PixelDtype::Bf16] {
            let slice_bytes = h * w * plan.patch_dim() * dtype.size();
            let single = bytes(
                &gpu.prepare(&video, &plan, 1, dtype, &Cancel::new())
                    .unwrap(),
            );
            let split = gpu.split(&video, &plan, 8, &peers).unwrap();
            let layout = split.parts();
            // (on the peer, slices) of each part, for the messages.
            let shown: Vec<_> = layout
                .iter()
                .map(|(on, s)| (std::ptr::eq(*on, &*peer), s.clone()))
                .collect();
            let covered: Vec<usize> = layout.iter().flat_map(|(_, s)| s.clone()).collect();
            assert_eq!(
                covered,
                (0..t).collect::<Vec<_>>(),
                "{name}: parts {shown:?}"
            );
            let seen = Mutex::new(Vec::new());
            let on_slice = |done: SliceDone<'_>| seen.lock().unwrap().push((done.part, done.slice));
            let prepared = split
                .prepare(&video, &plan, dtype, Some(&on_slice), &Cancel::new())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(prepared.parts.len(), layout.len());
            for (part, (on, slices)) in prepared.parts.iter().zip(&layout) {
                let ordinal = on.context().ordinal();
                assert_eq!((part.ordinal, &part.slices), (ordinal, slices));
                let got = part.buffer.stream().clone_dtoh(&*part.buffer).unwrap();
                assert!(
                    got[..] == single[slices.start * slice_bytes..slices.end * slice_bytes],
                    "{name} {dtype:?}: part {slices:?} on cuda:{ordinal} vs one session"
                );
            }
            let mut seen = seen.into_inner().unwrap();
            seen.sort_unstable();
            let expected: Vec<(usize, usize)> = layout
                .iter()
                .enumerate()
                .flat_map(|(p, (_, s))| (0..s.len()).map(move |i| (p, i)))
                .collect();
            assert_eq!(seen, expected, "{name}: each slice announced once");
            if shown.iter().any(|(on_peer, _)| *on_peer) && shown.len() > 1 {
                several += 1;
            }
            eprintln!("{name} {dtype:?}: parts (on the peer, slices) {shown:?}, bit-identical");
        }
    }
    assert!(several > 0, "no fixture was split over both GPUs");
}
