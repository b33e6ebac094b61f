//! `reel probe`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use reel_codec::{Codec, StreamInfo, Video};

#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Video file (MP4/MOV, MKV/WebM, or raw .h264/.hevc).
    pub file: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Include the packet index (pts, dts, offset, size, key) in the JSON.
    #[arg(long, requires = "json")]
    pub packets: bool,
}

pub fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let video =
        Video::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let info = video.info();
    let index = video.index();
    if args.json {
        let mut value = serde_json::json!({
            "file": args.file,
            "stream": info,
            "profile_name": profile_name(info),
            "gops": index.gop_count(),
            "missing_packets": video.missing_packets(),
        });
        if args.packets {
            value["packets"] = serde_json::to_value(index.packets())?;
        }
        crate::output::print(serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    let (dh, dw) = info.display_size();
    let rows = [
        ("file", args.file.display().to_string()),
        (
            "container",
            format!("{} (track {})", info.container, info.track_index),
        ),
        (
            "codec",
            format!(
                "{} {}{}",
                info.codec,
                profile_name(info).unwrap_or_default(),
                info.level
                    .map(|l| format!(" level {}", level_name(info.codec, l)))
                    .unwrap_or_default()
            ),
        ),
        (
            "size",
            format!(
                "{}x{} (coded {}x{}), rotation {}° → displayed {dw}x{dh}",
                info.width,
                info.height,
                info.coded_width,
                info.coded_height,
                info.rotation.degrees()
            ),
        ),
        (
            "format",
            format!(
                "{}-bit {}, matrix {:?}{}, {:?} range{}",
                info.bit_depth,
                info.chroma.name(),
                info.color.conversion_matrix(),
                if info.color.matrix.is_none() {
                    " (unspecified)"
                } else {
                    ""
                },
                info.color.conversion_range(),
                if info.color.full_range.is_none() {
                    " (unspecified)"
                } else {
                    ""
                },
            ),
        ),
        (
            "frames",
            format!(
                "{} at {:.3} fps, {:.3} s",
                info.frame_count, info.frame_rate, info.duration
            ),
        ),
        (
            "gops",
            format!(
                "{} (a key frame every {:.1} frames on average)",
                index.gop_count(),
                index.len() as f64 / index.gop_count() as f64
            ),
        ),
    ];
    for (key, value) in rows {
        crate::output::print(format_args!("{key:<10} {value}"))?;
    }
    let missing = video.missing_packets();
    if missing > 0 {
        crate::output::print(format_args!(
            "warning    the file is truncated: {missing} packets lie past its end"
        ))?;
    }
    Ok(())
}

fn profile_name(info: &StreamInfo) -> Option<String> {
    let p = info.profile?;
    let name = match (info.codec, p) {
        (Codec::H264, 66) => "Baseline",
        (Codec::H264, 77) => "Main",
        (Codec::H264, 88) => "Extended",
        (Codec::H264, 100) => "High",
        (Codec::H264, 110) => "High 10",
        (Codec::H264, 122) => "High 4:2:2",
        (Codec::H264, 244) => "High 4:4:4 Predictive",
        (Codec::Hevc, 1) => "Main",
        (Codec::Hevc, 2) => "Main 10",
        (Codec::Hevc, 3) => "Main Still Picture",
        (Codec::Hevc, 4) => "Range Extensions",
        (Codec::Av1, 0) => "Main",
        (Codec::Av1, 1) => "High",
        (Codec::Av1, 2) => "Professional",
        _ => return Some(format!("profile {p}")),
    };
    Some(name.to_string())
}

fn level_name(codec: Codec, level: u32) -> String {
    match codec {
        Codec::H264 => format!("{}.{}", level / 10, level % 10),
        Codec::Hevc => format!("{}", f64::from(level) / 30.0),
        _ => level.to_string(),
    }
}
