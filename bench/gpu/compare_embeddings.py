"""Compares the `embeddings` tensors of two `reel embed` outputs: prints their shapes, the
largest difference relative to the largest magnitude, and whether they are identical
(JSON). Exits 1 when the shapes differ or the relative difference passes --bound."""

import argparse
import json
import sys
from pathlib import Path

from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "encoder"))
from bench_gpu import rel  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--bound", type=float, default=2e-2, help="largest relative difference allowed")
    args = ap.parse_args()
    a, b = load_file(args.a)["embeddings"], load_file(args.b)["embeddings"]
    out = {"shape": [list(a.shape), list(b.shape)]}
    ok = a.shape == b.shape
    if ok:
        diff = rel(b, a)
        out.update(max_rel=diff, identical=bool((a == b).all()), bound=args.bound)
        ok = diff <= args.bound
    print(json.dumps(out))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
