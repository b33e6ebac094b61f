//! Every fixture demuxes to what ffprobe reports: stream info, and per packet the
//! timestamps, size, key flag and the MD5 of the payload bytes.

mod common;

use reel_codec::{Chroma, Codec, Error, Rotation, Video};
use serde_json::Value;

fn codec_name(c: Codec) -> &'static str {
    c.name()
}

#[test]
fn fixtures_match_ffprobe() {
    let mut checked = 0;
    for (name, expect) in common::expectations() {
        let path = common::fixture(&name);
        let result = Video::open(&path);
        if !expect["error"].is_null() {
            let err = result.expect_err(&format!("{name} should fail to open"));
            eprintln!("{name}: {err}");
            continue;
        }
        let video = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        let info = video.info();
        let s = &expect["stream"];
        assert_eq!(
            codec_name(info.codec),
            s["codec"].as_str().unwrap(),
            "{name} codec"
        );
        for (field, ours) in [
            ("width", info.width as u64),
            ("height", info.height as u64),
            ("bit_depth", info.bit_depth as u64),
        ] {
            assert_eq!(ours, s[field].as_u64().unwrap(), "{name} {field}");
        }
        let chroma = match info.chroma {
            Chroma::Yuv420 => "420",
            Chroma::Yuv422 => "422",
            Chroma::Yuv444 => "444",
            Chroma::Monochrome => "400",
        };
        assert_eq!(chroma, s["chroma"].as_str().unwrap(), "{name} chroma");
        // ffprobe's rotation is counter-clockwise; reel's is the clockwise turn to apply.
        let ccw = s["rotation"].as_i64().unwrap();
        let expected_rotation = match (-ccw).rem_euclid(360) {
            90 => Rotation::Cw90,
            180 => Rotation::Cw180,
            270 => Rotation::Cw270,
            _ => Rotation::None,
        };
        assert_eq!(info.rotation, expected_rotation, "{name} rotation");
        let full_range = match s["color_range"].as_str() {
            Some("pc") => Some(true),
            Some("tv") => Some(false),
            _ => None,
        };
        if full_range == Some(true) {
            assert_eq!(info.color.full_range, Some(true), "{name} range");
        }
        if s["color_space"].as_str() == Some("bt709") {
            assert_eq!(info.color.matrix, Some(1), "{name} matrix");
        }

        let packets = expect["packets"].as_array().unwrap();
        let index = video.index();
        let complete = video.missing_packets() == 0;
        if complete {
            assert_eq!(index.len(), packets.len(), "{name} packet count");
            assert_eq!(
                info.frame_count as u64,
                s["nb_read_frames"].as_u64().unwrap(),
                "{name} frame count"
            );
        }
        let container = info.container;
        let mut buf = Vec::new();
        for (i, (ours, theirs)) in index.packets().iter().zip(packets).enumerate() {
            let theirs = theirs.as_array().unwrap();
            let size = theirs[3].as_u64().unwrap();
            if i == packets.len() - 1 && !complete {
                continue; // ffprobe returns the cut last packet partially
            }
            assert_eq!(ours.size as u64, size, "{name} packet {i} size");
            assert_eq!(
                ours.keyframe,
                theirs[4].as_u64() == Some(1),
                "{name} packet {i} key"
            );
            if container != "annexb" {
                assert_eq!(Some(ours.pts), theirs[0].as_i64(), "{name} packet {i} pts");
            }
            if container == "mp4" {
                assert_eq!(Some(ours.dts), theirs[1].as_i64(), "{name} packet {i} dts");
                assert_eq!(
                    Some(ours.offset),
                    theirs[2].as_u64(),
                    "{name} packet {i} offset"
                );
            }
            video.read_packet(i, &mut buf).unwrap();
            assert_eq!(
                common::md5_hex(&buf),
                theirs[5].as_str().unwrap(),
                "{name} packet {i} bytes"
            );
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} fixtures checked");
}

#[test]
fn bad_inputs_get_typed_errors() {
    assert!(matches!(
        Video::open(common::fixture("empty.mp4")),
        Err(Error::Empty)
    ));
    assert!(matches!(
        Video::open(common::fixture("random.bin")),
        Err(Error::UnknownFormat)
    ));
    let err = Video::open(common::fixture("h264_nomoov.mp4")).unwrap_err();
    assert!(err.to_string().contains("moov"), "{err}");
    assert!(matches!(
        Video::open(common::fixture("does-not-exist.mp4")),
        Err(Error::Open { .. })
    ));
}

#[test]
fn truncated_files_report_missing_packets() {
    let video = Video::open(common::fixture("h264_truncated.mp4")).unwrap();
    let missing = video.missing_packets();
    assert!(missing > 0 && missing < video.index().len(), "{missing}");
    let last = video.index().len() - 1;
    let err = video.read_packet(last, &mut Vec::new()).unwrap_err();
    assert!(matches!(err, Error::Truncated { .. }), "{err}");
}

#[test]
fn open_gop_leading_pictures_are_found() {
    let expect = &common::expectations()["h264_high_opengop.mkv"];
    let video = Video::open(common::fixture("h264_high_opengop.mkv")).unwrap();
    for gop in expect["open_gop"].as_array().unwrap() {
        for p in gop["leading_packets"].as_array().unwrap() {
            let p = p.as_u64().unwrap() as usize;
            assert!(
                video.index().is_leading(p),
                "packet {p} should be a leading picture"
            );
        }
    }
    let _ = Value::Null;
}
