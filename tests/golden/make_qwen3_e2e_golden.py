#!/usr/bin/env python3
"""End-to-end Qwen3-VL goldens "from the file": what HF transformers makes of a committed
video with the tiny Qwen3-VL and Qwen3.5 towers, for `reel embed` to match.

Everything is produced by RUNNING the reference code, the way a user of HF would:

* the clip is decoded with PyAV (``frame.to_ndarray(format="rgb24")``, every frame in
  display order: the reader HF's ``load_video`` uses), as make_qwen3_preprocess_golden.py
  does;
* ``Qwen3VLVideoProcessor.from_pretrained(<model folder>)`` (the folder's
  video_preprocessor_config.json: fps 2, min_frames 4, size 4096..25165824, patch 16,
  merge 2) samples, resizes, normalizes and patchifies it, given
  ``video_metadata={"fps": stream.average_rate, "total_num_frames": len(frames)}``;
* the per-temporal-patch timestamps are ``Qwen3VLProcessor._calculate_timestamps`` on the
  processor's returned metadata, called as ``Qwen3VLProcessor.replace_video_token`` calls
  it (``frames_indices``, ``fps``, ``temporal_patch_size``);
* the vision tower is the full model loaded from the committed folder with
  ``from_pretrained(dtype=float32, attn_implementation="sdpa")``
  (make_qwen3_vl_golden.load_tower), run on the float32 pixel values; the output is packed
  as vLLM takes it, [pooler_output | deepstack_features[0] | ...] on the last axis.

Output: tests/data/golden/qwen3_e2e.safetensors, per clip ``<clip>.video_grid_thw`` (i64
[3]), ``<clip>.frame_indices`` (i64), ``<clip>.grid_timestamps`` (f64, one per temporal
patch) and per tower ``<clip>.<tower>.f32`` (f32 [tokens, width]); one ``golden`` metadata
key (JSON: versions, clip SHA-256, processor config, per-clip details). tests/qwen3_cli.rs
checks `reel embed --dtype f32 --device cpu` against it.

Usage (from the repository root; torch 2.11 CPU, transformers 5.17, PyAV 18.1):

    python tests/golden/make_qwen3_e2e_golden.py

Deterministic: single-threaded torch, sorted safetensors header.
"""

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "encoder"))
import make_preprocess_golden as g  # noqa: E402  (versions, deterministic safetensors writer)
import make_qwen3_preprocess_golden as q  # noqa: E402  (PyAV reader)
import make_qwen3_vl_golden as tw  # noqa: E402  (tower folders, loader, packing)

from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor  # noqa: E402
from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor  # noqa: E402

REPO = g.REPO
OUT = g.OUT_DIR / "qwen3_e2e.safetensors"

# Small grids (the file stays under 300 KB): H.264 Main with B-frames and an edit list,
# 90 frames at 30 fps -> 6 sampled frames, 3 temporal patches; and AV1, 160x120, 30
# frames -> 4 frames, 2 temporal patches. (hevc_main.mp4 [2, 16, 20] with h264_main_bframes
# [3, 16, 20] would take ~410 KB with both towers.)
CLIPS = ["h264_main_bframes.mp4", "av1.mp4"]
ATTN = "sdpa"

# Timestamps are float64: teach the shared writer that dtype (it knows U8/I64/F32).
g._ST_DTYPES.setdefault(np.dtype("<f8"), "F64")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hf_inputs(proc: Qwen3VLVideoProcessor, frames, fps: float):
    out = proc(videos=[np.stack(frames)], video_metadata=[{"fps": fps, "total_num_frames": len(frames)}],
               return_tensors="pt", return_metadata=True)
    meta = out["video_metadata"][0]
    indices = [int(i) for i in meta.frames_indices]
    # As Qwen3VLProcessor.replace_video_token calls it (it extends the list it is given).
    stamps = Qwen3VLProcessor._calculate_timestamps(None, list(indices), meta.fps, proc.temporal_patch_size)
    return out["pixel_values_videos"], out["video_grid_thw"], indices, [float(s) for s in stamps], meta.fps


