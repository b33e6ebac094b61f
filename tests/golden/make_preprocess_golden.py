#!/usr/bin/env python3
"""Golden reference outputs for reel's Qwen2.5-VL video preprocessing.

Everything here is produced by RUNNING the reference code, not by a
re-implementation of it:

* qwen-vl-utils 0.0.14 (``qwen_vl_utils.vision_process``): frame selection
  (``calculate_video_frame_range`` + ``smart_nframes`` + float32
  ``torch.linspace(...).round()``, exactly as ``_read_video_torchcodec``) and
  ``fetch_video`` (max/min/total_pixels logic, ``smart_resize``, bicubic
  antialiased resize).
* HF transformers 5.17 ``Qwen2VLVideoProcessor`` configured like
  Qwen/Qwen2.5-VL-7B-Instruct's preprocessor_config.json (rescale, normalize,
  temporal padding, patchify).

Outputs (see tests/golden/README.md):

* tests/data/golden/plan_cases.json       sampling plan + resize geometry
* tests/data/golden/preprocess.safetensors pixel goldens on identical frames

Usage (from the repository root):

    pip install -r tests/golden/requirements.txt
    python tests/golden/make_preprocess_golden.py

The script is deterministic: seeded case generation, single-threaded torch,
fixed fixture videos. Re-running it on the same package versions and the same
torch CPU capability gives byte-identical files.
"""

import hashlib
import importlib.metadata
import json
import logging
import math
import os
import random
import sys
from pathlib import Path

if "MODEL_SEQ_LEN" in os.environ:
    # qwen-vl-utils reads it at import time and it changes total_pixels.
    sys.exit("unset MODEL_SEQ_LEN: the goldens use qwen-vl-utils' default (128000)")

import av
import numpy as np
import torch
import torchvision
import transformers
from safetensors.numpy import load_file

import qwen_vl_utils.vision_process as vp
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

REPO = Path(__file__).resolve().parents[2]
VIDEO_DIR = REPO / "tests" / "data" / "video"
OUT_DIR = REPO / "tests" / "data" / "golden"
PLAN_PATH = OUT_DIR / "plan_cases.json"
PIXEL_PATH = OUT_DIR / "preprocess.safetensors"

SEED = 20250607
N_RANDOM_PLAN_CASES = 175
IMAGE_PATCH_SIZE = 14  # Qwen2.5-VL: patch 14, factor 28
FAKE_BACKEND = "reel_golden_fake"

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)


def versions():
    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "transformers": transformers.__version__,
        "qwen_vl_utils": importlib.metadata.version("qwen-vl-utils"),
        "av": av.__version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


# --------------------------------------------------------------------------
# Log capture (warnings emitted by the reference code, reported at the end)
# --------------------------------------------------------------------------
class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append((record.name, record.getMessage()))


LOG = _Collect()
for _name in ("qwen_vl_utils", "transformers"):
    logging.getLogger(_name).addHandler(LOG)
logging.getLogger("qwen_vl_utils.vision_process").setLevel(logging.WARNING)


# --------------------------------------------------------------------------
# Fake video reader backend, registered in qwen-vl-utils' backend table
# --------------------------------------------------------------------------
class _State:
    def reset(self, mode, **kw):
        self.mode = mode
        self.total_frames = kw.get("total_frames")
        self.video_fps = kw.get("video_fps")
        self.height = kw.get("height")
        self.width = kw.get("width")
        self.video = kw.get("video")
        self.frames_out = None
        self.frames_error = None
        self.resize_calls = []


ST = _State()


class _FallbackBlocked(Exception):
    """fetch_video falls back to the torchvision reader when the backend raises;
    we block that so the original frame-selection error is what gets recorded."""


