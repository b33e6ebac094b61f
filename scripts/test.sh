#!/usr/bin/env bash
# The test command of the README: installs what is missing, then runs every test
# that needs no GPU (Rust workspace, golden parity, Python client).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
[ -f "$HOME/.cargo/env" ] && source "$HOME/.cargo/env"
cargo test --workspace --all-targets
