#!/usr/bin/env python3
"""reel-encoder CPU throughput vs HF transformers on CPU, same weights, same threads.

For each config: make (or reuse) a model folder under bench/work/, time HF transformers'
vision tower (sdpa, ``torch.set_num_threads(T)``) on seeded ``pixel_values``, then reel's
``bench_cpu`` example (``RAYON_NUM_THREADS=T``) on the same folder and inputs; check that
both give the same embeddings; report patches/s.

The tower family comes from the folder's config.json (``model_type``, see ``FAMILIES``):
Qwen2.5-VL (``Qwen2_5_VisionTransformerPretrainedModel``, weights under ``visual.``) or the
Qwen3-VL family (``Qwen3VLVisionModel`` and its Qwen3-VL-MoE / Qwen3.5 / Qwen3.5-MoE /
qwen4_exp twins, weights under ``model.visual.``). Qwen3-VL outputs are compared packed as
vLLM takes them, [pooler_output | deepstack_features[0] | ...] on the last axis.

Usage (from the repository root; torch 2.11 CPU, transformers 5.17):

    python bench/encoder/bench_cpu.py [--threads 2] [--configs tiny-f32,mid-f32,...] [--iters 3]
    python bench/encoder/bench_cpu.py --check-golden   # this loader vs the committed goldens

Writes bench/results/encoder_cpu_<date>.json.
"""

import argparse
import copy
import datetime
import gc
import importlib
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
from transformers import AutoConfig, Qwen2_5_VLConfig
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
    # Qwen3-VL family: the committed tiny towers, and reel's random 8B tower.
    "tiny-qwen3-vl-f32": ("tiny-qwen3-vl", "f32", [[4, 32, 32]], 1, 5),
    "tiny-qwen3-vl-bf16": ("tiny-qwen3-vl", "bf16", [[4, 32, 32]], 1, 5),
    "tiny-qwen3.5-f32": ("tiny-qwen3.5", "f32", [[4, 32, 32]], 1, 5),
    "qwen3-vl-8b-f32": ("qwen3-vl-8b", "f32", [[2, 16, 16]], 1, 2),
    "qwen3-vl-8b-bf16": ("qwen3-vl-8b", "bf16", [[2, 16, 16]], 0, 1),
}
# Model folders committed in the repository (not written by reel).
COMMITTED = {"tiny-qwen3-vl": REPO / "tests" / "data" / "tiny-qwen3-vl",
             "tiny-qwen3.5": REPO / "tests" / "data" / "tiny-qwen3.5"}
DEFAULT = "tiny-f32,tiny-bf16,mid-f32,mid-bf16,7b-f32,7b-bf16"
TORCH_DTYPE = {"f32": torch.float32, "bf16": torch.bfloat16}
def model_dir(model: str, threads: int) -> Path:
    if model in COMMITTED:
        return COMMITTED[model]
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


# config.json model_type -> (modeling module, vision tower class, checkpoint key prefix)
FAMILIES = {
    "qwen2_5_vl": ("qwen2_5_vl", "Qwen2_5_VisionTransformerPretrainedModel", "visual."),
    "qwen3_vl": ("qwen3_vl", "Qwen3VLVisionModel", "model.visual."),
    "qwen3_vl_moe": ("qwen3_vl_moe", "Qwen3VLMoeVisionModel", "model.visual."),
    "qwen3_5": ("qwen3_5", "Qwen3_5VisionModel", "model.visual."),
    "qwen3_5_moe": ("qwen3_5_moe", "Qwen3_5MoeVisionModel", "model.visual."),
    "qwen4_exp": ("qwen4_exp", "Qwen4ExpVisionModel", "model.visual."),
}


def model_type(d: Path) -> str:
    return json.loads((Path(d) / "config.json").read_text())["model_type"]


def tower_class(d: Path):
    module, cls, _ = FAMILIES[model_type(d)]
    return getattr(importlib.import_module(f"transformers.models.{module}.modeling_{module}"), cls)