def _fake_reader(ele):
    if ST.mode == "plan":
        # Exactly the body of vision_process._read_video_torchcodec, with the
        # decoder metadata replaced by the case's total_frames / video_fps.
        video_fps = ST.video_fps
        total_frames = ST.total_frames
        try:
            start_frame, end_frame, total_frames = vp.calculate_video_frame_range(ele, total_frames, video_fps)
            nframes = vp.smart_nframes(ele, total_frames=total_frames, video_fps=video_fps)
            idx = torch.linspace(start_frame, end_frame, nframes).round().long().tolist()
            sample_fps = nframes / max(total_frames, 1e-6) * video_fps
        except Exception as e:  # noqa: BLE001 - recorded as a golden error
            ST.frames_error = e
            raise
        ST.frames_out = {
            "start_frame": start_frame,
            "end_frame": end_frame,
            "nframes": nframes,
            "indices": idx,
            "sample_fps": sample_fps,
        }
        # Zero-memory stand-in for the decoded frames: fetch_video only looks at .shape.
        video = torch.zeros(1, 3, 1, 1, dtype=torch.uint8).expand(nframes, 3, ST.height, ST.width)
    elif ST.mode == "pixels":
        video = ST.video  # real decoded frames, uint8 TCHW contiguous
        nframes = video.shape[0]
        idx = list(range(nframes))
        total_frames, video_fps = nframes, ST.video_fps
        sample_fps = nframes / max(total_frames, 1e-6) * video_fps
    else:
        raise RuntimeError("fake backend used outside a golden case")
    metadata = dict(fps=video_fps, frames_indices=idx, total_num_frames=total_frames, video_backend=FAKE_BACKEND)
    return video, metadata, sample_fps


def _fallback_blocker(ele):
    raise _FallbackBlocked()


vp.VIDEO_READER_BACKENDS[FAKE_BACKEND] = _fake_reader
vp.VIDEO_READER_BACKENDS["torchvision"] = _fallback_blocker
vp.FORCE_QWENVL_VIDEO_READER = FAKE_BACKEND
vp.get_video_reader_backend.cache_clear()

_REAL_RESIZE = vp.transforms.functional.resize


def _resize_stub(img, size, interpolation=None, max_size=None, antialias=True):
    """Records the size fetch_video asks for; returns a zero-memory float32
    tensor of the target shape (fetch_video calls .float() on it, a no-op)."""
    assert interpolation == vp.InterpolationMode.BICUBIC and antialias is True and max_size is None
    size = [int(s) for s in size]
    ST.resize_calls.append(size)
    return torch.zeros(1, 1, 1, 1, dtype=torch.float32).expand(img.shape[0], img.shape[1], size[0], size[1])


def fetch_video(ele):
    call = {"type": "video", "video": f"{FAKE_BACKEND}://input"}
    call.update(ele)
    (video, metadata), sample_fps = vp.fetch_video(
        call, image_patch_size=IMAGE_PATCH_SIZE, return_video_sample_fps=True, return_video_metadata=True
    )
    return video, metadata, sample_fps


# --------------------------------------------------------------------------
# A. Plan cases
# --------------------------------------------------------------------------
F = 28  # image_factor for patch 14
VIDEO_FPS = [24000 / 1001, 25.0, 30000 / 1001, 30.0, 50.0, 60000 / 1001, 60.0, 12.5, 7.3]
ELE_FPS = [0.5, 1, 2, 3.7, 10]


