"""Charts of the GPU benchmark results: bench/results/*.json → PNG beside them.

Usage: python3 bench/plot.py [bench/results/encoder_gpu_DATE.json ...]
(default: the newest encoder_gpu_* and encoder_batching_* files). Needs matplotlib.
"""

import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def newest(pattern):
    files = sorted(glob.glob(os.path.join("bench/results", pattern)))
    return files[-1] if files else None


def encoder_chart(path):
    doc = json.load(open(path))
    rows = doc["batches"]
    labels = [r["batch"] for r in rows]
    reel = [r["reel"]["patches_per_s"] / 1e3 for r in rows]
    hf = [r["hf"]["patches_per_s"] / 1e3 for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], reel, 0.4, label="reel (CUDA tower)")
    ax.bar([i + 0.2 for i in x], hf, 0.4, label="HF transformers (sdpa)")
    for i, r in enumerate(rows):
        ax.annotate(f"{r['speedup']:.1f}x\n{100 * r['reel_mfu']:.0f}% MFU", (i - 0.2, reel[i]),
                    ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("thousand patches / s")
    ax.set_title(f"Qwen2.5-VL-7B vision tower, bf16\n{doc['device']}", fontsize=10)
    ax.set_ylim(0, max(reel) * 1.2)
    ax.legend()
    fig.tight_layout()
    out = path.replace(".json", ".png")
    fig.savefig(out, dpi=120)
    print("wrote", out)


def batching_chart(path):
    doc = json.load(open(path))
    bars = []
    for key in ("batch_small_requests", "batch_large_requests"):
        b = doc.get(key)
        if b:
            name = f"{b['requests']} x {tuple(b['grid'])}"
            bars.append((f"{name}\none forward each", b["one_forward_each"]["patches_per_s"] / 1e3))
            bars.append((f"{name}\nbatched", b["batched"]["patches_per_s"] / 1e3))
    m = doc["embed_one_video"]["modes"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    ax1.bar(range(len(bars)), [v for _, v in bars], color=["tab:gray", "tab:blue"] * (len(bars) // 2))
    ax1.set_xticks(range(len(bars)), [n for n, _ in bars], fontsize=8)
    ax1.set_ylabel("thousand patches / s")
    ax1.set_title("cross-request batching")
    modes = [("decode, then\nencode", "decode_then_encode"), ("slices streamed\nduring decode", "streamed_slices"),
             ("cache hit", "cache_hit")]
    ax2.bar(range(3), [m[k]["latency_s"]["median"] * 1e3 for _, k in modes], color=["tab:gray", "tab:blue", "tab:green"])
    ax2.set_xticks(range(3), [n for n, _ in modes], fontsize=8)
    ax2.set_ylabel("ms, request to embeddings on the GPU")
    ax2.set_title(os.path.basename(doc["embed_one_video"]["file"]) + " → 7B embeddings")
    fig.suptitle(doc["device"], fontsize=10)
    fig.tight_layout()
    out = path.replace(".json", ".png")
    fig.savefig(out, dpi=120)
    print("wrote", out)


def main():
    paths = sys.argv[1:] or [p for p in (newest("encoder_gpu_*.json"), newest("encoder_batching_*.json")) if p]
    for p in paths:
        (batching_chart if "batching" in p else encoder_chart)(p)


if __name__ == "__main__":
    main()
