#!/usr/bin/env python3
"""Goldens for "HF-exact from the file": what the reference readers give for the fixture
videos, and what Hugging Face's processor and tiny vision tower make of it.

Everything is produced by RUNNING the readers and the reference code:

* OpenCV (opencv-python-headless 4.13, vLLM's video reader) and PyAV 18
  (``frame.to_ndarray(format="rgb24")``), every frame in display order. Both convert
  with FFmpeg's swscale. On 8-bit video the script asserts that they agree.
* qwen-vl-utils 0.0.14's frame selection and resize, then HF transformers 5.17's
  ``Qwen2VLVideoProcessor``. This reuses the machinery of make_preprocess_golden.py, fed
  with the PyAV frames: PyAV is HF transformers' default reader (``load_video``'s
  ``backend="pyav"``), and on 8-bit video OpenCV's frames are the same bytes. On 10-bit
  video the two differ (the JSON records by how much), and PyAV is the reference.
* HF's ``Qwen2_5_VisionTransformerPretrainedModel`` with the tiny test tower
  (tests/data/tiny-qwen2.5-vl), f32, on the first clip's pixel values.

Outputs:

* tests/data/golden/color.json: the SHA-256 of PyAV's rgb24 of synthetic yuv420p
  frames that hold every (Y, U, V) triple once (64 frames of 512x512: frame f, 2x2
  block (by, bx) has U = bx, V = by and luma 4f + 2dy + dx), of odd-width frames of
  seeded samples, and of a 10-bit frame; and per clip, the sampled frame indices, the SHA-256 of
  each reader's RGB for every sampled frame, whether the readers agree, and the
  SHA-256, shape and grid of HF's pixel_values.
* tests/data/golden/color.safetensors: the tiny tower's embeddings of the first clip.

Usage (from the repository root):

    pip install -r tests/golden/requirements.txt opencv-python-headless==4.13.0.92 av==18.1.0
    python tests/golden/make_color_golden.py
"""

import hashlib
import json
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_preprocess_golden as g  # noqa: E402  (registers qwen-vl-utils' fake backend)

REPO = g.REPO
VIDEO_DIR = g.VIDEO_DIR
OUT_JSON = g.OUT_DIR / "color.json"
OUT_TENSORS = g.OUT_DIR / "color.safetensors"
MODEL_DIR = REPO / "tests" / "data" / "tiny-qwen2.5-vl"

# (file, bit depth). Untagged 8-bit from x264/x265/libvpx, a BT.709 full-range tagged
# clip, an odd-sized one, and 10-bit HEVC/VP9/H.264.
CLIPS = [
    ("h264_main_bframes.mp4", 8),
    ("hevc_main.mp4", 8),
    ("vp9.webm", 8),
    ("h264_bt709_full.mp4", 8),
    ("h264_odd_size.mp4", 8),
    ("hevc_main10.mkv", 10),
    ("vp9_10bit.webm", 10),
    ("h264_high10.mp4", 10),
]
EMBED_CLIP = "h264_main_bframes.mp4"


