#!/usr/bin/env python3
"""File in, Qwen3-VL embeddings out, on the GPU: `reel embed --device cuda --dtype f32` with
the committed tiny Qwen3-VL-family towers on the clips of tests/data/golden/qwen3_e2e.safetensors
(written by tests/golden/make_qwen3_e2e_golden.py from HF's processor + tower), compared with
HF: grid, frame indices and per-temporal-patch timestamps exactly, embeddings within 1e-4
(max|d| / max|ref|). Prints JSON; exit 1 on a mismatch.

    python3 bench/gpu/check_qwen3_e2e.py REEL_BIN [DEVICE]     (cuda, the default, or cpu)
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors import safe_open

REPO = Path(__file__).resolve().parents[2]
TOWERS = {"qwen3_vl": "tests/data/tiny-qwen3-vl", "qwen3_5": "tests/data/tiny-qwen3.5"}


def main():
    reel = sys.argv[1]
    device = sys.argv[2] if len(sys.argv) > 2 else "cuda"
    golden = safe_open(str(REPO / "tests/data/golden/qwen3_e2e.safetensors"), "np")
    clips = sorted({k.split(".mp4.")[0] + ".mp4" for k in golden.keys()})
    results, ok = {}, True
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips:
            for tower, folder in TOWERS.items():
                out = Path(tmp) / f"{clip}.{tower}.safetensors"
                run = subprocess.run(
                    [reel, "embed", str(REPO / "tests/data/video" / clip), "--model", str(REPO / folder),
                     "--device", device, "--dtype", "f32", "-o", str(out)],
                    capture_output=True, text=True,
                )
                name = f"{clip} {tower}"
                if run.returncode != 0:
                    results[name] = {"error": run.stderr.strip()[-300:]}
                    ok = False
                    continue
                got = safe_open(str(out), "np")
                ref = golden.get_tensor(f"{clip}.{tower}.f32")
                emb = got.get_tensor("embeddings").astype(np.float32)
                same = {
                    key: bool(np.array_equal(got.get_tensor(key).reshape(-1),
                                             golden.get_tensor(f"{clip}.{key}").reshape(-1)))
                    for key in ["video_grid_thw", "frame_indices", "grid_timestamps"]
                }
                err = float(np.abs(emb - ref).max() / np.abs(ref).max()) if emb.shape == ref.shape else None
                passed = all(same.values()) and err is not None and err <= 1e-4
                ok &= passed
                results[name] = {"equal": same, "embeddings_max_rel": err, "shape": list(emb.shape), "ok": passed}
    print(json.dumps({"all_ok": ok, "cases": results}, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
