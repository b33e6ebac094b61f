#!/usr/bin/env python3
"""File in, pixel values out, on the GPU: `reel frames --device cuda` on every clip of
tests/data/golden/color.json, its pixel_values compared with HF's (the SHA-256 the golden
generator recorded from PyAV/OpenCV frames + HF's processor). Prints JSON; exit 1 on a
mismatch. A clip the
GPU's decoders cannot decode (H.264 10-bit on NVDEC) is listed as unsupported, not failed:
reel refuses it with a typed error, which the GPU tests check on their own.

    python3 bench/gpu/check_color.py REEL_BIN [DEVICE]     (DEVICE: cuda, the default, or cpu)
"""

import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def pixel_values_sha256(path: Path) -> str:
    """SHA-256 of the f32 little-endian bytes of the file's pixel_values tensor."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    start, end = header["pixel_values"]["data_offsets"]
    return hashlib.sha256(data[8 + n + start : 8 + n + end]).hexdigest()


def main():
    reel = sys.argv[1]
    device = sys.argv[2] if len(sys.argv) > 2 else "cuda"
    golden = json.loads((REPO / "tests/data/golden/color.json").read_text())
    results, ok = {}, True
    with tempfile.TemporaryDirectory() as tmp:
        for name, clip in sorted(golden["clips"].items()):
            out = Path(tmp) / f"{name}.safetensors"
            run = subprocess.run(
                [reel, "frames", str(REPO / "tests/data/video" / name), "--device", device, "-o", str(out), "--json"],
                capture_output=True, text=True,
            )
            if run.returncode != 0 and "unsupported stream" in run.stderr:
                results[name] = {"unsupported_here": run.stderr.strip()[-300:]}
                continue
            if run.returncode != 0:
                results[name] = {"error": run.stderr.strip()[-300:]}
                ok = False
                continue
            summary = json.loads(run.stdout)
            same = pixel_values_sha256(out) == clip["pixel_values_sha256"]
            ok &= same
            results[name] = {"decoded_on": summary.get("device"), "identical_to_hf": same}
    print(json.dumps({"all_identical": ok, "clips": results}, indent=1))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
