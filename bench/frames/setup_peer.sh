#!/usr/bin/env bash
# Makes the Python environment of the CPU peer (qwen-vl-utils + HF's video processor) for
# bench/frames/run.sh: bench/frames/setup_peer.sh [DIR] (default bench/work/peer-venv),
# then bench/frames/run.sh DIR/bin/python. PyPI's torch wheel is a CUDA build; it runs on
# the CPU here (about 6 GB with its CUDA libraries). torchcodec decodes with the system's
# FFmpeg shared libraries (scripts/setup.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-bench/work/peer-venv}
python3 -m venv "$dir"
"$dir/bin/pip" install -q -U pip
"$dir/bin/pip" install -q torch==2.15.0 torchvision==0.29.2 torchcodec==0.17.0 transformers==5.24.0 \
  qwen-vl-utils==0.0.14
echo "peer environment: $dir/bin/python"
