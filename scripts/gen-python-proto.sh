#!/usr/bin/env bash
# Regenerates the Python gRPC stubs of the reel-client package
# (clients/python/reel_client/_proto/) from proto/reel/v1/reel.proto.
#
# The stubs are committed; run this after changing the .proto. A pinned, older
# grpcio-tools is used on purpose: generated code requires a protobuf/grpcio runtime at
# least as new as the generator, so an old generator keeps the package installable next
# to older pins (vLLM, SGLang, ...). Override with GRPCIO_TOOLS_VERSION=... if needed.
#
# Usage: scripts/gen-python-proto.sh        (PYTHON=python3.x to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."

GRPCIO_TOOLS_VERSION="${GRPCIO_TOOLS_VERSION:-1.66.2}"
PYTHON="${PYTHON:-python3}"
DEST=clients/python/reel_client/_proto

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

have_tools() {
    "$1" - "$GRPCIO_TOOLS_VERSION" <<'PY' 2>/dev/null
import sys, importlib.metadata as m
import grpc_tools.protoc  # noqa: F401
sys.exit(0 if m.version("grpcio-tools") == sys.argv[1] else 1)
PY
}

if ! have_tools "$PYTHON"; then
    echo "gen-python-proto: installing grpcio-tools==$GRPCIO_TOOLS_VERSION into a throwaway venv" >&2
    "$PYTHON" -m venv "$work/venv"
    "$work/venv/bin/pip" install --quiet --disable-pip-version-check \
        "grpcio-tools==$GRPCIO_TOOLS_VERSION"
    PYTHON="$work/venv/bin/python"
fi

mkdir -p "$work/out"
# -I proto keeps the descriptor's file name "reel/v1/reel.proto", the name the server's
# reflection service uses too, so the two never clash in one descriptor pool.
"$PYTHON" -m grpc_tools.protoc -I proto \
    --python_out="$work/out" --pyi_out="$work/out" --grpc_python_out="$work/out" \
    reel/v1/reel.proto

mkdir -p "$DEST"
cp "$work/out/reel/v1/reel_pb2.py" "$work/out/reel/v1/reel_pb2.pyi" "$DEST/"
# protoc writes an absolute import (`from reel.v1 import reel_pb2`) that only works with
# the proto root on sys.path; inside the package it must be relative.
sed -e 's/^from reel\.v1 import reel_pb2 as /from . import reel_pb2 as /' \
    "$work/out/reel/v1/reel_pb2_grpc.py" >"$DEST/reel_pb2_grpc.py"
if grep -q '^from reel\.v1' "$DEST/reel_pb2_grpc.py"; then
    echo "gen-python-proto: failed to rewrite the stub's import" >&2
    exit 1
fi
cat >"$DEST/__init__.py" <<'PY'
"""Generated gRPC stubs of reel.v1 (scripts/gen-python-proto.sh; do not edit)."""

from . import reel_pb2, reel_pb2_grpc

__all__ = ["reel_pb2", "reel_pb2_grpc"]
PY
echo "gen-python-proto: wrote $DEST (grpcio-tools $GRPCIO_TOOLS_VERSION)" >&2