def vision_config(d: Path):
    """The folder's vision config, parsed by transformers (AutoConfig: the top-level class of
    the model_type, e.g. Qwen3VLConfig, which also rewrites the legacy vision model_type)."""
    if model_type(d) == "qwen2_5_vl":
        return Qwen2_5_VLConfig.from_pretrained(d).vision_config
    return AutoConfig.from_pretrained(d).vision_config


def patch_dim(vcfg) -> int:
    """Columns of pixel_values: in_channels * temporal_patch_size * patch_size^2
    (1176 for Qwen2.5-VL's patch 14, 1536 for Qwen3-VL's patch 16)."""
    chans = getattr(vcfg, "in_channels", None) or getattr(vcfg, "in_chans", 3)
    return chans * vcfg.temporal_patch_size * vcfg.patch_size**2


def n_deepstack(vcfg) -> int:
    """Deepstack features the tower returns: none for Qwen2.5-VL and the Qwen3.5 family
    (whose 5.17 vision config has no deepstack_visual_indexes even when config.json lists [])."""
    return len(getattr(vcfg, "deepstack_visual_indexes", None) or [])


def load_weights(d: Path) -> dict:
    """All tensors of the folder: model.safetensors, or the shards of model.safetensors.index.json."""
    d = Path(d)
    index = d / "model.safetensors.index.json"
    if index.is_file() and not (d / "model.safetensors").is_file():
        sd = {}
        for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
            sd.update(load_file(d / shard))
        return sd
    return load_file(d / "model.safetensors")


def hf_tower(d: Path, dtype: torch.dtype, attn: str = "sdpa"):
    cls = tower_class(d)
    prefix = FAMILIES[model_type(d)][2]
    vcfg = vision_config(d)
    tower = cls._from_config(vcfg, attn_implementation=attn, dtype=dtype).eval()
    sd = load_weights(d)
    state = {k.removeprefix(prefix): v.to(dtype) for k, v in sd.items() if k.startswith(prefix)}
    tower.load_state_dict(state, strict=True)
    # As with from_pretrained(dtype=...): the rotary inv_freq buffer stays float32.
    assert tower.rotary_pos_emb.inv_freq.dtype == torch.float32
    return tower


def packed(out) -> torch.Tensor:
    """The tower's embeddings as reel saves them and vLLM takes them: pooler_output, then each
    deepstack feature in list order, along the last axis (just pooler_output without deepstack)."""
    parts = [out.pooler_output] + list(getattr(out, "deepstack_features", None) or [])
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def parts_parity(a: np.ndarray, ref: np.ndarray, out_hidden: int) -> dict:
    """max|a - ref| / max|ref| of the main embeddings and of each deepstack feature, both
    [tokens, out_hidden*(1+n)] packed. If `a` holds only the main embeddings (width
    out_hidden), only "main" is compared."""
    a = a.reshape(ref.shape[0], -1)
    n = ref.shape[1] // out_hidden
    rel = lambda x, r: float(np.abs(x - r).max() / np.abs(r).max())  # noqa: E731
    res = {"main": rel(a[:, :out_hidden], ref[:, :out_hidden]), "deepstack": None}
    if a.shape[1] == ref.shape[1]:
        res["deepstack"] = [rel(a[:, k * out_hidden:(k + 1) * out_hidden], ref[:, k * out_hidden:(k + 1) * out_hidden])
                            for k in range(1, n)]
    else:
        res["note"] = f"reel width {a.shape[1]} != HF packed width {ref.shape[1]}: main only"
    return res


def time_hf(tower, dtype, grids, warmup, iters, pv):
    x = torch.from_numpy(pv).to(TORCH_DTYPE[dtype])
    g = torch.tensor(grids, dtype=torch.int64)
    times = []
    with torch.no_grad():
        for i in range(warmup + iters):
            t = time.perf_counter()
            out = tower(x, grid_thw=g)
            if i >= warmup:
                times.append(time.perf_counter() - t)
    return times, packed(out).float().numpy()


