#!/usr/bin/env python3
"""Goldens for reel's Qwen3-VL video preprocessing (HF transformers 5.17
``Qwen3VLVideoProcessor``), produced by RUNNING the reference code:

* Sampling plans: the processor's own ``sample_frames`` (numpy float64 linspace,
  half-to-even round), its ``resize`` (the ``cap_pixels_per_frame`` rule and
  ``smart_resize`` over t·h·w with factor 32) with torchvision's resize stubbed to
  record the size it is asked for, and ``Qwen3VLProcessor._calculate_timestamps``
  for the per-temporal-patch timestamps. About 200 cases: hand-picked edges plus
  seeded random ones.
* Clips: committed fixture videos decoded with PyAV (``frame.to_ndarray("rgb24")``,
  the reader HF's ``load_video`` uses), handed to the processor as a uint8 array
  with their metadata (``fps`` = the stream's ``average_rate``, ``total_num_frames``
  = the decoded frame count), ``do_sample_frames=True``: the processor samples,
  resizes (torchvision v2 on the uint8 tensor: its native uint8 bicubic antialias
  kernel), normalizes and patchifies. Several processor configurations per clip.

Outputs:

* tests/data/golden/qwen3_preprocess.json: ``plan_cases`` and ``clips``;
* tests/data/golden/qwen3_preprocess.safetensors: the full pixel_values of the one
  small clip case (``STORE_PIXELS``).

The uint8 resize is integer arithmetic; the script re-runs the clip cases with
``ATEN_CPU_CAPABILITY=avx2`` and ``default`` in subprocesses and asserts the same
bytes (torch's AVX2 uint8 kernel and its generic kernel agree), recording the
capabilities checked.

Usage (from the repository root):

    pip install -r tests/golden/requirements.txt av==18.1.0
    python tests/golden/make_qwen3_preprocess_golden.py
"""

import hashlib
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_preprocess_golden as g  # noqa: E402  (versions, deterministic safetensors writer)

from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor  # noqa: E402
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor  # noqa: E402
from transformers.video_utils import VideoMetadata  # noqa: E402

REPO = g.REPO
VIDEO_DIR = g.VIDEO_DIR
OUT_JSON = g.OUT_DIR / "qwen3_preprocess.json"
OUT_TENSORS = g.OUT_DIR / "qwen3_preprocess.safetensors"
SEED = 20260117
N_RANDOM = 150

# Class defaults and the published model folders' video_preprocessor_config.json size.
DEFAULT_SIZE = {"shortest_edge": 128 * 32 * 32, "longest_edge": 32 * 32 * 768}
PUBLISHED_SIZE = {"shortest_edge": 4096, "longest_edge": 25165824}

# Clips: different sizes, frame rates and codecs; a VFR file; 10-bit. (PyAV does not
# apply the rotation tag, so h264_rotated.mp4 is left out.)
CLIPS = [
    "h264_main_bframes.mp4",  # 320x240, 30 fps, 90 frames
    "h264_odd_size.mp4",  # 250x142
    "h264_vfr.mp4",  # variable frame rate (average 375/22 fps)
    "h264_longgop.mp4",  # 160x120, 360 frames
    "h264_high_opengop.mkv",  # 352x288, 25 fps, open GOPs
    "hevc_main10.mkv",  # 10-bit, 24 fps
    "vp9.webm",
]
# (name, processor kwargs at construction, call kwargs)
CONFIGS = [
    ("default", {}, {}),
    ("published", {"size": PUBLISHED_SIZE}, {}),
    ("cap", {}, {"cap_pixels_per_frame": True}),
    ("published_cap", {"size": PUBLISHED_SIZE}, {"cap_pixels_per_frame": True}),
    ("fps1_min2", {"min_frames": 2}, {"fps": 1.0}),
    ("num_frames_7", {}, {"num_frames": 7, "fps": None}),
    ("tiny_budget", {"size": {"shortest_edge": 4096, "longest_edge": 16384}}, {}),
]
STORE_PIXELS = ("h264_odd_size.mp4", "tiny_budget")


