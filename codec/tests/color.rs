//! HF-exact from the file: reel's CPU path against what the reference readers (PyAV and
//! OpenCV, FFmpeg's swscale) and HF's processor make of the same fixture files. The
//! goldens come from tests/golden/make_color_golden.py.
#![cfg(feature = "ffmpeg")]

mod common;

use std::collections::BTreeMap;

use reel_codec::decode::{self, cpu};
use reel_codec::preprocess::{ColorConverter, ColorMode, RgbImage};
use reel_codec::Range;
use reel_codec::{Cancel, SamplePlan, SamplingOptions, Video};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn golden_dir() -> std::path::PathBuf {
    common::video_dir().join("../golden")
}

fn golden() -> Value {
    let text = std::fs::read_to_string(golden_dir().join("color.json")).expect("color.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn sha256_hex(bytes: &[u8]) -> String {
    common::hex(&Sha256::digest(bytes))
}

/// The sampled frames of `video`, decoded on the CPU and converted to RGB with `mode`
/// at their stored size (no rotation, no resize).
fn rgb_frames(video: &Video, plan: &SamplePlan, mode: ColorMode) -> BTreeMap<usize, RgbImage> {
    let info = video.info();
    let wanted = decode::Wanted::new(video, &plan.frames);
    let mut out = BTreeMap::new();
    for range in &plan.decode {
        cpu::decode_range(video, range, &wanted, 1, &Cancel::new(), &mut |f| {
            let conv = reel_codec::pipeline::frame_converter(info, &f, mode);
            out.insert(f.frame, conv.convert(&f.image));
        })
        .unwrap();
    }
    out
}

/// (fraction of equal values, max |d| in levels, mean |d| in normalized units: levels
/// over 255 · CLIP's smallest std, the worst a level can move a pixel value).
fn compare(a: &[u8], b: &[u8]) -> (f64, u8, f64) {
    assert_eq!(a.len(), b.len());
    let d: Vec<u8> = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).collect();
    let equal = d.iter().filter(|&&v| v == 0).count() as f64 / d.len() as f64;
    let max = d.iter().copied().max().unwrap_or(0);
    let mean = d.iter().map(|&v| f64::from(v)).sum::<f64>() / d.len() as f64;
    (equal, max, mean / (255.0 * 0.261_302_58))
}

#[test]
fn the_readers_rgb_is_reproduced_from_the_file() {
    // 8-bit: PyAV and OpenCV give the same bytes (the generator asserts it). 10-bit: they
    // differ; PyAV, HF transformers' default reader, is the reference.
    for (name, clip) in golden()["clips"].as_object().unwrap() {
        let video = Video::open(common::fixture(name)).unwrap();
        let plan =
            SamplePlan::new(video.info(), video.index(), &SamplingOptions::default()).unwrap();
        let frames = clip["frames"].as_array().unwrap();
        let indices: Vec<usize> = frames
            .iter()
            .map(|f| f["index"].as_u64().unwrap() as usize)
            .collect();
        assert_eq!(plan.frames, indices, "{name}: sampled frames");
        let rgb = rgb_frames(&video, &plan, ColorMode::Reference);
        for f in frames {
            let frame = f["index"].as_u64().unwrap() as usize;
            assert_eq!(
                sha256_hex(&rgb[&frame].data),
                f["pyav_sha256"].as_str().unwrap(),
                "{name}: frame {frame} differs from the reader's"
            );
        }
    }
}

#[test]
fn pixel_values_from_the_file_are_hfs() {
    let golden = golden();
    for (name, clip) in golden["clips"].as_object().unwrap() {
        let video = Video::open(common::fixture(name)).unwrap();
        let plan =
            SamplePlan::new(video.info(), video.index(), &SamplingOptions::default()).unwrap();
        let grid: Vec<usize> = clip["video_grid_thw"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(plan.grid_thw.to_vec(), grid, "{name}: grid");
        let prepared = reel_codec::pipeline::prepare_cpu(&video, &plan, 2, &Cancel::new()).unwrap();
        let bytes: Vec<u8> = prepared
            .pixel_values
            .data
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(
            sha256_hex(&bytes),
            clip["pixel_values_sha256"].as_str().unwrap(),
            "{name}: pixel values differ from HF's"
        );
    }
}

#[test]
fn accurate_mode_is_todays_float_conversion() {
    // `--color accurate` keeps the signalled-matrix float path: it differs from the
    // readers' on real video (their chroma is not interpolated) but stays close.
    let video = Video::open(common::fixture("h264_main_bframes.mp4")).unwrap();
    let plan = SamplePlan::new(video.info(), video.index(), &SamplingOptions::default()).unwrap();
    let reference = rgb_frames(&video, &plan, ColorMode::Reference);
    let accurate = rgb_frames(&video, &plan, ColorMode::Accurate);
    let frame = plan.frames[0];
    let (equal, max, _) = compare(&reference[&frame].data, &accurate[&frame].data);
    assert!(equal < 0.9 && max > 2, "{equal} {max}");
}

/// The generator's 64-bit LCG (tests/golden/make_color_golden.py): the high 32 bits.
struct Lcg(u64);

impl Iterator for Lcg {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        Some((self.0 >> 32) as u32)
    }
}

