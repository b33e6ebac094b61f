"""Charts of the GPU benchmark results: bench/results/*.json → PNG beside them.

Usage: python3 bench/plot.py [bench/results/encoder_gpu_DATE.json ...]
(default: the newest encoder_gpu_*, encoder_batching_* and gpu_frames_* files). Needs
matplotlib.
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


def save(fig, path):
    """Writes the chart beside its results file, as PNG."""
    fig.tight_layout()
    out = path.replace(".json", ".png")
    fig.savefig(out, dpi=120)
    print("wrote", out)


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
    save(fig, path)


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
    save(fig, path)


def frames_chart(path):
    doc = json.load(open(path))
    rows = [r for r in doc["clips"] if "reel_one_session" in r]
    modes = [("reel, 1 NVDEC session", "reel_one_session", "tab:gray"),
             ("reel, all engines", "reel_all_engines", "tab:blue"),
             ("PyNvVideoCodec + HF processor", "peer", "tab:orange")]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.27
    for k, (label, key, color) in enumerate(modes):
        xs = [i + (k - 1) * width for i in range(len(rows))]
        ys = [r[key]["latency_s"]["median"] for r in rows]
        ax.bar(xs, ys, width, label=label, color=color)
        for x, y in zip(xs, ys):
            ax.annotate(f"{y:.2f}", (x, y), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(rows)), [r["file"] for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("seconds to preprocessed frames on the GPU (log)")
    ax.set_title(f"One video, 2 fps sampling\n{doc['device']}", fontsize=10)
    ax.legend(fontsize=8)
    save(fig, path)


def scaling_chart(path):
    doc = json.load(open(path))
    runs = doc["runs"]
    gpus = [r["gpus"] for r in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    for clip in runs[0]["latency_s"]:
        left.plot(gpus, [r["latency_s"][clip]["median"] for r in runs], "o-", label=clip)
    left.set_xlabel("GPUs")
    left.set_ylabel("seconds to preprocessed frames (one video)")
    left.set_xticks(gpus)
    left.legend(fontsize=8)
    for c in (64, 256):
        key = f"serve_{c}"
        pts = [(r["gpus"], r[key]["throughput"]["videos_per_s"]) for r in runs if key in r]
        if pts:
            right.plot(*zip(*pts), "o-", label=f"{c} in flight")
    base = next((r for r in runs if "serve_64" in r), None)
    if base:
        per_gpu = base["serve_64"]["throughput"]["videos_per_s"] / base["gpus"]
        right.plot(gpus, [g * per_gpu for g in gpus], ":", color="gray", label="linear")
    left.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    right.set_xlabel("GPUs")
    right.set_ylabel("reel serve, videos/s (30 s 1080p → 7B)")
    right.set_xticks(gpus)
    right.legend(fontsize=8)
    fig.suptitle(f"Scaling over GPUs\n{doc['device']}", fontsize=10)
    save(fig, path)


def main():
    defaults = ("encoder_gpu_*.json", "encoder_batching_*.json", "gpu_frames_*.json", "scaling_*.json")
    paths = sys.argv[1:] or [p for p in map(newest, defaults) if p]
    for p in paths:
        if "batching" in p:
            batching_chart(p)
        elif "scaling" in p:
            scaling_chart(p)
        elif "frames" in p:
            frames_chart(p)
        else:
            encoder_chart(p)


if __name__ == "__main__":
    main()