def sha(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def read_pyav(path: Path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
        return frames, float(s.average_rate), int(s.frames)


def timestamps(indices, fps):
    """Qwen3VLProcessor's per-temporal-patch timestamps (unbound: it uses no state)."""
    return Qwen3VLProcessor._calculate_timestamps(None, list(indices), fps, 2)


# --------------------------------------------------------------------------
# Plan cases: the processor's sample_frames and resize, torchvision stubbed
# --------------------------------------------------------------------------
class _SizeRecorder:
    """Replaces the resize Qwen3VLVideoProcessor.resize delegates to (super().resize):
    records the (height, width) it asks for instead of resizing."""

    def __init__(self):
        self.owner = next(c for c in Qwen3VLVideoProcessor.__mro__[1:] if "resize" in c.__dict__)
        self.real = self.owner.__dict__["resize"]
        self.calls = []

    def __enter__(self):
        rec = self

        def fake(self_, image, size, resample=None, **kwargs):
            rec.calls.append((size.height, size.width))
            return image

        self.owner.resize = fake
        return self

    def __exit__(self, *exc):
        self.owner.resize = self.real


def plan_case(name, total, fps, height, width, size=None, cap=False, num_frames=None, fps_arg=2.0,
              min_frames=None, max_frames=None, max_video_tokens=None):
    init = {}
    if size is not None:
        init["size"] = size
    if min_frames is not None:
        init["min_frames"] = min_frames
    if max_frames is not None:
        init["max_frames"] = max_frames
    if max_video_tokens is not None:
        init["max_video_tokens"] = max_video_tokens
    return {
        "name": name,
        "input": {
            "total_frames": total,
            "video_fps": fps,
            "height": height,
            "width": width,
            "processor": init,
            "cap_pixels_per_frame": cap,
            "num_frames": num_frames,
            "fps": fps_arg if num_frames is None else None,
        },
    }


def run_plan_case(case):
    inp = case["input"]
    proc = Qwen3VLVideoProcessor(**inp["processor"])
    meta = VideoMetadata(total_num_frames=inp["total_frames"], fps=inp["video_fps"])
    out = {}
    try:
        idx = proc.sample_frames(meta, num_frames=inp["num_frames"], fps=inp["fps"])
    except Exception as e:  # noqa: BLE001
        return {"stage": "frames", "error": str(e), "error_type": type(e).__name__}
    idx = [int(i) for i in idx]
    out["indices"] = idx
    if len(idx) == 0:
        out.update({"stage": "resize", "error": "no frames", "error_type": "ValueError"})
        return out
    out["group_timestamps"] = timestamps(idx, meta.fps)
    size = proc.size
    video = torch.zeros(1, 1, 1, 1, 1, dtype=torch.uint8).expand(1, len(idx), 3, inp["height"], inp["width"])
    try:
        with _SizeRecorder() as rec:
            proc.resize(video, size=size, resample=proc.resample,
                        factor=proc.patch_size * proc.merge_size, temporal_factor=proc.temporal_patch_size,
                        cap_pixels_per_frame=inp["cap_pixels_per_frame"])
    except Exception as e:  # noqa: BLE001
        out.update({"stage": "resize", "error": str(e), "error_type": type(e).__name__})
        return out
    assert len(rec.calls) == 1
    rh, rw = (int(v) for v in rec.calls[0])
    out["resized_height"], out["resized_width"] = rh, rw
    t = len(idx) + (-len(idx) % 2)
    out["grid_thw"] = [t // 2, rh // 16, rw // 16]
    return out


VIDEO_FPS = [24000 / 1001, 25.0, 30000 / 1001, 30.0, 50.0, 60000 / 1001, 60.0, 12.5, 7.3, 29.97, 59.94]


def plan_cases():
    cases = []
    add = lambda *a, **k: cases.append(plan_case(*a, **k))  # noqa: E731
    for fps in VIDEO_FPS:
        add(f"default_1min_{fps:.5f}fps", round(fps * 60), fps, 720, 1280)
        add(f"published_10s_{fps:.5f}fps", round(fps * 10), fps, 1080, 1920, size=PUBLISHED_SIZE)
        add(f"cap_10s_{fps:.5f}fps", round(fps * 10), fps, 1080, 1920, cap=True)
    for total in [1, 2, 3, 4, 5, 7, 8, 9]:
        add(f"tiny_total_{total}", total, 30.0, 240, 320)
    for n in [1, 2, 3, 5, 8, 17, 100, 1000]:
        add(f"num_frames_{n}_of_300", 300, 30.0, 240, 320, num_frames=n)
    add("num_frames_over_total", 10, 30.0, 240, 320, num_frames=15)
    add("num_frames_none_fps_none", 50, 30.0, 240, 320, num_frames=None, fps_arg=None)
    add("fps_none_tiny", 3, 30.0, 240, 320, num_frames=None, fps_arg=None)
    for f in [0.5, 1.0, 3.7, 10.0, 24.0]:
        add(f"fps_{f}_300f_30fps", 300, 30.0, 240, 320, fps_arg=f)
        add(f"fps_{f}_91f_7.3fps", 91, 7.3, 240, 320, fps_arg=f)
    add("min_frames_1", 300, 30.0, 240, 320, fps_arg=0.1, min_frames=1)
    add("min_frames_5", 300, 30.0, 240, 320, fps_arg=0.5, min_frames=5)
    add("min_gt_max", 300, 30.0, 240, 320, min_frames=20, max_frames=10)
    add("max_frames_7", 300, 30.0, 240, 320, max_frames=7)
    add("max_frames_1", 300, 30.0, 240, 320, max_frames=1)
    add("min_frames_over_total", 10, 30.0, 240, 320, min_frames=12)
    add("long_300000_default", 300000, 24000 / 1001, 1080, 1920)
    add("long_300000_fps0.5", 300000, 30.0, 720, 1280, fps_arg=0.5)
    add("long_216000_published_cap", 216000, 30.0, 2160, 3840, size=PUBLISHED_SIZE, cap=True)
    add("long_123457_num_frames_767", 123457, 30.0, 360, 640, num_frames=767)
    sizes = [
        (16, 16), (31, 31), (31, 64), (20, 4000), (32, 32), (142, 250), (240, 320), (360, 640), (480, 640),
        (481, 853), (719, 1281), (720, 1280), (1080, 1920), (1920, 1080), (2340, 1080), (2160, 3840),
        (4320, 7680), (333, 777), (1000, 1000), (17, 3400), (3400, 17), (32, 6400), (32, 6401), (100, 20000),
        (101, 20000), (1, 200), (2, 2), (4320, 22), (48, 48), (16, 3200),
    ]
    for (h, w) in sizes:
        add(f"size_{h}x{w}_default", 300, 30.0, h, w)
        add(f"size_{h}x{w}_published_cap", 300, 30.0, h, w, size=PUBLISHED_SIZE, cap=True)
    add("max_video_tokens_100_cap", 600, 30.0, 1080, 1920, cap=True, max_video_tokens=100)
    add("cap_floor_shortest_edge", 30000, 30.0, 1080, 1920, cap=True, size={"shortest_edge": 200000, "longest_edge": 786432})
    add("shortest_gt_longest", 300, 30.0, 240, 320, size={"shortest_edge": 1000000, "longest_edge": 500000})
    # round(T/2)*2 ties: T odd → t̄ = T±1 (half to even)
    for n in [3, 5, 7, 9, 11]:
        add(f"odd_t_{n}_near_budget", 600, 30.0, 600, 800, num_frames=n, size={"shortest_edge": 4096, "longest_edge": n * 600 * 800})

    rng = random.Random(SEED)
    budgets = [(131072, 786432), (4096, 25165824), (4096, 16384), (65536, 1048576), (8192, 3000000), (100000, 100000000)]
    for i in range(N_RANDOM):
        r = rng.random()
        if r < 0.2:
            total = rng.randint(1, 300)
        elif r < 0.85:
            total = int(round(math.exp(rng.uniform(math.log(2), math.log(300000)))))
        else:
            total = rng.randint(10001, 300000)
        fps = rng.choice(VIDEO_FPS)
        r = rng.random()
        if r < 0.1:
            h, w = rng.choice(sizes)
        elif r < 0.2:
            s = rng.randint(8, 200)
            ratio = rng.uniform(150, 210)
            h, w = (s, int(s * ratio)) if rng.random() < 0.5 else (int(s * ratio), s)
        else:
            h, w = rng.randint(8, 4320), rng.randint(8, 7680)
            if rng.random() < 0.3:
                h, w = w, h
        kw = {}
        r = rng.random()
        if r < 0.25:
            kw["num_frames"] = rng.choice([2, 3, 4, 5, 8, 15, 16, 64, 127, 768, rng.randint(1, 900)])
        elif r < 0.6:
            kw["fps_arg"] = rng.choice([0.25, 0.5, 1.0, 2.0, 3.7, 10.0])
        if rng.random() < 0.3:
            kw["min_frames"] = rng.choice([1, 2, 3, 4, 8, 16])
        if rng.random() < 0.3:
            kw["max_frames"] = rng.choice([2, 7, 16, 64, 255, 768, 1000])
        if rng.random() < 0.6:
            lo, hi = rng.choice(budgets)
            kw["size"] = {"shortest_edge": lo, "longest_edge": hi}
        kw["cap"] = rng.random() < 0.4
        if kw["cap"] and rng.random() < 0.3:
            kw["max_video_tokens"] = rng.choice([64, 256, 1024, 16384])
        add(f"random_{i:03d}", total, fps, h, w, **kw)
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


# --------------------------------------------------------------------------
# Clips: the whole processor on PyAV's frames
# --------------------------------------------------------------------------
def run_clip(frames, fps, init, call):
    proc = Qwen3VLVideoProcessor(**init)
    captured = {}
    real = proc.resize

    def resize(*a, **k):
        out = real(*a, **k)
        captured["resized"] = out
        return out

    proc.resize = resize
    out = proc(videos=[np.stack(frames)], video_metadata=[{"fps": fps, "total_num_frames": len(frames)}],
               do_sample_frames=True, return_tensors="pt", return_metadata=True, **call)
    meta = out["video_metadata"][0]
    idx = [int(i) for i in meta.frames_indices]
    pv = out["pixel_values_videos"]
    resized = captured["resized"][0]  # (T, C, h, w) uint8
    assert resized.dtype == torch.uint8
    return {
        "indices": idx,
        "metadata_fps": meta.fps,
        "group_timestamps": timestamps(idx, meta.fps),
        "resized_height": int(resized.shape[-2]),
        "resized_width": int(resized.shape[-1]),
        "video_grid_thw": out["video_grid_thw"][0].tolist(),
        "pixel_values_shape": list(pv.shape),
        "pixel_values_sha256": g.sha256_f32(pv),
        "resized_sha256": sha(resized.permute(0, 2, 3, 1).contiguous().numpy()),
        "input_frames_sha256": [sha(frames[i]) for i in idx],
    }, pv


def clip_goldens():
    clips, tensors = {}, {}
    for name in CLIPS:
        frames, fps, nb = read_pyav(VIDEO_DIR / name)
        h, w, _ = frames[0].shape
        entry = {"size": [h, w], "fps": fps, "frames_total": len(frames), "stream_frames": nb, "configs": {}}
        for cname, init, call in CONFIGS:
            res, pv = run_clip(frames, fps, init, call)
            res["processor"] = init
            res["call"] = call
            entry["configs"][cname] = res
            if (name, cname) == STORE_PIXELS:
                tensors[f"{name}.{cname}.pixel_values"] = pv.numpy().astype("<f4")
            print(f"{name} {cname}: {len(res['indices'])} frames, {res['resized_height']}x{res['resized_width']}, "
                  f"grid {res['video_grid_thw']}")
        clips[name] = entry
    return clips, tensors


def child_digest():
    clips, _ = clip_goldens()
    digest = {f"{n}/{c}": v["pixel_values_sha256"] for n, e in clips.items() for c, v in e["configs"].items()}
    print("DIGEST " + json.dumps(digest, sort_keys=True))


def main():
    if os.environ.get("REEL_QWEN3_GOLDEN_CHILD"):
        child_digest()
        return
    cases = plan_cases()
    for c in cases:
        c["output"] = run_plan_case(c)
    print(f"{len(cases)} plan cases, {sum('stage' in c['output'] for c in cases)} errors")
    clips, tensors = clip_goldens()
    ours = {f"{n}/{c}": v["pixel_values_sha256"] for n, e in clips.items() for c, v in e["configs"].items()}
    checked = [torch.backends.cpu.get_cpu_capability()]
    for cap in ["avx2", "default"]:
        env = dict(os.environ, REEL_QWEN3_GOLDEN_CHILD="1", ATEN_CPU_CAPABILITY=cap)
        res = subprocess.run([sys.executable, __file__], env=env, capture_output=True, text=True, check=True)
        line = next(ln for ln in res.stdout.splitlines() if ln.startswith("DIGEST "))
        theirs = json.loads(line[len("DIGEST "):])
        assert theirs == ours, f"pixel values differ under ATEN_CPU_CAPABILITY={cap}"
        checked.append(cap.upper())
    meta = {
        "generator": "tests/golden/make_qwen3_preprocess_golden.py",
        **{k: str(v) for k, v in g.versions().items()},
        "capabilities_checked": checked,
    }
    # One line per plan case keeps the file small and diffs readable.
    compact = lambda v: json.dumps(v, sort_keys=True, separators=(",", ":"))  # noqa: E731
    text = "{\n" + f'"meta": {json.dumps(meta, indent=1, sort_keys=True)},\n'
    text += f'"clips": {json.dumps(clips, indent=1, sort_keys=True)},\n'
    text += '"plan_cases": [\n' + ",\n".join(compact(c) for c in cases) + "\n]\n}\n"
    assert json.loads(text) == {"meta": meta, "plan_cases": cases, "clips": clips}
    OUT_JSON.write_text(text)
    g.save_safetensors(tensors, OUT_TENSORS, {"generator": meta["generator"]})
    for p in (OUT_JSON, OUT_TENSORS):
        print(f"{p.relative_to(REPO)}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
