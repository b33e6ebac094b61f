#!/usr/bin/env python3
"""HF transformers' Qwen2.5-VL vision tower on the GPU: the peer of `reel bench encode`.

Runs ``Qwen2_5_VisionTransformerPretrainedModel`` (attn_implementation="sdpa", bf16) from
a model folder written by ``reel model init --random``, on the same seeded pixel values as
``reel bench encode`` (batch i uses seed 1000 + i), and times each batch. With
``--reel-out DIR`` (``reel bench encode --save DIR``) it also reports the parity of reel's
embeddings: max|reel - HF| / max|HF| per batch. Prints JSON: patches/s, peak memory per
patch, a torch bf16 matmul peak (TFLOP/s) measured in the same process.

    python3 bench/encoder/bench_gpu.py --model DIR [--batch 30x32x32 ...] [--reel-out DIR]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu import hf_tower, pixel_values  # noqa: E402

DEFAULT = ["30x32x32", "1x74x136", "150x16x16", "8*30x32x32"]


def parse_batch(spec: str):
    grids = []
    for item in spec.split("+"):
        n, _, g = item.rpartition("*")
        grids += [[int(v) for v in g.split("x")]] * (int(n) if n else 1)
    return grids


def matmul_peak(n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(5):
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(20):
            a @ b
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 * 20 / best / 1e12


def rel(a: np.ndarray, ref: np.ndarray) -> float:
    """max|a - ref| / max|ref|: the strictest element-wise measure."""
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def rel_l2(a: np.ndarray, ref: np.ndarray) -> float:
    """||a - ref|| / ||ref|| (Frobenius): the error relative to the signal."""
    d = (a.astype(np.float64) - ref).ravel()
    return float(np.linalg.norm(d) / np.linalg.norm(ref.astype(np.float64).ravel()))


def f32_check(args, rows) -> None:
    """Adds, per batch that reel saved in f32: reel f32 vs HF f32 (the implementation is
    exact up to f32 rounding), and the bf16 results of both against HF f32 (how far bf16
    itself moves the result on this model)."""
    from safetensors.numpy import load_file

    ref_tower = hf_tower(args.model, torch.float32).cuda()
    bf16_tower = hf_tower(args.model, torch.bfloat16).cuda()
    for i, row in enumerate(rows):
        path = args.reel_f32_out / f"batch{i}.safetensors"
        if not path.is_file():
            continue
        grids = parse_batch(row["batch"])
        pv = torch.from_numpy(pixel_values(1000 + i, row["patches"]))
        g = torch.tensor(grids, dtype=torch.int64, device="cuda")
        with torch.no_grad():
            ref = ref_tower(pv.cuda(), grid_thw=g).pooler_output.cpu().numpy()
            hf_bf16 = bf16_tower(pv.to("cuda", torch.bfloat16), grid_thw=g).pooler_output.float().cpu().numpy()
        reel_bf16 = load_file(args.reel_out / f"batch{i}.safetensors")["embeddings"]
        row["reel_f32_vs_hf_f32"] = rel(load_file(path)["embeddings"], ref)
        row["hf_bf16_vs_hf_f32"] = rel(hf_bf16, ref)
        row["reel_bf16_vs_hf_f32"] = rel(reel_bf16, ref)
        row["rel_l2"] = {"reel_f32_vs_hf_f32": rel_l2(load_file(path)["embeddings"], ref),
                         "hf_bf16_vs_hf_f32": rel_l2(hf_bf16, ref), "reel_bf16_vs_hf_f32": rel_l2(reel_bf16, ref),
                         "reel_bf16_vs_hf_bf16": rel_l2(reel_bf16, hf_bf16)}
        print(f"{row['batch']} vs HF f32: reel f32 {row['reel_f32_vs_hf_f32']:.2e}, reel bf16 "
              f"{row['reel_bf16_vs_hf_f32']:.2e}, HF bf16 {row['hf_bf16_vs_hf_f32']:.2e}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--batch", action="append", dest="batches")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--reel-out", type=Path)
    ap.add_argument("--reel-f32-out", type=Path,
                    help="reel's f32 embeddings (reel bench encode --dtype f32 --save DIR) of the first batches: "
                         "compared, with reel's and HF's bf16 results, against HF in f32")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False  # the patch embedding is a Conv3d
    peak = matmul_peak()
    print(f"torch bf16 matmul peak: {peak:.0f} TFLOP/s", file=sys.stderr)
    tower = hf_tower(args.model, torch.bfloat16).cuda()
    rows = []
    for i, spec in enumerate(args.batches or DEFAULT):
        grids = parse_batch(spec)
        patches = sum(t * h * w for t, h, w in grids)
        x = torch.from_numpy(pixel_values(1000 + i, patches)).to("cuda", torch.bfloat16)
        g = torch.tensor(grids, dtype=torch.int64, device="cuda")
        times = []
        with torch.no_grad():
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            out = tower(x, grid_thw=g).pooler_output
            torch.cuda.synchronize()
            peak_bytes = torch.cuda.max_memory_allocated() - base
            for _ in range(args.iterations):
                torch.cuda.synchronize()
                t = time.perf_counter()
                tower(x, grid_thw=g)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
        med = float(np.median(times))
        row = {
            "batch": spec, "patches": patches, "latency_s": {"median": med, "min": min(times), "runs": len(times)},
            "patches_per_s": patches / med, "peak_activation_bytes": peak_bytes,
            "activation_bytes_per_patch": peak_bytes / patches,
        }
        if args.reel_out:
            from safetensors.numpy import load_file
            reel = load_file(args.reel_out / f"batch{i}.safetensors")["embeddings"]
            ref = out.float().cpu().numpy()
            row["reel_max_rel_diff"] = float(np.abs(reel - ref).max() / np.abs(ref).max())
            row["reel_mean_abs_diff"] = float(np.abs(reel - ref).mean())
            row["reel_rel_l2_diff"] = rel_l2(reel, ref)
        print(f"{spec}: {patches / med:.0f} patches/s ({med:.4f} s)"
              + (f", reel max rel diff {row['reel_max_rel_diff']:.2e}, rel L2 {row['reel_rel_l2_diff']:.2e}"
                 if args.reel_out else ""),
              file=sys.stderr)
        rows.append(row)
        del out, x
        torch.cuda.empty_cache()
    if args.reel_f32_out:
        f32_check(args, rows)
    print(json.dumps({
        "reference": f"transformers {transformers.__version__} Qwen2_5_VisionTransformerPretrainedModel "
                     f"(sdpa, bf16), torch {torch.__version__}",
        "device": torch.cuda.get_device_name(),
        "torch_matmul_peak_tflops": peak,
        "batches": rows,
    }, indent=2))


if __name__ == "__main__":
    main()