def plan_cases():
    cases = []

    def add(name, total_frames, video_fps, height, width, **ele):
        cases.append(
            {
                "name": name,
                "input": {
                    "total_frames": total_frames,
                    "video_fps": video_fps,
                    "height": height,
                    "width": width,
                    "ele": ele,
                },
            }
        )

    # ---- frame selection: defaults at every source fps
    for fps in VIDEO_FPS:
        add(f"default_1min_{fps:.3f}fps", round(fps * 60), fps, 720, 1280)
        add(f"default_10s_{fps:.3f}fps", round(fps * 10), fps, 1080, 1920)
    add("default_59.94_literal", 3597, 59.94, 1080, 1920)
    add("default_29.97_literal_long", 107892, 29.97, 480, 640)
    for fps in ELE_FPS:
        add(f"fps_{fps}_300f_30fps", 300, 30.0, 240, 320, fps=fps)
        add(f"fps_{fps}_91f_7.3fps", 91, 7.3, 240, 320, fps=fps)

    # ---- long videos (float32 linspace rounding)
    add("long_300000_default_23.976", 300000, 24000 / 1001, 1080, 1920)
    add("long_300000_nframes768_30", 300000, 30.0, 720, 1280, nframes=768)
    add("long_299999_nframes767_30", 299999, 30.0, 720, 1280, nframes=767)
    add("long_216000_fps1_30", 216000, 30.0, 2160, 3840, fps=1)
    add("long_100003_fps0.5_25", 100003, 25.0, 1080, 1920, fps=0.5)
    add("long_12345_nframes640_29.97", 12345, 30000 / 1001, 720, 1280, nframes=640)
    add("long_65537_fps3.7_59.94", 65537, 60000 / 1001, 1080, 1920, fps=3.7)
    add("long_262144_nframes766_60", 262144, 60.0, 360, 640, nframes=766)
    add("long_177777_nframes513_50", 177777, 50.0, 360, 640, nframes=513)
    add("long_10001_nframes768_30", 10001, 30.0, 360, 640, nframes=768)
    add("long_216000_range_fps1", 216000, 30.0, 1080, 1920, fps=1, video_start=3600.5, video_end=5400.25)
    add("long_300000_range_nframes700", 300000, 24000 / 1001, 1080, 1920, nframes=700, video_start=1234.567, video_end=9876.543)
    add("long_300000_maxframes_333", 300000, 30000 / 1001, 1080, 1920, max_frames=333)
    add("long_4320p_768f", 300000, 30.0, 4320, 7680, nframes=768)
    add("long_nframes1000_no_768_cap", 30000, 30.0, 360, 640, nframes=1000)

    # ---- nframes rounding (round-half-even on nframes / 2)
    for n in [0, 1, 2, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 99, 101, 767, 769]:
        add(f"nframes_{n}_of_1000", 1000, 30.0, 240, 320, nframes=n)
    add("nframes_eq_total_64", 64, 30.0, 240, 320, nframes=64)
    add("nframes_65_of_64", 64, 30.0, 240, 320, nframes=65)
    add("nframes_65_of_65", 65, 30.0, 240, 320, nframes=65)
    add("nframes_63_of_63", 63, 30.0, 240, 320, nframes=63)
    add("nframes_66_of_64", 64, 30.0, 240, 320, nframes=66)
    add("nframes_and_fps", 300, 30.0, 240, 320, nframes=8, fps=2)

    # ---- min_frames / max_frames
    add("min_frames_5", 300, 30.0, 240, 320, fps=0.5, min_frames=5)
    add("min_frames_1", 300, 30.0, 240, 320, fps=0.1, min_frames=1)
    add("max_frames_7", 300, 30.0, 240, 320, max_frames=7)
    add("max_frames_1", 300, 30.0, 240, 320, max_frames=1)
    add("max_frames_2", 300, 30.0, 240, 320, max_frames=2)
    add("min_gt_max", 300, 30.0, 240, 320, min_frames=20, max_frames=10)
    add("max_frames_1000", 3000, 30.0, 240, 320, fps=10, max_frames=1000)
    add("min_frames_over_total", 10, 30.0, 240, 320, min_frames=12)

    # ---- tiny videos
    for t in [1, 2, 3, 4, 5, 7]:
        add(f"tiny_total_{t}", t, 30.0, 240, 320)
    add("tiny_total_3_nframes2", 3, 30.0, 240, 320, nframes=2)
    add("tiny_total_2_fps10", 2, 7.3, 240, 320, fps=10)

    # ---- video_start / video_end
    for fps in [30.0, 30000 / 1001, 25.0, 24000 / 1001]:
        for s in [0.1, 0.2, 0.3, 0.7, 1.1, 2.3, 1 / 3]:
            add(f"start_{s:.4f}_{fps:.3f}fps", 300, fps, 240, 320, video_start=s)
            add(f"end_{s + 1.0:.4f}_{fps:.3f}fps", 300, fps, 240, 320, video_end=s + 1.0)
    # seconds * fps lands just above (ceil bumps) / just below (floor drops) an integer in f64
    for s, fps in [(8.3, 30.0), (0.28, 25.0), (4.15, 60.0), (1.1, 50.0), (0.56, 12.5)]:
        add(f"fp_start_{s}_{fps}fps", 600, fps, 240, 320, video_start=s)
    for s, fps in [(4.1, 30.0), (1.16, 25.0), (2.05, 60.0), (1.14, 50.0), (2.32, 12.5)]:
        add(f"fp_end_{s}_{fps}fps", 600, fps, 240, 320, video_end=s)
    add("fp_start_8.3_end_8.4_30fps", 600, 30.0, 240, 320, video_start=8.3, video_end=8.4)
    add("start_negative", 300, 30.0, 240, 320, video_start=-5.0)
    add("end_beyond", 300, 30.0, 240, 320, video_end=1e6)
    add("start_neg_end_beyond", 300, 30.0, 240, 320, video_start=-1.0, video_end=11.0)
    add("start_beyond_duration", 300, 30.0, 240, 320, video_start=20.0)
    add("start_eq_end", 300, 30.0, 240, 320, video_start=5.0, video_end=5.0)
    add("start_gt_end", 300, 30.0, 240, 320, video_start=5.0, video_end=4.0)
    add("start_end_same_frame", 300, 30.0, 240, 320, video_start=5.0, video_end=5.02)
    add("start_end_two_frames", 300, 30.0, 240, 320, video_start=5.0, video_end=5.04)
    add("end_zero", 300, 30.0, 240, 320, video_end=0.0)
    add("end_one_frame", 300, 30.0, 240, 320, video_end=0.034)
    add("end_negative", 300, 30.0, 240, 320, video_end=-3.0)
    add("start_null_end_3", 300, 30.0, 240, 320, video_start=None, video_end=3.0)
    add("start_2_end_null", 300, 30.0, 240, 320, video_start=2.0, video_end=None)
    add("both_null", 300, 30.0, 240, 320, video_start=None, video_end=None)
    add("start_int_end_int", 300, 25.0, 240, 320, video_start=2, video_end=7)
    add("range_nframes_too_many", 300, 30.0, 240, 320, video_start=1.0, video_end=1.5, nframes=20)
    add("range_fps10", 750, 25.0, 240, 320, video_start=3.3, video_end=17.9, fps=10)
    add("range_at_end_exact", 300, 30.0, 240, 320, video_start=9.9, video_end=10.0)

    # ---- resize geometry: sizes with defaults
    sizes = [
        (16, 16), (28, 28), (142, 250), (240, 320), (360, 640), (480, 640), (481, 853), (719, 1281),
        (720, 1280), (1079, 1919), (1080, 1920), (1920, 1080), (2340, 1080), (2160, 3840), (3840, 2160),
        (4320, 7680), (7680, 4320), (333, 777), (143, 251), (1000, 1000), (17, 3400), (3400, 17),
        (16, 3200), (16, 3201), (3201, 16), (28, 5600), (14, 2800), (99, 20000), (100, 20000),
        (37, 7399), (1, 200), (2, 2), (15, 3000), (4320, 22),
    ]
    for (h, w) in sizes:
        add(f"size_{h}x{w}_default", 300, 30.0, h, w)
    for (h, w) in [(28, 5600), (16, 3200), (20, 4000), (14, 2800), (33, 6600)]:
        add(f"zero_{h}x{w}_max_pixels_128tok", 300, 30.0, h, w, max_pixels=F * F * 128)
        add(f"zero_{h}x{w}_total_pixels", 1536, 30.0, h, w, nframes=768, total_pixels=F * F * 4096)
    add("size_4320x7680_768f", 30000, 30.0, 4320, 7680, nframes=768)
    add("size_4320x7680_2f", 300, 30.0, 4320, 7680, nframes=2)
    add("min_pixels_small", 300, 30.0, 1080, 1920, min_pixels=3136)
    add("min_pixels_small_tiny", 300, 30.0, 16, 16, min_pixels=3136)
    add("min_pixels_huge", 300, 30.0, 240, 320, min_pixels=F * F * 2000)
    add("max_pixels_over_limit", 300, 30.0, 2160, 3840, max_pixels=F * F * 2000)
    add("max_pixels_12845056", 300, 30.0, 2160, 3840, max_pixels=12845056)
    add("max_pixels_below_min", 300, 30.0, 1080, 1920, max_pixels=F * F * 64)
    add("max_pixels_below_min_explicit", 300, 30.0, 1080, 1920, min_pixels=F * F * 256, max_pixels=F * F * 255)
    add("max_pixels_eq_min", 300, 30.0, 1080, 1920, min_pixels=F * F * 200, max_pixels=F * F * 200)
    add("total_pixels_small", 640, 30.0, 1080, 1920, nframes=64, total_pixels=F * F * 1024)
    add("total_pixels_float", 640, 30.0, 1080, 1920, nframes=62, total_pixels=1234567.5)
    add("total_pixels_big", 640, 30.0, 2160, 3840, nframes=4, total_pixels=F * F * 100000)
    add("resized_120x200", 300, 30.0, 240, 320, resized_height=120, resized_width=200)
    add("resized_10x10", 300, 30.0, 240, 320, resized_height=10, resized_width=10)
    add("resized_5000x9000", 300, 30.0, 240, 320, resized_height=5000, resized_width=9000)
    add("resized_1x300", 300, 30.0, 240, 320, resized_height=1, resized_width=300)
    add("resized_28x5600", 300, 30.0, 240, 320, resized_height=28, resized_width=5600)
    add("resized_with_min_max", 300, 30.0, 240, 320, resized_height=700, resized_width=900, min_pixels=3136, max_pixels=F * F * 16)
    add("resized_height_only", 300, 30.0, 240, 320, resized_height=120)
    add("resized_width_only", 300, 30.0, 240, 320, resized_width=200)
    add("resized_odd_portrait", 300, 30.0, 240, 320, resized_height=1001, resized_width=333)

    # ---- seeded random cases
    rng = random.Random(SEED)
    nf_choices = [1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 65, 127, 128, 255, 256, 767, 768, 769, 1000]
    minf_choices = [1, 2, 3, 4, 5, 7, 8, 16, 33]
    maxf_choices = [2, 3, 7, 16, 64, 100, 255, 768, 1000]
    minp_choices = [3136, F * F * 4, F * F * 64, F * F * 128, F * F * 256, 100000, F * F * 1000]
    maxp_choices = [F * F * 4, F * F * 16, F * F * 64, F * F * 128, F * F * 256, F * F * 768, F * F * 1280, 12845056, 500000]
    totp_choices = [F * F * 1024, F * F * 4096, F * F * 16384, F * F * 20480, F * F * 24576, 1000000, 6.4e6]
    for i in range(N_RANDOM_PLAN_CASES):
        r = rng.random()
        if r < 0.2:
            total_frames = rng.randint(2, 300)
        elif r < 0.85:
            total_frames = int(round(math.exp(rng.uniform(math.log(2), math.log(300000)))))
        else:
            total_frames = rng.randint(10001, 300000)
        video_fps = rng.choice(VIDEO_FPS)
        r = rng.random()
        if r < 0.1:
            height, width = rng.choice(sizes)
        elif r < 0.2:
            s = rng.randint(16, 200)
            ratio = rng.uniform(150, 210)
            height, width = (s, int(s * ratio)) if rng.random() < 0.5 else (int(s * ratio), s)
            height, width = max(height, 1), max(width, 1)
        else:
            height, width = rng.randint(16, 4320), rng.randint(16, 7680)
            if rng.random() < 0.3:
                height, width = width, height
        ele = {}
        r = rng.random()
        if r < 0.45:
            if rng.random() < 0.8:
                ele["fps"] = rng.choice(ELE_FPS)
            if rng.random() < 0.3:
                ele["min_frames"] = rng.choice(minf_choices)
            if rng.random() < 0.3:
                ele["max_frames"] = rng.choice(maxf_choices)
        elif r < 0.8:
            if rng.random() < 0.6:
                ele["nframes"] = rng.choice(nf_choices)
            else:
                ele["nframes"] = rng.randint(1, min(total_frames + 1, 800))
        dur = total_frames / video_fps
        if rng.random() < 0.3:
            if rng.random() < 0.75:
                ele["video_start"] = round(rng.uniform(-0.1 * dur, 1.1 * dur), 3)
            if rng.random() < 0.75:
                ele["video_end"] = round(rng.uniform(-0.1 * dur, 1.2 * dur), 3)
        r = rng.random()
        if r < 0.5:
            pass
        elif r < 0.85:
            if rng.random() < 0.5:
                ele["min_pixels"] = rng.choice(minp_choices)
            if rng.random() < 0.6:
                ele["max_pixels"] = rng.choice(maxp_choices)
            if rng.random() < 0.4:
                ele["total_pixels"] = rng.choice(totp_choices)
        else:
            ele["resized_height"] = rng.randint(1, 4000)
            ele["resized_width"] = rng.randint(1, 4000)
        add(f"random_{i:03d}", total_frames, video_fps, height, width, **ele)

    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return cases


