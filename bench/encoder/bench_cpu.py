#!/usr/bin/env python3
"""reel-encoder CPU throughput vs HF transformers on CPU, same weights, same threads.

For each config: make (or reuse) a model folder under bench/work/, time HF transformers'
``Qwen2_5_VisionTransformerPretrainedModel`` (sdpa, ``torch.set_num_threads(T)``) on
seeded ``pixel_values``, then reel's ``bench_cpu`` example (``RAYON_NUM_THREADS=T``) on
the same folder and inputs; check that both give the same embeddings; report patches/s.

Usage (from the repository root; torch 2.11 CPU, transformers 5.17):

    python bench/encoder/bench_cpu.py [--threads 2] [--configs tiny-f32,mid-f32,...] [--iters 3]

Writes bench/results/encoder_cpu_<date>.json.
"""

import argparse
import copy
import datetime
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import Qwen2_5_VLConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import (
    Qwen2_5_VisionTransformerPretrainedModel,
)

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "golden" / "encoder"))
from make_encoder_golden import pixel_values  # noqa: E402  (the goldens' seeded inputs)
WORK = REPO / "bench" / "work" / "encoder"
BIN = REPO / "target" / "release" / "examples" / "bench_cpu"

# A moderately larger tower (~97M parameters): half the 7B tower's width and depth.
MID_VISION = {
    "depth": 16,
    "hidden_size": 640,
    "num_heads": 8,
    "intermediate_size": 1712,
    "out_hidden_size": 1536,
    "fullatt_block_indexes": [3, 7, 11, 15],
    "window_size": 112,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "spatial_merge_size": 2,
    "in_chans": 3,
    "hidden_act": "silu",
    "tokens_per_second": 2,
}

# name -> (model, dtype, grids, warmup, iters)
CONFIGS = {
    "tiny-f32": ("tiny", "f32", [[4, 28, 28]], 1, 5),
    "tiny-bf16": ("tiny", "bf16", [[4, 28, 28]], 1, 5),
    "mid-f32": ("mid", "f32", [[2, 28, 28]], 1, 3),
    "mid-bf16": ("mid", "bf16", [[2, 28, 28]], 0, 1),
    "7b-f32": ("qwen2.5-vl-7b", "f32", [[2, 16, 16]], 1, 2),
    "7b-batch-f32": ("qwen2.5-vl-7b", "f32", [[2, 16, 16], [1, 12, 20]], 0, 1),
    "3b-f32": ("qwen2.5-vl-3b", "f32", [[2, 16, 16]], 1, 2),
    "7b-bf16": ("qwen2.5-vl-7b", "bf16", [[2, 16, 16]], 0, 1),
}
DEFAULT = "tiny-f32,tiny-bf16,mid-f32,mid-bf16,7b-f32,7b-bf16"
TORCH_DTYPE = {"f32": torch.float32, "bf16": torch.bfloat16}
def model_dir(model: str, threads: int) -> Path:
    d = WORK / model
    if (d / "model.safetensors").is_file():
        return d
    d.mkdir(parents=True, exist_ok=True)
    if model == "mid":
        # Written by transformers itself (HF init, HF-saved config.json).
        cfg = Qwen2_5_VLConfig(
            vision_config=copy.deepcopy(MID_VISION), hidden_size=MID_VISION["out_hidden_size"],
            num_hidden_layers=1, num_attention_heads=12, num_key_value_heads=2, intermediate_size=256,
        )
        torch.manual_seed(0)
        tower = Qwen2_5_VisionTransformerPretrainedModel._from_config(cfg.vision_config)
        state = {f"visual.{k}": v.to(torch.bfloat16).contiguous() for k, v in tower.state_dict().items()}
        save_file(state, d / "model.safetensors", metadata={"format": "pt"})
        cfg.save_pretrained(d)
    else:
        out = subprocess.run(
            [str(BIN), "--write-random", str(d), "--arch", model, "--seed", "0", "--dtype", "bf16",
             "--threads", str(threads)],
            check=True, capture_output=True, text=True,
        )
        print("  " + out.stdout.strip())
    return d


def hf_tower(d: Path, dtype: torch.dtype):
    cfg = Qwen2_5_VLConfig.from_pretrained(d)
    tower = Qwen2_5_VisionTransformerPretrainedModel._from_config(
        cfg.vision_config, attn_implementation="sdpa", dtype=dtype
    ).eval()
    sd = load_file(d / "model.safetensors")
    state = {k.removeprefix("visual."): v.to(dtype) for k, v in sd.items() if k.startswith("visual.")}
    tower.load_state_dict(state, strict=True)
    # As with from_pretrained(dtype=...): the rotary inv_freq buffer stays float32.
    assert tower.rotary_pos_emb.inv_freq.dtype == torch.float32
    return tower