def main() -> None:
    torch.set_num_threads(1)
    towers = {key: tw.load_tower(spec, torch.float32, ATTN) for key, spec in tw.TOWERS.items()}
    procs = {key: Qwen3VLVideoProcessor.from_pretrained(spec["dir"]) for key, spec in tw.TOWERS.items()}
    configs = {key: json.loads((spec["dir"] / "video_preprocessor_config.json").read_text())
               for key, spec in tw.TOWERS.items()}
    assert all(c == configs["qwen3_vl"] for c in configs.values()), "the folders' processor configs differ"

    tensors, clips = {}, {}
    for name in CLIPS:
        path = q.VIDEO_DIR / name
        frames, fps, stream_frames = q.read_pyav(path)
        h, w, _ = frames[0].shape
        entry = {"sha256": file_sha256(path), "size": [h, w], "fps": fps, "frames_total": len(frames),
                 "stream_frames": stream_frames, "towers": {}}
        first = None
        for key, tower in towers.items():
            pv, grid, indices, stamps, meta_fps = hf_inputs(procs[key], frames, fps)
            if first is None:
                first = (g.sha256_f32(pv), grid.tolist(), indices, stamps)
                entry.update({"video_grid_thw": grid[0].tolist(), "frame_indices": indices,
                              "grid_timestamps": stamps, "metadata_fps": meta_fps,
                              "pixel_values_shape": list(pv.shape), "pixel_values_sha256": first[0]})
                tensors[f"{name}.video_grid_thw"] = grid[0].numpy().astype("<i8")
                tensors[f"{name}.frame_indices"] = np.array(indices, dtype="<i8")
                tensors[f"{name}.grid_timestamps"] = np.array(stamps, dtype="<f8")
            assert (g.sha256_f32(pv), grid.tolist(), indices, stamps) == first, (name, key)
            assert pv.dtype == torch.float32
            emb = tw.run(tower, pv.numpy(), grid.tolist())
            vcfg = tower.config
            n_ds = len(getattr(vcfg, "deepstack_visual_indexes", None) or [])
            t, gh, gw = grid[0].tolist()
            assert emb.shape == (t * gh * gw // 4, vcfg.out_hidden_size * (1 + n_ds)), emb.shape
            tensors[f"{name}.{key}.f32"] = np.ascontiguousarray(emb, dtype="<f4")
            entry["towers"][key] = {"model_dir": str(tw.TOWERS[key]["dir"].relative_to(REPO)),
                                    "shape": list(emb.shape), "max_abs": float(np.abs(emb).max()),
                                    "deepstack": n_ds}
            print(f"{name} {key}: {len(indices)} frames {indices}, grid {grid[0].tolist()}, "
                  f"timestamps {stamps}, embeddings {list(emb.shape)} max|x| {np.abs(emb).max():.3f}")
        clips[name] = entry

    meta = {
        "generator": "tests/golden/make_qwen3_e2e_golden.py",
        "versions": g.versions(),
        "attn_implementation": ATTN,
        "reader": "PyAV frame.to_ndarray(format='rgb24'), all frames, display order; "
                  "video_metadata fps = float(stream.average_rate), total_num_frames = decoded frames",
        "processor": "Qwen3VLVideoProcessor.from_pretrained(model folder), return_metadata=True",
        "processor_config": configs["qwen3_vl"],
        "timestamps": "Qwen3VLProcessor._calculate_timestamps(frames_indices, metadata.fps, temporal_patch_size)",
        "layout": "<clip>.<tower>.f32: float32 [tokens, out_hidden*(1+n_deepstack)] = "
                  "[pooler_output | deepstack_features[0] | ...]; model from_pretrained(dtype=float32)",
        "clips": clips,
    }
    g.save_safetensors(tensors, OUT, {"golden": json.dumps(meta, sort_keys=True)})
    from safetensors.numpy import load_file
    back = load_file(OUT)
    assert set(back) == set(tensors) and all(np.array_equal(back[k], v) for k, v in tensors.items())
    print(f"{OUT.relative_to(REPO)}: {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