def check_golden() -> None:
    """This loader (hf_tower: _from_config + load_state_dict) on the committed tiny Qwen3-VL
    and Qwen3.5 folders reproduces tests/data/golden/qwen3_vl_encoder.safetensors (made with
    from_pretrained of the full model), in float32 and bfloat16, on one thread."""
    from safetensors import safe_open

    path = REPO / "tests" / "data" / "golden" / "qwen3_vl_encoder.safetensors"
    with safe_open(path, "np") as f:
        meta = json.loads(f.metadata()["golden"])
        gold = {k: f.get_tensor(k) for k in f.keys()}
    torch.set_num_threads(1)
    worst = 0.0
    for key, info in meta["towers"].items():
        d = REPO / info["model_dir"]
        vcfg = vision_config(d)
        assert tower_class(d).__name__ == info["tower_class"], (tower_class(d), info["tower_class"])
        for dtype, suffix in ((torch.float32, "f32"), (torch.bfloat16, "bf16")):
            tower = hf_tower(d, dtype)
            for case in meta["cases"]:
                pv = pixel_values(case["input_seed"], case["input_rows"], patch_dim(vcfg))
                _, out = time_hf(tower, suffix, case["grids"], 0, 1, pv)
                ref = gold[f"{key}.{case['name']}.{suffix}"]
                assert out.shape == ref.shape, (out.shape, ref.shape)
                p = parts_parity(out, ref, vcfg.out_hidden_size)
                err = max([p["main"]] + (p["deepstack"] or []))
                worst = max(worst, err)
                print(f"{key:9s} {suffix:4s} {case['name']:13s} {tuple(out.shape)}  main {p['main']:.1e}  "
                      f"deepstack {p['deepstack']}")
                assert err < 1e-6, (key, suffix, case["name"], p)
    print(f"OK: hf_tower reproduces the goldens (worst max|d|/max|ref| {worst:.1e})")


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
    ap.add_argument("--check-golden", action="store_true",
                    help="only check this script's HF loader against the committed Qwen3-VL goldens")
    args = ap.parse_args()
    if args.check_golden:
        check_golden()
        return
    torch.set_num_threads(args.threads)
    subprocess.run(["cargo", "build", "--release", "-p", "reel-encoder", "--example", "bench_cpu"], cwd=REPO,
                   check=True)
    WORK.mkdir(parents=True, exist_ok=True)
    results, classes = [], set()
    for name in args.configs.split(","):
        model, dtype, grids, warmup, iters = CONFIGS[name]
        d = model_dir(model, args.threads)
        vcfg = vision_config(d)
        classes.add(tower_class(d).__name__)
        patches = sum(t * h * w for t, h, w in grids)
        pv = pixel_values(7, patches, patch_dim(vcfg))
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
        qwen3 = model_type(d) != "qwen2_5_vl"
        parts = parts_parity(reel_out, hf_out, vcfg.out_hidden_size) if qwen3 else None
        if reel_out.size == hf_out.size:
            diff = float(np.abs(reel_out - hf_out.reshape(-1)).max() / np.abs(hf_out).max())
        else:  # reel saved the main embeddings only
            diff = parts["main"]
        row = {
            "name": name, "model": model, "params": sum(v.numel() for v in load_weights(d).values()),
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
        if qwen3:
            # Packed [main | ds0 | ...]: each part against its own max|HF|.
            row["model_type"] = model_type(d)
            row["max_rel_diff_parts"] = parts
        results.append(row)
        print(f"  HF {hf_pps:9.1f} patches/s ({hf_best:.3f} s)  reel {reel_pps:9.1f} patches/s "
              f"({reel_best:.3f} s)  x{reel_pps / hf_pps:.2f} (medians x{row['speedup_median']:.2f})  "
              f"max rel diff {diff:.2e}{f' (parts {parts})' if qwen3 else ''}  load {load0:.1f}", flush=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    doc = {
        "commit": commit,
        "date": datetime.date.today().isoformat(),
        "device": f"cpu: {cpu_name()}, {os.cpu_count()} cores",
        "command": "python bench/encoder/bench_cpu.py " + " ".join(sys.argv[1:]),
        "reference": f"transformers {transformers.__version__} {', '.join(sorted(classes))} "
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
