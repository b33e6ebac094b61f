//! The CPU decoder delivers, from reel's own packets, exactly the pictures FFmpeg's
//! own pipeline decodes (ffmpeg -f framemd5), in presentation order — also when a
//! sparse plan skips GOPs and unreferenced pictures.
#![cfg(feature = "ffmpeg")]

mod common;

use std::collections::BTreeMap;

use reel_codec::decode::{self, cpu, DecodedFrame};
use reel_codec::plan::{decode_ranges, DecodeRange};
use reel_codec::preprocess::YuvSamples;
use reel_codec::{Cancel, Chroma, SamplePlan, SamplingOptions, Video};

/// MD5 of the planes packed without padding, as framemd5 hashes them.
fn frame_md5(f: &DecodedFrame) -> String {
    let img = &f.image;
    let (bytes_per_sample, planes) = match img.samples {
        YuvSamples::U8(p) => (1, p),
        YuvSamples::U16(p) => (2, p),
    };
    let (cw, ch) = match img.chroma {
        Chroma::Yuv420 => (img.width.div_ceil(2), img.height.div_ceil(2)),
        Chroma::Yuv422 => (img.width.div_ceil(2), img.height),
        _ => (img.width, img.height),
    };
    let mut packed = Vec::new();
    let count = if img.chroma == Chroma::Monochrome {
        1
    } else {
        3
    };
    for (i, plane) in planes.iter().enumerate().take(count) {
        let (w, h) = if i == 0 {
            (img.width, img.height)
        } else {
            (cw, ch)
        };
        for row in 0..h {
            let start = row * img.strides[i];
            packed.extend_from_slice(&plane[start..start + w * bytes_per_sample]);
        }
    }
    common::md5_hex(&packed)
}

fn decode_frames(
    video: &Video,
    frames: &[usize],
    ranges: &[DecodeRange],
) -> (BTreeMap<usize, String>, decode::DecodeReport) {
    decode_frames_threads(video, frames, ranges, 1)
}

fn decode_frames_threads(
    video: &Video,
    frames: &[usize],
    ranges: &[DecodeRange],
    threads: usize,
) -> (BTreeMap<usize, String>, decode::DecodeReport) {
    let wanted = decode::Wanted::new(video, frames);
    let mut got = BTreeMap::new();
    let mut report = decode::DecodeReport::default();
    for range in ranges {
        let r = cpu::decode_range(video, range, &wanted, threads, &Cancel::new(), &mut |f| {
            got.insert(f.frame, frame_md5(&f));
        })
        .unwrap();
        report.merge(r);
    }
    (got, report)
}

#[test]
fn every_frame_matches_ffmpeg() {
    for (name, expect) in common::expectations() {
        if !expect["error"].is_null() || name.contains("truncated") || name.contains("corrupt") {
            continue;
        }
        let video = Video::open(common::fixture(&name)).unwrap();
        if !cpu::supports(video.info().codec) {
            eprintln!("{name}: no decoder in this FFmpeg build, skipped");
            continue;
        }
        let md5s = common::framemd5(&expect);
        let all: Vec<usize> = (0..video.index().len()).collect();
        let (got, _) = decode_frames(&video, &all, &decode_ranges(video.index(), &all));
        assert_eq!(got.len(), md5s.len(), "{name}: frame count");
        for (f, md5) in &got {
            assert_eq!(md5, md5s[*f], "{name}: frame {f}");
        }
    }
}

#[test]
fn sparse_plans_skip_work_but_not_frames() {
    let mut skipped_total = 0;
    for name in [
        "h264_main_bframes.mp4",
        "h264_high_opengop.mkv",
        "hevc_main.mp4",
        "h264.h264",
        "vp9.webm",
        "h264_longgop.mp4",
    ] {
        let expect = &common::expectations()[name];
        let video = Video::open(common::fixture(name)).unwrap();
        let plan =
            SamplePlan::new(video.info(), video.index(), &SamplingOptions::default()).unwrap();
        let segments = decode::split_at_gops(video.index(), &plan.decode, &plan.frames);
        let (got, report) = decode_frames(&video, &plan.frames, &segments);
        let md5s = common::framemd5(expect);
        assert_eq!(got.len(), plan.frames.len(), "{name}");
        for (f, md5) in &got {
            assert_eq!(md5, md5s[*f], "{name}: frame {f}");
        }
        assert!(
            report.packets_decoded < video.index().len(),
            "{name}: decoded everything"
        );
        skipped_total += report.packets_skipped;
    }
    assert!(skipped_total > 0, "no unreferenced picture was skipped");
}