def run_plan_case(case):
    inp = case["input"]
    ST.reset("plan", total_frames=inp["total_frames"], video_fps=inp["video_fps"], height=inp["height"], width=inp["width"])
    n_logs = len(LOG.records)
    try:
        video, metadata, sample_fps = fetch_video(inp["ele"])
    except _FallbackBlocked:
        e = ST.frames_error
        assert e is not None
        out = {"stage": "frames", "error": str(e), "error_type": type(e).__name__}
    except Exception as e:  # noqa: BLE001
        assert ST.frames_out is not None, f"{case['name']}: unexpected error before frame selection: {e!r}"
        out = dict(ST.frames_out)
        out.update({"stage": "resize", "error": str(e), "error_type": type(e).__name__})
    else:
        fo = ST.frames_out
        assert len(ST.resize_calls) == 1
        rh, rw = ST.resize_calls[0]
        assert tuple(video.shape) == (fo["nframes"], 3, rh, rw), (video.shape, fo, rh, rw)
        assert video.dtype == torch.float32
        assert sample_fps == fo["sample_fps"] and metadata["frames_indices"] == fo["indices"]
        out = dict(fo)
        out.update({"resized_height": rh, "resized_width": rw, "zero_size": rh == 0 or rw == 0})
    warns = [m for (_, m) in LOG.records[n_logs:]]
    if warns:
        case["_warnings"] = warns
    case["output"] = out
    return case


