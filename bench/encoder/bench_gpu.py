#!/usr/bin/env python3
"""HF transformers' vision tower on the GPU: the peer of `reel bench encode`.

Runs the tower of a model folder written by ``reel model init --random`` (bf16, sdpa by
default) on the same seeded pixel values as ``reel bench encode`` (batch i uses seed
1000 + i, patch_dim columns), and times each batch. The tower family comes from the
folder's config.json (bench_cpu.FAMILIES): ``Qwen2_5_VisionTransformerPretrainedModel`` for
qwen2_5_vl, ``Qwen3VLVisionModel`` (and its MoE / Qwen3.5 / qwen4_exp twins) for the
Qwen3-VL family. With ``--reel-out DIR`` (``reel bench encode --save DIR``) it also reports
the parity of reel's embeddings: max|reel - HF| / max|HF| per batch. For the Qwen3-VL family
both sides are packed as vLLM takes them, [main | deepstack_0 | ...] on the last axis, and
the parity is also given per part (``reel_parity_parts``). Prints JSON: patches/s, peak
memory per patch, a torch bf16 matmul peak (TFLOP/s) measured in the same process.

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
from bench_cpu import (  # noqa: E402
    hf_tower, model_type, n_deepstack, packed, parts_parity, patch_dim, pixel_values, tower_class, vision_config,
)

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


def matched(reel: np.ndarray, ref: np.ndarray, out_hidden: int) -> tuple[np.ndarray, np.ndarray]:
    """reel's saved embeddings and HF's, as [tokens, width]. reel saves the Qwen3-VL family
    packed like HF's concatenation [main | ds0 | ...]; if it saved only the main embeddings
    (width out_hidden), HF's are cut to the main part so the overall numbers compare like with like."""
    reel = reel.reshape(ref.shape[0], -1)
    return (reel, ref) if reel.shape == ref.shape else (reel, ref[:, :out_hidden])


