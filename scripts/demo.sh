#!/usr/bin/env bash
# The README's quick start: builds reel and runs its main job on a bundled clip. With an
# NVIDIA GPU it decodes on NVDEC and preprocesses with CUDA; otherwise on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && source "$HOME/.cargo/env"
cargo build --release -q
reel=./target/release/reel
clip=tests/data/video/h264_main_bframes.mp4
out=${OUT_DIR:-target/demo}
mkdir -p "$out"
echo "== reel probe $clip"
$reel probe "$clip"
echo
echo "== reel frames $clip (2 fps sampling, Qwen2.5-VL preprocessing)"
$reel frames "$clip" -o "$out/frames.safetensors"
echo
# The bundled tiny random Qwen2.5-VL vision tower; pass MODEL=path/to/Qwen2.5-VL-7B-Instruct
# (a Hugging Face folder) for real embeddings.
model=${MODEL:-tests/data/tiny-qwen2.5-vl}
echo "== reel embed $clip --model $model"
$reel embed "$clip" --model "$model" -o "$out/embeddings.safetensors"