def make_plan_goldens():
    vp.transforms.functional.resize = _resize_stub
    try:
        cases = [run_plan_case(c) for c in plan_cases()]
    finally:
        vp.transforms.functional.resize = _REAL_RESIZE
    warn_kinds = {}
    for c in cases:
        for m in c.pop("_warnings", []):
            k = m.split("[")[0].split(":")[0].strip()
            warn_kinds[k] = warn_kinds.get(k, 0) + 1
    doc = {
        "description": (
            "Qwen2.5-VL sampling-plan goldens computed by running qwen-vl-utils 0.0.14 "
            "(calculate_video_frame_range, smart_nframes, float32 torch.linspace(...).round() as in "
            "_read_video_torchcodec; fetch_video with image_patch_size=14 for the resize geometry). "
            "output.stage is 'frames' or 'resize' when the reference raised there; frame outputs are "
            "kept for resize-stage errors. zero_size: smart_resize returned a 0 side (the real "
            "torchvision resize would then fail; reel must raise)."
        ),
        "generator": "tests/golden/make_preprocess_golden.py",
        "seed": SEED,
        "versions": versions(),
        "constants": {
            "MODEL_SEQ_LEN": vp.MODEL_SEQ_LEN,
            "image_patch_size": IMAGE_PATCH_SIZE,
            "FRAME_FACTOR": vp.FRAME_FACTOR,
            "FPS": vp.FPS,
            "FPS_MIN_FRAMES": vp.FPS_MIN_FRAMES,
            "FPS_MAX_FRAMES": vp.FPS_MAX_FRAMES,
            "VIDEO_MIN_TOKEN_NUM": vp.VIDEO_MIN_TOKEN_NUM,
            "VIDEO_MAX_TOKEN_NUM": vp.VIDEO_MAX_TOKEN_NUM,
            "IMAGE_MIN_TOKEN_NUM": vp.IMAGE_MIN_TOKEN_NUM,
            "IMAGE_MAX_TOKEN_NUM": vp.IMAGE_MAX_TOKEN_NUM,
            "MAX_RATIO": vp.MAX_RATIO,
        },
        "cases": cases,
    }
    # Compact, one case per line (diff-friendly).
    head = {k: v for k, v in doc.items() if k != "cases"}
    lines = [json.dumps(head, separators=(",", ":"), allow_nan=False)[:-1] + ',"cases":[']
    lines.append(",\n".join(json.dumps(c, separators=(",", ":"), allow_nan=False) for c in cases))
    lines.append("]}\n")
    text = "\n".join(lines)
    json.loads(text)  # sanity
    PLAN_PATH.write_text(text)
    return cases, warn_kinds