def sha(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def read_pyav(path: Path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
        fps = float(s.average_rate)
    return frames, fps


def read_opencv(path: Path):
    cap = cv2.VideoCapture(str(path))
    # The fixtures' rotation is left to reel's own tests: compare the stored orientation.
    cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 0)
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(np.ascontiguousarray(bgr[..., ::-1]))
    cap.release()
    return frames


def plan(total_frames: int, fps: float, height: int, width: int):
    """qwen-vl-utils' frame indices for the default sampling (2 fps)."""
    g.ST.reset("plan", total_frames=total_frames, video_fps=fps, height=height, width=width)
    g.fetch_video({})
    return g.ST.frames_out["indices"]


def hf_pixels(frames: list, fps: float):
    """qwen-vl-utils' resize then HF's processor on the reader's frames."""
    video_in = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()
    g.ST.reset("pixels", video=video_in, video_fps=fps)
    video, _, _ = g.fetch_video({})
    processor = g.Qwen2VLVideoProcessor(**g.PROC_CFG)
    out = processor(videos=[video], return_tensors="pt")
    return out["pixel_values_videos"], out["video_grid_thw"][0]


def tiny_embeddings(pv: torch.Tensor, grid: torch.Tensor) -> np.ndarray:
    from transformers import Qwen2_5_VLForConditionalGeneration

    full = Qwen2_5_VLForConditionalGeneration.from_pretrained(MODEL_DIR, dtype=torch.float32, attn_implementation="eager")
    tower = full.model.visual.eval()
    with torch.no_grad():
        out = tower(pv, grid_thw=grid.reshape(1, 3))
    emb = out.pooler_output if hasattr(out, "pooler_output") else out
    return emb.float().numpy()


def lcg(state: int):
    """The 64-bit LCG both this script and codec/tests/color.rs draw samples from."""
    while True:
        state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        yield state >> 32


def planes_from(gen, width, height, bits):
    cw, ch = (width + 1) // 2, (height + 1) // 2
    mask = (1 << bits) - 1
    take = lambda n: np.array([next(gen) & mask for _ in range(n)], dtype=np.uint16 if bits > 8 else np.uint8)
    return take(width * height).reshape(height, width), take(cw * ch).reshape(ch, cw), take(cw * ch).reshape(ch, cw)


def pyav_rgb(y, u, v, fmt):
    h, w = y.shape
    frame = av.VideoFrame(w, h, fmt)
    for plane, data in zip(frame.planes, (y, u, v)):
        rows, cols = data.shape
        width = plane.line_size // data.itemsize
        buf = np.frombuffer(plane, dtype=data.dtype).reshape(-1, width)
        buf[:rows, :cols] = data
    return frame.to_ndarray(format="rgb24")


def exhaustive():
    """PyAV's rgb24 of every (Y, U, V) triple, of odd widths, and of a 10-bit frame."""
    every = hashlib.sha256()
    bx, by = np.meshgrid(np.arange(256), np.arange(256))
    u = bx.astype(np.uint8)
    v = by.astype(np.uint8)
    for f in range(64):
        y = np.zeros((512, 512), np.uint8)
        for dy in range(2):
            for dx in range(2):
                y[dy::2, dx::2] = 4 * f + 2 * dy + dx
        every.update(np.ascontiguousarray(pyav_rgb(y, u, v, "yuv420p")).tobytes())
    sizes = {}
    for i, (w, h) in enumerate([(641, 360), (17, 10), (1, 2), (650, 4), (24, 4)]):
        y, u, v = planes_from(lcg(1000 + i), w, h, 8)
        sizes[f"{w}x{h}"] = sha(pyav_rgb(y, u, v, "yuv420p"))
    y, u, v = planes_from(lcg(77), 128, 64, 10)
    ten = sha(pyav_rgb(y, u, v, "yuv420p10le"))
    return {
        "every_triple_sha256": every.hexdigest(),
        "odd_widths_sha256": sizes,
        "ten_bit_128x64_sha256": ten,
        "how": "yuv420p (10-bit: yuv420p10le) frames made in memory, PyAV VideoFrame.to_ndarray(format='rgb24'); "
               "unsited chroma, BT.601 limited (the default for untagged frames)",
    }


def main():
    clips, tensors = {}, {}
    for name, bits in CLIPS:
        path = VIDEO_DIR / name
        pyav, fps = read_pyav(path)
        cv = read_opencv(path)
        assert len(cv) == len(pyav), f"{name}: OpenCV read {len(cv)} frames, PyAV {len(pyav)}"
        h, w, _ = pyav[0].shape
        idx = plan(len(pyav), fps, h, w)
        frames = []
        for i in idx:
            a, b = pyav[i], cv[i]
            d = np.abs(a.astype(int) - b.astype(int))
            frames.append(
                {
                    "index": i,
                    "pyav_sha256": sha(a),
                    "opencv_sha256": sha(b),
                    "readers_equal_fraction": float((d == 0).mean()),
                    "readers_max_abs_diff": int(d.max()),
                }
            )
        agree = all(f["pyav_sha256"] == f["opencv_sha256"] for f in frames)
        if bits == 8:
            assert agree, f"{name}: OpenCV and PyAV disagree on 8-bit video: {frames}"
        pv, grid = hf_pixels([pyav[i] for i in idx], fps)
        clips[name] = {
            "bit_depth": bits,
            "size": [h, w],
            "fps": fps,
            "frames_total": len(pyav),
            "frames": frames,
            "readers_agree": agree,
            "pixel_values_sha256": g.sha256_f32(pv),
            "pixel_values_shape": list(pv.shape),
            "video_grid_thw": grid.tolist(),
        }
        if name == EMBED_CLIP:
            tensors[f"{name}.tiny_embeddings"] = np.ascontiguousarray(tiny_embeddings(pv, grid).astype("<f4"))
        print(f"{name}: {len(idx)} frames {idx}, grid {grid.tolist()}, readers agree: {agree}"
              + ("" if agree else f" (worst {min(f['readers_equal_fraction'] for f in frames):.4f} equal,"
                                  f" max |d| {max(f['readers_max_abs_diff'] for f in frames)})"))
    meta = {
        "generator": "tests/golden/make_color_golden.py",
        "opencv": cv2.__version__,
        "av": av.__version__,
        "ffmpeg_in_av": ".".join(map(str, av.library_versions["libswscale"])),
        **{k: str(v) for k, v in g.versions().items()},
    }
    probe = exhaustive()
    print("exhaustive:", probe["every_triple_sha256"])
    OUT_JSON.write_text(json.dumps({"meta": meta, "clips": clips, "synthetic": probe}, indent=1, sort_keys=True) + "\n")
    g.save_safetensors(tensors, OUT_TENSORS, {"generator": meta["generator"]})
    for p in (OUT_JSON, OUT_TENSORS):
        print(f"{p.relative_to(REPO)}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