def time_hf(tower, dtype, grids, warmup, iters, pv):
    x = torch.from_numpy(pv).to(TORCH_DTYPE[dtype])
    g = torch.tensor(grids, dtype=torch.int64)
    times = []
    with torch.no_grad():
        for i in range(warmup + iters):
            t = time.perf_counter()
            out = tower(x, grid_thw=g).pooler_output
            if i >= warmup:
                times.append(time.perf_counter() - t)
    return times, out.float().numpy()


def run_reel(d, dtype, grids, warmup, iters, threads):
    out_path = WORK / "reel_out.f32"
    grid_arg = ";".join(",".join(map(str, g)) for g in grids)
    cmd = [str(BIN), "--model", str(d), "--dtype", dtype, "--grids", grid_arg, "--threads", str(threads),
           "--warmup", str(warmup), "--iters", str(iters), "--out", str(out_path)]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    r = json.loads(res.stdout.strip().splitlines()[-1])
    return r, np.fromfile(out_path, dtype="<f4")


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--configs", default=DEFAULT, help=f"comma list of {', '.join(CONFIGS)}")
    ap.add_argument("--rounds", type=int, default=2, help="HF/reel alternations per config")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--merge", action="store_true",
                    help="keep the other configs of an existing --out file (same commit only)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    subprocess.run(["cargo", "build", "--release", "-p", "reel-encoder", "--example", "bench_cpu"], cwd=REPO,
                   check=True)
    WORK.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.configs.split(","):
        model, dtype, grids, warmup, iters = CONFIGS[name]
        d = model_dir(model, args.threads)
        patches = sum(t * h * w for t, h, w in grids)
        pv = pixel_values(7, patches)
        print(f"{name}: model {model}, {dtype}, grids {grids} ({patches} patches), {args.threads} threads",
              flush=True)
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        tower = hf_tower(d, TORCH_DTYPE[dtype])
        hf_load = time.perf_counter() - t0
        # HF and reel alternate for `rounds` rounds (other processes on a shared machine
        # come and go); the best time of each is reported, medians kept too.
        hf_times, reel_times, reel_load = [], [], None
        for rnd in range(args.rounds):
            ts, hf_out = time_hf(tower, dtype, grids, warmup if rnd == 0 else 0, iters, pv)
            hf_times += ts
            r, reel_out = run_reel(d, dtype, grids, warmup, iters, args.threads)
            reel_times += r["times_s"]
            reel_load = r["load_s"]
        del tower
        gc.collect()
        hf_best, reel_best = min(hf_times), min(reel_times)
        hf_pps, reel_pps = patches / hf_best, patches / reel_best
        diff = float(np.abs(reel_out - hf_out.reshape(-1)).max() / np.abs(hf_out).max())
        row = {
            "name": name, "model": model, "params": sum(
                v.numel() for v in load_file(d / "model.safetensors").values()),
            "dtype": dtype, "grids": grids, "patches": patches, "threads": args.threads,
            "warmup": warmup, "iters_per_round": iters, "rounds": args.rounds,
            "loadavg_1min_before": load0, "loadavg_1min_after": os.getloadavg()[0],
            "hf": {"best_s": hf_best, "median_s": float(np.median(hf_times)), "times_s": hf_times,
                   "patches_per_s": hf_pps, "load_s": hf_load},
            "reel": {"best_s": reel_best, "median_s": float(np.median(reel_times)), "times_s": reel_times,
                     "patches_per_s": reel_pps, "load_s": reel_load},
            "speedup": reel_pps / hf_pps,
            "speedup_median": float(np.median(hf_times)) / float(np.median(reel_times)),
            "max_rel_diff_vs_hf": diff,
        }
        results.append(row)
        print(f"  HF {hf_pps:9.1f} patches/s ({hf_best:.3f} s)  reel {reel_pps:9.1f} patches/s "
              f"({reel_best:.3f} s)  x{reel_pps / hf_pps:.2f} (medians x{row['speedup_median']:.2f})  "
              f"max rel diff {diff:.2e}  load {load0:.1f}", flush=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    doc = {
        "commit": commit,
        "date": datetime.date.today().isoformat(),
        "device": f"cpu: {cpu_name()}, {os.cpu_count()} cores",
        "command": "python bench/encoder/bench_cpu.py " + " ".join(sys.argv[1:]),
        "reference": f"transformers {transformers.__version__} Qwen2_5_VisionTransformerPretrainedModel "
                     f"(sdpa), torch {torch.__version__}",
        "metric": "patches/s = sum(t*h*w) / best wall time of one encode (batch of the listed grids), "
                  "HF and reel alternating; medians also recorded. The machine may be shared: see loadavg.",
        "configs": results,
    }
    out = args.out or REPO / "bench" / "results" / f"encoder_cpu_{doc['date']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.merge and out.is_file():
        old = json.loads(out.read_text())
        if old.get("commit") == commit:
            names = {r["name"] for r in results}
            kept = [r for r in old["configs"] if r["name"] not in names]
            doc["configs"] = kept + results
            cmds = old["command"] if isinstance(old["command"], list) else [old["command"]]
            doc["command"] = cmds + [doc["command"]]
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