# --------------------------------------------------------------------------
# B. Pixel goldens
# --------------------------------------------------------------------------
PROC_CFG = dict(
    min_pixels=3136,
    max_pixels=12845056,
    patch_size=14,
    temporal_patch_size=2,
    merge_size=2,
    image_mean=[0.48145466, 0.4578275, 0.40821073],
    image_std=[0.26862954, 0.26130258, 0.27577711],
    do_resize=True,
    do_rescale=True,
    rescale_factor=1 / 255,
    do_normalize=True,
    do_sample_frames=False,
)

SOURCES = {
    "src0": ("h264_main_bframes.mp4", [0, 45, 89]),
    "src1": ("h264_odd_size.mp4", [0, 29]),
}

PIXEL_CASES = [
    # name, source, frame indices into the source tensor, ele, store full pixel_values
    ("case0", "src0", [0, 1], {"min_pixels": 3136, "max_pixels": F * F * 20}, True),
    ("case1", "src0", [0, 1], {}, False),
    ("case2", "src0", [0, 1, 2], {"min_pixels": 3136, "max_pixels": F * F * 24}, True),
    ("case3", "src1", [0, 1], {"min_pixels": 3136, "max_pixels": F * F * 12}, False),
    ("case4", "src1", [0, 1], {"resized_height": 120, "resized_width": 200}, False),
    ("case5", "src0", [1, 2], {"min_pixels": 3136, "max_pixels": F * F * 40}, False),
]


