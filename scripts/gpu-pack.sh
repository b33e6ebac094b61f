#!/usr/bin/env bash
# Packs what the GPU suite needs into .carry/ (ignored by git; the device tool carries
# it): release binaries built without FFmpeg (the GPU machines have none), the GPU test
# binary, Python wheels the GPU image lacks, and the benchmark segments.
# Then run on the GPU machine, in one call:  bash bench/gpu/run.sh   (with carry [".carry"])
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .carry/bin .carry/wheels
cargo build --release --no-default-features -q
cp target/release/reel .carry/bin/reel
# test_binary CRATE TEST: builds one integration-test binary and prints its path.
test_binary() {
  cargo test --release --no-default-features -p "$1" --test "$2" --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]==sys.argv[1] and m.get("executable"): print(m["executable"])' "$2"
}
cp "$(test_binary reel-codec gpu)" .carry/bin/gpu-tests
cp "$(test_binary reel-encoder cuda)" .carry/bin/encoder-cuda-tests
strip .carry/bin/reel .carry/bin/gpu-tests .carry/bin/encoder-cuda-tests
pip download -q --no-deps --python-version 3.12 --platform manylinux_2_28_x86_64 --only-binary=:all: \
  -d .carry/wheels pynvvideocodec==2.2.4
pip download -q --no-deps -d .carry/wheels qwen-vl-utils==0.0.14
# The Python plugin's tests on the GPU machine (its image has pytest, not grpc).
pip download -q --no-deps --python-version 3.12 --platform manylinux2014_x86_64 --only-binary=:all: \
  -d .carry/wheels grpcio==1.66.2 protobuf==5.29.3
bench/gpu/make_segments.sh .carry/clips >/dev/null
bench/transcode/make_clips.sh .carry/clips/transcode >/dev/null
du -sh .carry/* && du -sh .carry
