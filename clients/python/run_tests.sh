#!/usr/bin/env bash
# Tests of the Python plugin (reel-client) against a real `reel serve`, on the CPU.
#
#   clients/python/run_tests.sh [pytest args...]
#
# - Builds the server (`cargo build --release`, a no-op when it is up to date) unless
#   REEL_BIN names a binary or REEL_SKIP_BUILD=1.
# - Creates clients/python/.venv (with --system-site-packages, so a torch/transformers
#   installed system-wide is used) and installs the package with its test extras. It
#   never installs torch: without torch the plugin core and all server tests still run
#   (numpy only) and the torch/HF tests are skipped. To run them, point REEL_TEST_PYTHON
#   at an interpreter that has torch + transformers (the package and test deps are
#   installed into it if missing), e.g. REEL_TEST_PYTHON=/path/to/venv/bin/python.
# - REEL_TEST_CUDA=1 also runs tests/test_cuda_ipc.py (a GPU, torch with CUDA and a
#   CUDA build of reel needed).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

if [ -z "${REEL_BIN:-}" ] && [ "${REEL_SKIP_BUILD:-0}" != "1" ]; then
  [ -f "$HOME/.cargo/env" ] && source "$HOME/.cargo/env"
  if command -v cargo >/dev/null 2>&1; then
    echo "run_tests: cargo build --release (reel serve)"
    (cd "$repo" && cargo build --release --quiet --bin reel)
  fi
fi
export REEL_BIN="${REEL_BIN:-$repo/target/release/reel}"
case "$REEL_BIN" in /*) ;; *) REEL_BIN="$PWD/$REEL_BIN" ;; esac  # pytest runs from $here
if [ ! -x "$REEL_BIN" ]; then
  echo "run_tests: no reel binary at $REEL_BIN (cargo build --release, or set REEL_BIN)" >&2
  exit 1
fi

if [ -n "${REEL_TEST_PYTHON:-}" ]; then
  py="$REEL_TEST_PYTHON"
else
  venv="$here/.venv"
  if [ ! -x "$venv/bin/python" ]; then
    echo "run_tests: creating $venv"
    python3 -m venv --system-site-packages "$venv"
  fi
  py="$venv/bin/python"
fi

# Install the package (editable) and test deps only when something is missing, so that
# repeated runs are fast and work offline.
if ! "$py" - "$here" <<'PY' >/dev/null 2>&1
import importlib.metadata as m, sys, os
import grpc, google.protobuf, numpy, pytest, safetensors  # noqa: F401
import reel_client
assert os.path.dirname(os.path.dirname(os.path.abspath(reel_client.__file__))) == sys.argv[1]
m.version("reel-client")
PY
then
  echo "run_tests: pip install -e '$here[test]'"
  "$py" -m pip install --quiet --disable-pip-version-check -e "$here[test]"
fi

"$py" - <<'PY'
import importlib.util as u
have = {m: u.find_spec(m) is not None for m in ("torch", "transformers")}
print("run_tests: torch", "yes" if have["torch"] else "no (torch tests skipped)",
      "| transformers", "yes" if have["transformers"] else "no (HF e2e skipped)")
PY

cd "$here"
set +e
"$py" -m pytest -p no:cacheprovider -rs "$@"
status=$?
set -e
# pytest's 5 means "no tests collected" (e.g. a -k that matched nothing).
if [ "$status" -eq 5 ]; then
  echo "run_tests: no tests ran" >&2
fi
exit "$status"
