"""Peer for `reel bench frames`: the qwen-vl-utils CPU pipeline on the same clip.

qwen-vl-utils 0.0.14's fetch_video (its preferred reader, torchcodec, which decodes
with FFmpeg) followed by HF transformers' Qwen2VLVideoProcessor configured like
Qwen/Qwen2.5-VL-7B-Instruct. Prints JSON with the same fields as `reel bench frames`.
"""

import argparse
import json
import os
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--iterations", type=int, default=5)
    args = ap.parse_args()

    os.environ["TORCHCODEC_NUM_THREADS"] = str(args.threads)
    os.environ["FORCE_QWENVL_VIDEO_READER"] = os.environ.get("FORCE_QWENVL_VIDEO_READER", "torchcodec")
    import torch
    from qwen_vl_utils import fetch_video
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    torch.set_num_threads(args.threads)
    processor = Qwen2VLVideoProcessor(
        min_pixels=3136, max_pixels=12845056, patch_size=14, temporal_patch_size=2, merge_size=2,
        image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
    )

    results = []
    for path in args.files:
        def run_once():
            t = time.perf_counter()
            video, sample_fps = fetch_video({"video": path}, return_video_sample_fps=True)
            out = processor(videos=[video], do_sample_frames=False, return_tensors="pt")
            pv = out["pixel_values_videos"]
            return time.perf_counter() - t, video.shape[0], tuple(out["video_grid_thw"][0].tolist()), pv

        _, sampled, grid, _ = run_once()
        times = [run_once()[0] for _ in range(max(1, args.iterations))]
        from torchcodec.decoders import VideoDecoder
        total = VideoDecoder(path).metadata.num_frames
        med = statistics.median(times)
        print(f"{path}: median {med:.3f} s over {len(times)} runs", file=sys.stderr)
        results.append({
            "file": path, "threads": args.threads, "video_frames": total, "sampled_frames": sampled,
            "grid_thw": grid,
            "latency_s": {"median": med, "min": min(times), "max": max(times), "runs": len(times)},
            "video_frames_per_s": total / med, "sampled_frames_per_s": sampled / med,
        })
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
