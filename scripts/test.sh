#!/usr/bin/env bash
# The test command of the README: installs what is missing, then runs every test that
# needs no GPU: the Rust workspace (demuxers against ffprobe, FFmpeg-exact decoding,
# bit-exact parity with Hugging Face's preprocessing, mutation tests) and an NVRTC compile
# of every CUDA kernel for sm_80 and sm_90 (NVRTC from pip: no GPU or CUDA toolkit needed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && source "$HOME/.cargo/env"

venv=.venv-test
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check nvidia-cuda-nvrtc==13.0.88
nvrtc_lib=$(cd "$(dirname "$(find "$venv" -name 'libnvrtc.so.13' | head -1)")" && pwd)
export LD_LIBRARY_PATH="$nvrtc_lib:${LD_LIBRARY_PATH:-}"
export REEL_REQUIRE_NVRTC=1

cargo test --workspace --all-targets

# The Python plugin (clients/python) against a real `reel serve` on the CPU: shared
# memory and inline results, errors, leases, backpressure, the HF generate proof when
# torch is importable (see clients/python/README.md).
REEL_BIN="$PWD/target/debug/reel" clients/python/run_tests.sh -q