#[test]
fn open_gop_leading_pictures_decode_correctly() {
    // Every frame of the open-GOP fixture, sampled alone, decodes bit-exactly: leading
    // pictures pull in the previous GOP.
    let name = "h264_high_opengop.mkv";
    let expect = &common::expectations()[name];
    let video = Video::open(common::fixture(name)).unwrap();
    let md5s = common::framemd5(expect);
    for gop in expect["open_gop"].as_array().unwrap() {
        for pts in gop["leading_pts"].as_array().unwrap() {
            let pts = pts.as_i64().unwrap();
            let frame = (0..video.index().len())
                .find(|&f| video.index().packets()[video.index().frame_packet(f)].pts == pts)
                .unwrap();
            let ranges = decode_ranges(video.index(), &[frame]);
            let (got, _) = decode_frames(&video, &[frame], &ranges);
            assert_eq!(got[&frame], md5s[frame], "leading frame {frame}");
        }
    }
}

#[test]
fn the_last_frame_of_every_decode_range_is_delivered() {
    // A range ends at its last planned packet, so that frame is still in the
    // decoder's reorder buffer at end of stream. Ranges of this open-GOP clip start at
    // non-IDR I pictures: libavcodec 5.x's H.264 flush withheld the pictures decoded
    // before that I picture was output (never marked "recovered"), and draining
    // stopped there, losing e.g. frame 33 of [0, 33] (range 24..31) single-threaded.
    let name = "h264_high_opengop.mkv";
    let expect = &common::expectations()[name];
    let video = Video::open(common::fixture(name)).unwrap();
    let index = video.index();
    let n = index.len();
    let all: Vec<usize> = (0..n).collect();
    // Reference: one sequential decode of the whole file, FFmpeg's own frames.
    let whole = [DecodeRange { packets: 0..n }];
    let (full, _) = decode_frames(&video, &all, &whole);
    let md5s = common::framemd5(expect);
    assert_eq!(full.len(), n);
    for (f, md5) in &full {
        assert_eq!(md5, md5s[*f], "full decode: frame {f}");
    }
    let mut plans: Vec<Vec<usize>> = vec![
        vec![0, 33],
        vec![0, 29],
        vec![29, 33],
        vec![0, 24, 29, 33, 49, 73, 99],
        (0..n).step_by(3).collect(),
        (0..n).step_by(7).collect(),
    ];
    // Every frame as the last frame of its range: alone and after frame 0.
    for f in 0..n {
        plans.push(vec![f]);
        if f > 0 {
            plans.push(vec![0, f]);
        }
    }
    let mut checked = 0;
    for threads in [1, 2] {
        for frames in &plans {
            let ranges = decode_ranges(index, frames);
            let segments = decode::split_at_gops(index, &ranges, frames);
            for ranges in [ranges, segments] {
                let (got, report) = decode_frames_threads(&video, frames, &ranges, threads);
                let what = format!("{frames:?} over {ranges:?}, {threads} thread(s)");
                for f in frames {
                    assert_eq!(got.get(f), Some(&full[f]), "{what}: frame {f}");
                }
                assert_eq!(got.len(), frames.len(), "{what}");
                assert!(report.corrupt_frames.is_empty(), "{what}: {report:?}");
                assert!(report.errors.is_empty(), "{what}: {report:?}");
                checked += 1;
            }
        }
    }
    assert!(checked > 400);
}

#[test]
fn corrupt_samples_are_reported_and_good_frames_survive() {
    let name = "h264_corrupt.mp4";
    let expect = &common::expectations()[name];
    let clean = &common::expectations()["h264_baseline.mp4"];
    let video = Video::open(common::fixture(name)).unwrap();
    let all: Vec<usize> = (0..video.index().len()).collect();
    let (got, report) = decode_frames(&video, &all, &decode_ranges(video.index(), &all));
    let damaged: Vec<u64> = expect["damaged_frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    let clean_md5 = common::framemd5(clean);
    for (f, md5) in &got {
        if !damaged.contains(&(*f as u64)) {
            assert_eq!(md5, clean_md5[*f], "good frame {f} changed");
        }
    }
    eprintln!(
        "corrupt frames reported: {:?}; errors: {:?}",
        report.corrupt_frames, report.errors
    );
    assert!(
        !report.corrupt_frames.is_empty() || !report.errors.is_empty(),
        "damage went unreported"
    );
}