def decode_frames(path, wanted):
    got, pts = {}, {}
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")
                pts[i] = frame.pts
    missing = [i for i in wanted if i not in got]
    assert not missing, f"{path}: frames {missing} not decoded"
    return np.stack([got[i] for i in wanted]), [pts[i] for i in wanted]


_ST_DTYPES = {np.dtype("uint8"): "U8", np.dtype("<i8"): "I64", np.dtype("<f4"): "F32"}


def save_safetensors(tensors, path, metadata):
    """safetensors writer with a deterministic header (sorted keys).

    safetensors.numpy.save_file stores __metadata__ through a Rust HashMap, so
    its key order (and the file's bytes) changes from run to run. The format is
    simple enough to write directly; verify() reads the result back with the
    real safetensors loader."""
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, offset = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        dtype = _ST_DTYPES[a.dtype]
        data = a.tobytes()
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=True).encode()
    h += b" " * (-len(h) % 8)
    Path(path).unlink(missing_ok=True)  # fresh file, default permissions
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for b in blobs:
            f.write(b)


def sha256_f32(t):
    a = np.ascontiguousarray(t.detach().cpu().numpy().astype("<f4", copy=False))
    return hashlib.sha256(a.tobytes()).hexdigest()


def make_pixel_goldens():
    tensors, sources_meta, case_meta, report = {}, {}, [], []
    src = {}
    for key, (fname, idx) in SOURCES.items():
        arr, pts = decode_frames(VIDEO_DIR / fname, idx)
        src[key] = arr
        tensors[key] = arr
        sources_meta[key] = {
            "file": f"tests/data/video/{fname}",
            "decoded_frame_indices": idx,
            "pts": pts,
            "shape": list(arr.shape),
            "conversion": "PyAV frame.to_ndarray(format='rgb24'), frames in decoder output order",
        }

    processor = Qwen2VLVideoProcessor(**PROC_CFG)
    assert vp.transforms.functional.resize is _REAL_RESIZE
    for name, key, frames, ele, store_pv in PIXEL_CASES:
        thwc = src[key][frames]
        video_in = torch.from_numpy(np.ascontiguousarray(thwc)).permute(0, 3, 1, 2).contiguous()  # uint8 TCHW
        ST.reset("pixels", video=video_in, video_fps=30.0)
        video, _, _ = fetch_video(ele)
        assert video.dtype == torch.float32 and video.dim() == 4 and video.shape[:2] == (len(frames), 3)
        assert torch.equal(video, video.round()) and video.min() >= 0 and video.max() <= 255, f"{name}: not integral"
        _, _, rh, rw = video.shape

        n_logs = len(LOG.records)
        out = processor(videos=[video], return_tensors="pt")
        hf_warnings = [m for (_, m) in LOG.records[n_logs:]]
        pv = out["pixel_values_videos"]
        grid = out["video_grid_thw"]
        assert pv.dtype == torch.float32 and grid.shape == (1, 3)
        grid = grid[0].to(torch.int64)
        expected = [math.ceil(len(frames) / 2), rh // 14, rw // 14]
        resized_by_hf = grid.tolist() != expected or rh % 28 or rw % 28
        if resized_by_hf:
            print(f"WARNING: {name}: HF processor changed the size: grid {grid.tolist()} != {expected}", file=sys.stderr)
        assert pv.shape == (int(grid.prod()), 1176), pv.shape

        resized_u8 = video.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()  # T,H,W,C
        # Large resized frames are checked through resized_sha256 only (keeps tests/data small).
        if resized_u8.nbytes <= 300_000:
            tensors[f"{name}.resized"] = resized_u8
        tensors[f"{name}.grid_thw"] = grid.numpy()
        if store_pv:
            tensors[f"{name}.pixel_values"] = np.ascontiguousarray(pv.numpy().astype("<f4"))
        case_meta.append(
            {
                "name": name,
                "source": key,
                "frames": frames,
                "ele": ele,
                "resized_height": int(rh),
                "resized_width": int(rw),
                "grid_thw": grid.tolist(),
                "pixel_values_sha256": sha256_f32(pv),
                "pixel_values_shape": list(pv.shape),
                "pixel_values_stored": store_pv,
                "resized_sha256": hashlib.sha256(resized_u8.tobytes()).hexdigest(),
            }
        )
        report.append((name, key, frames, ele, (int(rh), int(rw)), grid.tolist(), bool(resized_by_hf), hf_warnings))

    metadata = {
        "cases": json.dumps(case_meta, separators=(",", ":")),
        "sources": json.dumps(sources_meta, separators=(",", ":")),
        "processor_config": json.dumps(PROC_CFG, separators=(",", ":")),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "transformers": transformers.__version__,
        "qwen_vl_utils": importlib.metadata.version("qwen-vl-utils"),
        "av": av.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_num_threads": str(torch.get_num_threads()),
        "generator": "tests/golden/make_preprocess_golden.py",
    }
    save_safetensors(tensors, PIXEL_PATH, metadata)
    return report


def verify():
    loaded = load_file(str(PIXEL_PATH))
    from safetensors import safe_open

    with safe_open(str(PIXEL_PATH), framework="numpy") as f:
        meta = f.metadata()
    cases = json.loads(meta["cases"])
    for c in cases:
        n = c["name"]
        if f"{n}.resized" in loaded:
            r = loaded[f"{n}.resized"]
            assert r.dtype == np.uint8 and r.shape == (len(c["frames"]), c["resized_height"], c["resized_width"], 3)
            assert hashlib.sha256(r.tobytes()).hexdigest() == c["resized_sha256"]
        assert loaded[f"{n}.grid_thw"].dtype == np.int64 and loaded[f"{n}.grid_thw"].tolist() == c["grid_thw"]
        if c["pixel_values_stored"]:
            pv = loaded[f"{n}.pixel_values"]
            assert pv.dtype == np.float32 and list(pv.shape) == c["pixel_values_shape"]
            assert hashlib.sha256(pv.astype("<f4").tobytes()).hexdigest() == c["pixel_values_sha256"]
    plan = json.loads(PLAN_PATH.read_text())
    return loaded, meta, plan


def main():
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    print("versions:", json.dumps(versions()))
    cases, warn_kinds = make_plan_goldens()
    errors = {}
    zero = 0
    for c in cases:
        o = c["output"]
        if "error" in o:
            k = (o["stage"], o["error_type"], o["error"].split(",")[0].split(":")[0][:60])
            errors[k] = errors.get(k, 0) + 1
        elif o["zero_size"]:
            zero += 1
    print(f"plan cases: {len(cases)}, errors: {sum(errors.values())}, zero_size: {zero}")
    for k, v in sorted(errors.items()):
        print(f"  {v:4d} x {k}")
    print("qwen-vl-utils warnings during plan cases:", warn_kinds)

    report = make_pixel_goldens()
    for name, key, frames, ele, rs, grid, changed, w in report:
        print(f"{name}: {key}{frames} ele={ele} -> resized {rs[0]}x{rs[1]} grid {grid}"
              f"{' (HF RE-RESIZED!)' if changed else ''}")
        for m in w:
            print(f"    HF warning: {m[:160]}")
    verify()
    for p in (PLAN_PATH, PIXEL_PATH):
        print(f"{p.relative_to(REPO)}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