/// Planar 4:2:0 YUV (`bits` wide: 8-bit bytes or 16-bit little-endian words) and RGB of
/// it through the reference conversion (BT.601 limited, unsited chroma).
fn reference_rgb(planes: [&[u8]; 3], width: usize, height: usize, bits: u8) -> Vec<u8> {
    use reel_codec::preprocess::{YuvImage, YuvSamples};
    let bytes = if bits > 8 { 2 } else { 1 };
    let cw = width.div_ceil(2);
    let img = YuvImage {
        width,
        height,
        chroma: reel_codec::Chroma::Yuv420,
        samples: if bits > 8 {
            YuvSamples::U16(planes)
        } else {
            YuvSamples::U8(planes)
        },
        strides: [width * bytes, cw * bytes, cw * bytes],
    };
    ColorConverter::new(
        reel_codec::Matrix::Bt601,
        Range::Limited,
        bits,
        ColorMode::Reference,
    )
    .convert(&img)
    .data
}

/// Seeded planes as the generator draws them: Y, then U, then V.
fn seeded_planes(seed: u64, width: usize, height: usize, bits: u8) -> [Vec<u8>; 3] {
    let mut lcg = Lcg(seed);
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    let mask = (1u32 << bits) - 1;
    let mut take = |n: usize| -> Vec<u8> {
        (0..n)
            .flat_map(|_| {
                let v = lcg.next().unwrap() & mask;
                if bits > 8 {
                    (v as u16).to_le_bytes().to_vec()
                } else {
                    vec![v as u8]
                }
            })
            .collect()
    };
    [take(width * height), take(cw * ch), take(cw * ch)]
}

#[test]
fn every_yuv_triple_converts_as_the_readers_do() {
    let golden = golden();
    let synthetic = &golden["synthetic"];
    // 64 frames of 512x512: block (by, bx) has U = bx, V = by, luma 4f + 2dy + dx.
    let mut every = Sha256::new();
    let u: Vec<u8> = (0..256 * 256).map(|i| (i % 256) as u8).collect();
    let v: Vec<u8> = (0..256 * 256).map(|i| (i / 256) as u8).collect();
    for f in 0..64u8 {
        let y: Vec<u8> = (0..512 * 512)
            .map(|i| {
                let (row, col) = (i / 512, i % 512);
                4 * f + 2 * (row % 2) as u8 + (col % 2) as u8
            })
            .collect();
        every.update(reference_rgb([&y, &u, &v], 512, 512, 8));
    }
    assert_eq!(
        common::hex(&every.finalize()),
        synthetic["every_triple_sha256"].as_str().unwrap(),
        "all 256³ (Y, U, V) triples"
    );
    for (i, (w, h)) in [(641, 360), (17, 10), (1, 2), (650, 4), (24, 4)]
        .into_iter()
        .enumerate()
    {
        let [y, u, v] = seeded_planes(1000 + i as u64, w, h, 8);
        assert_eq!(
            sha256_hex(&reference_rgb([&y, &u, &v], w, h, 8)),
            synthetic["odd_widths_sha256"][format!("{w}x{h}")]
                .as_str()
                .unwrap(),
            "{w}x{h}"
        );
    }
    let [y, u, v] = seeded_planes(77, 128, 64, 10);
    assert_eq!(
        sha256_hex(&reference_rgb([&y, &u, &v], 128, 64, 10)),
        synthetic["ten_bit_128x64_sha256"].as_str().unwrap(),
        "10-bit"
    );
}

#[test]
fn chroma_siting_follows_the_stream() {
    // Unsignalled: left for H.264/HEVC (FFmpeg's default), unsited for VP9; a signalled
    // location wins (left, top-left and bottom-left are left-sited).
    let h264 = Video::open(common::fixture("h264_high10.mp4")).unwrap();
    let vp9 = Video::open(common::fixture("vp9_10bit.webm")).unwrap();
    assert!(h264.info().chroma_left_sited());
    assert!(!vp9.info().chroma_left_sited());
    for (location, left) in [
        (0, true),
        (1, false),
        (2, true),
        (3, false),
        (4, true),
        (5, false),
    ] {
        let mut info = h264.info().clone();
        info.color.chroma_location = Some(location);
        assert_eq!(info.chroma_left_sited(), left, "location {location}");
    }
}
