#!/usr/bin/env python3
"""End to end on one GPU: 30 s 1080p H.264 videos → Qwen2.5-VL-7B vision embeddings.

reel: ``reel serve`` (NVDEC, GPU preprocessing, CUDA tower) with results handed over as
CUDA IPC tensors through reel_client. Baseline: OpenCV's CPU decoder (FFmpeg inside),
frames sampled like qwen-vl-utils (2 fps), HF ``Qwen2VLVideoProcessor(device="cuda")``,
HF ``Qwen2_5_VisionTransformerPretrainedModel`` (sdpa, bf16) on the same GPU. Both sides
embed the same files with the same weights.

Measured: latency at concurrency 1 (median of several requests, from the request to a
usable torch tensor on the GPU) and throughput (videos/s) with 64 requests in flight over
N distinct files. Prints JSON.

    python3 bench/serve/bench_e2e.py --reel-bin BIN --model DIR --clip CLIP.h264 [--videos 16]
"""

import argparse
import concurrent.futures as cf
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench" / "encoder"))
sys.path.insert(0, str(REPO / "bench" / "gpu"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(run_one, videos, concurrency, requests, latency_runs):
    run_one(videos[0])  # warm-up
    lat = []
    for i in range(latency_runs):
        t = time.perf_counter()
        run_one(videos[i % len(videos)])
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(run_one, [videos[i % len(videos)] for i in range(requests)]))
    wall = time.perf_counter() - t
    return {
        "latency_s": {"median": statistics.median(lat), "min": min(lat), "runs": len(lat)},
        "throughput": {"concurrency": concurrency, "requests": requests, "seconds": wall,
                       "videos_per_s": requests / wall},
    }


def reel_side(args, videos, media):
    from reel_client import Client

    port, metrics = free_port(), free_port()
    log = open(args.workdir / "serve.log", "w")
    server = subprocess.Popen(
        [args.reel_bin, "serve", "--device", "cuda", "--model", f"q7b={args.model}", "--media-root", str(media),
         "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics}",
         "--workers", str(args.workers), "--max-queue", str(max(256, args.concurrency)), "--ipc-pool-mib", "16384",
         # The files are copies of one clip: without this every request after the first
         # is an embedding-cache hit, not a run of the pipeline.
         "--cache-mib", "0", *args.serve_arg],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        client = Client(f"127.0.0.1:{port}", timeout=600)
        for _ in range(600):
            try:
                client.info()
                break
            except Exception:
                time.sleep(0.1)
        shapes = {}

        def run_one(path):
            with client.embed(path, output="cuda_ipc") as r:
                t = r.tensor
                torch.cuda.synchronize()
                shapes[tuple(t.shape)] = str(t.dtype)

        if args.handoff_only:
            out = {"handoff": handoff(client, videos[0])}
        else:
            out = measure(run_one, videos, args.concurrency, args.requests, args.latency_runs)
            out["embedding_shapes"] = [f"{list(k)} {v}" for k, v in shapes.items()]
        client.close()
        return out
    finally:
        server.terminate()
        server.wait(30)


def handoff(client, path, runs=5):
    """Time from the server's result being published to a usable CUDA tensor in this
    process, CUDA IPC vs the same tensor INLINE: client wall time minus the server's own
    total_s (which ends when the result is published; its publish_s, the copy into the IPC
    pool or to host memory, is reported apart), and the bytes each way copies."""
    out = {}
    for mode in ("cuda_ipc", "inline"):
        times, publish = [], []
        for i in range(runs + 1):
            t = time.perf_counter()
            with client.embed(path, output=mode) as r:
                x = r.tensor if mode == "cuda_ipc" else r.tensor.cuda()
                torch.cuda.synchronize()
                wall = time.perf_counter() - t
                nbytes = x.numel() * x.element_size()
                if i:  # the first run opens the IPC pool / warms up
                    times.append(wall - r.timings["total_s"])
                    publish.append(r.timings["publish_s"])
        out[mode] = {"median_s": statistics.median(times), "min_s": min(times), "runs": len(times),
                     "server_publish_s": statistics.median(publish),
                     "tensor_bytes": nbytes,
                     "bytes_copied": (nbytes if mode == "cuda_ipc" else 3 * nbytes),
                     "copies": ("device→device into the IPC pool (server)" if mode == "cuda_ipc" else
                                "device→host (server), gRPC to the client, host→device (client)")}
        print(f"handoff {mode}: {out[mode]['median_s'] * 1e3:.2f} ms, {nbytes / 1e6:.1f} MB tensor", file=sys.stderr)
    out["ratio"] = out["inline"]["median_s"] / out["cuda_ipc"]["median_s"]
    return out


def baseline_side(args, videos):
    import cv2
    from bench_cpu import hf_tower
    from peer_pynvc import qwen_plan
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    tower = hf_tower(args.model, torch.bfloat16).cuda()
    gpu = threading.Lock()
    shapes = set()

    def run_one(path):
        cap = cv2.VideoCapture(str(path))
        frames = []
        while True:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(f)
        cap.release()
        idx, max_pixels = qwen_plan(len(frames), args.fps)
        video = torch.from_numpy(np.stack([cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB) for i in idx]))
        video = video.permute(0, 3, 1, 2)
        processor = Qwen2VLVideoProcessor(
            min_pixels=128 * 28 * 28, max_pixels=max_pixels, patch_size=14, temporal_patch_size=2, merge_size=2,
            image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])
        with gpu, torch.no_grad():
            res = processor(videos=[video], do_sample_frames=False, device="cuda", return_tensors="pt")
            emb = tower(res["pixel_values_videos"].to(torch.bfloat16),
                        grid_thw=res["video_grid_thw"].cuda()).pooler_output
            torch.cuda.synchronize()
            shapes.add(tuple(emb.shape))

    out = measure(run_one, videos, args.concurrency, args.baseline_requests, args.baseline_latency_runs)
    out["embedding_shapes"] = [list(s) for s in shapes]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reel-bin", required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--clip", type=Path, required=True, help="a 30 s 1080p30 H.264 clip")
    ap.add_argument("--fps", type=float, default=30.0, help="frame rate of the clip (raw streams carry none)")
    ap.add_argument("--videos", type=int, default=16, help="distinct files")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--latency-runs", type=int, default=5)
    ap.add_argument("--baseline-requests", type=int, default=16)
    ap.add_argument("--baseline-latency-runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/reel-e2e"))
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="an extra argument for reel serve (repeat for several), e.g. --serve-arg=--split-encode")
    ap.add_argument("--handoff-only", action="store_true",
                    help="only the CUDA IPC vs INLINE handoff measurement (no baseline)")
    args = ap.parse_args()
    media = args.workdir / "media"
    shutil.rmtree(args.workdir, ignore_errors=True)
    media.mkdir(parents=True)
    # N files, copies of the clip (the server runs with its embedding cache off).
    videos = []
    for i in range(args.videos):
        p = media / f"clip{i:02d}{args.clip.suffix}"
        shutil.copyfile(args.clip, p)
        videos.append(p)
    result = {"clip": args.clip.name, "videos": args.videos, "device": torch.cuda.get_device_name(),
              "reel": reel_side(args, videos, media)}
    print(f"reel: {json.dumps(result['reel'])}", file=sys.stderr)
    if not (args.skip_baseline or args.handoff_only):
        result["baseline"] = baseline_side(args, videos)
        print(f"baseline: {json.dumps(result['baseline'])}", file=sys.stderr)
        r, b = result["reel"], result["baseline"]
        result["latency_speedup"] = b["latency_s"]["median"] / r["latency_s"]["median"]
        result["throughput_speedup"] = r["throughput"]["videos_per_s"] / b["throughput"]["videos_per_s"]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