def parts(reel: np.ndarray, ref: np.ndarray, out_hidden: int) -> dict:
    """Per part of the packed embeddings: max|d|/max|ref| (bench_cpu.parts_parity) and rel L2."""
    p = parts_parity(reel, ref, out_hidden)
    o = out_hidden
    p["main_rel_l2"] = rel_l2(reel[:, :o], ref[:, :o])
    if p["deepstack"] is not None:
        p["deepstack_rel_l2"] = [rel_l2(reel[:, k * o:(k + 1) * o], ref[:, k * o:(k + 1) * o])
                                 for k in range(1, ref.shape[1] // o)]
    return p


def run_tower(tower, x, g) -> np.ndarray:
    with torch.no_grad():
        return packed(tower(x, grid_thw=g)).float().cpu().numpy()


def f32_check(args, rows, vcfg, qwen3: bool) -> None:
    """Adds, per batch that reel saved in f32: reel f32 vs HF f32 (the implementation is
    exact up to f32 rounding), and the bf16 results of both against HF f32 (how far bf16
    itself moves the result on this model). Qwen3-VL family: also per part ("parts")."""
    from safetensors.numpy import load_file

    o = vcfg.out_hidden_size
    ref_tower = hf_tower(args.model, torch.float32, args.attn).cuda()
    bf16_tower = hf_tower(args.model, torch.bfloat16, args.attn).cuda()
    for i, row in enumerate(rows):
        path = args.reel_f32_out / f"batch{i}.safetensors"
        if not path.is_file():
            continue
        grids = parse_batch(row["batch"])
        pv = torch.from_numpy(pixel_values(1000 + i, row["patches"], patch_dim(vcfg)))
        g = torch.tensor(grids, dtype=torch.int64, device="cuda")
        ref = run_tower(ref_tower, pv.cuda(), g)
        hf_bf16 = run_tower(bf16_tower, pv.to("cuda", torch.bfloat16), g)
        reel_f32, ref_f = matched(load_file(path)["embeddings"], ref, o)
        reel_bf16, ref_b = matched(load_file(args.reel_out / f"batch{i}.safetensors")["embeddings"], ref, o)
        row["reel_f32_vs_hf_f32"] = rel(reel_f32, ref_f)
        row["hf_bf16_vs_hf_f32"] = rel(hf_bf16, ref)
        row["reel_bf16_vs_hf_f32"] = rel(reel_bf16, ref_b)
        row["rel_l2"] = {"reel_f32_vs_hf_f32": rel_l2(reel_f32, ref_f),
                         "hf_bf16_vs_hf_f32": rel_l2(hf_bf16, ref), "reel_bf16_vs_hf_f32": rel_l2(reel_bf16, ref_b),
                         "reel_bf16_vs_hf_bf16": rel_l2(reel_bf16, hf_bf16[:, :reel_bf16.shape[1]])}
        if qwen3:
            row["parts"] = {"reel_f32_vs_hf_f32": parts(reel_f32, ref, o),
                            "reel_bf16_vs_hf_f32": parts(reel_bf16, ref, o),
                            "hf_bf16_vs_hf_f32": parts(hf_bf16, ref, o)}
        print(f"{row['batch']} vs HF f32: reel f32 {row['reel_f32_vs_hf_f32']:.2e}, reel bf16 "
              f"{row['reel_bf16_vs_hf_f32']:.2e}, HF bf16 {row['hf_bf16_vs_hf_f32']:.2e}"
              + (f"; parts (max rel) reel f32 {row['parts']['reel_f32_vs_hf_f32']['main']:.2e} / "
                 f"{row['parts']['reel_f32_vs_hf_f32']['deepstack']}, reel bf16 "
                 f"{row['parts']['reel_bf16_vs_hf_f32']['main']:.2e} / {row['parts']['reel_bf16_vs_hf_f32']['deepstack']}"
                 if qwen3 else ""), file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--batch", action="append", dest="batches")
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--reel-out", type=Path)
    ap.add_argument("--reel-f32-out", type=Path,
                    help="reel's f32 embeddings (reel bench encode --dtype f32 --save DIR) of the first batches: "
                         "compared, with reel's and HF's bf16 results, against HF in f32")
    ap.add_argument("--attn", default="sdpa", help="HF attn_implementation (sdpa, eager, flash_attention_2, ...)")
    args = ap.parse_args()
    vcfg = vision_config(args.model)
    qwen3 = model_type(args.model) != "qwen2_5_vl"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False  # the patch embedding is a Conv3d
    peak = matmul_peak()
    print(f"torch bf16 matmul peak: {peak:.0f} TFLOP/s", file=sys.stderr)
    tower = hf_tower(args.model, torch.bfloat16, args.attn).cuda()
    rows = []
    for i, spec in enumerate(args.batches or DEFAULT):
        grids = parse_batch(spec)
        patches = sum(t * h * w for t, h, w in grids)
        x = torch.from_numpy(pixel_values(1000 + i, patches, patch_dim(vcfg))).to("cuda", torch.bfloat16)
        g = torch.tensor(grids, dtype=torch.int64, device="cuda")
        times = []
        with torch.no_grad():
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            out = packed(tower(x, grid_thw=g))
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
            packed_ref = out.float().cpu().numpy()
            reel, ref = matched(load_file(args.reel_out / f"batch{i}.safetensors")["embeddings"], packed_ref,
                                vcfg.out_hidden_size)
            row["reel_max_rel_diff"] = float(np.abs(reel - ref).max() / np.abs(ref).max())
            row["reel_mean_abs_diff"] = float(np.abs(reel - ref).mean())
            row["reel_rel_l2_diff"] = rel_l2(reel, ref)
            if qwen3:
                # Packed [main | ds0 | ...]: each part against its own max|HF|.
                row["reel_parity_parts"] = parts(reel, packed_ref, vcfg.out_hidden_size)
        print(f"{spec}: {patches / med:.0f} patches/s ({med:.4f} s)"
              + (f", reel max rel diff {row['reel_max_rel_diff']:.2e}, rel L2 {row['reel_rel_l2_diff']:.2e}"
                 if args.reel_out else "")
              + (f" (main {row['reel_parity_parts']['main']:.2e}, deepstack "
                 f"{row['reel_parity_parts']['deepstack']})" if args.reel_out and qwen3 else ""),
              file=sys.stderr)
        rows.append(row)
        del out, x
        torch.cuda.empty_cache()
    if args.reel_f32_out:
        f32_check(args, rows, vcfg, qwen3)
    doc = {
        "reference": f"transformers {transformers.__version__} {tower_class(args.model).__name__} "
                     f"({args.attn}, bf16), torch {torch.__version__}",
        "device": torch.cuda.get_device_name(),
        "torch_matmul_peak_tflops": peak,
        "batches": rows,
    }
    if qwen3:
        doc["model_type"] = model_type(args.model)
        doc["embedding_layout"] = {"out_hidden_size": vcfg.out_hidden_size, "n_deepstack": n_deepstack(vcfg),
                                   "packed": "[main | deepstack_0 | ...] along the last axis"}
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
