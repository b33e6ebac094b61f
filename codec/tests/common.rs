//! Shared helpers for the codec integration tests: fixture paths, expectations and
//! digests.
#![allow(dead_code)]

use std::path::PathBuf;

/// The folder of committed fixture videos: $REEL_TEST_DATA (test binaries carried to
/// another machine), else the source tree's.
pub fn video_dir() -> PathBuf {
    std::env::var_os("REEL_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/video"))
}

pub fn fixture(name: &str) -> PathBuf {
    video_dir().join(name)
}

/// expected.json, written by tests/data/video/make_expected.py from ffprobe.
pub fn expectations() -> serde_json::Map<String, serde_json::Value> {
    let text = std::fs::read_to_string(video_dir().join("expected.json")).expect("expected.json");
    match serde_json::from_str(&text).expect("valid JSON") {
        serde_json::Value::Object(map) => map,
        _ => panic!("expected.json is not an object"),
    }
}

/// ffprobe's per-frame MD5s (ffmpeg -f framemd5) of a fixture's expectations, in
/// presentation order.
pub fn framemd5(expect: &serde_json::Value) -> Vec<&str> {
    expect["framemd5"]
        .as_array()
        .expect("framemd5")
        .iter()
        .map(|v| v.as_str().expect("framemd5 entry"))
        .collect()
}

/// Lower-case hex digits.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn md5_hex(data: &[u8]) -> String {
    use md5::{Digest, Md5};
    hex(&Md5::digest(data))
}
