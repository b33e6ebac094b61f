"""Compares the `embeddings` tensors of two `reel embed` outputs: prints their shapes, the
largest difference relative to the largest magnitude, and whether they are identical
(JSON). Exits 1 when the shapes differ or the relative difference passes --bound."""

import argparse
import json
import sys

import numpy as np
from safetensors.numpy import load_file


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
        scale = float(np.abs(a).max()) or 1.0
        rel = float(np.abs(a.astype(np.float64) - b).max()) / scale
        out.update(max_rel=rel, identical=bool((a == b).all()), bound=args.bound)
        ok = rel <= args.bound
    print(json.dumps(out))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
