#!/usr/bin/env python3
"""The transcode benchmark's Python baseline: PyNvVideoCodec (demuxer + NVDEC into device
memory) → frames sampled like qwen-vl-utils (2 fps) → HF Qwen2VLVideoProcessor on the GPU →
HF Qwen2_5_VisionTransformerPretrainedModel (sdpa, bf16), every video of a folder; decode
and preprocessing run in a thread pool, the tower one batch at a time. Prints JSON.

    python3 bench/transcode/peer.py --model DIR --fps 30 [--threads 4] VIDEO_DIR
"""

import argparse
import concurrent.futures as cf
import json
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench" / "encoder"))
sys.path.insert(0, str(REPO / "bench" / "gpu"))


def main():
    import PyNvVideoCodec as nvc
    from bench_cpu import hf_tower
    from peer_pynvc import qwen_plan
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    ap = argparse.ArgumentParser()
    ap.add_argument("folder", type=Path)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--fps", type=float, default=30.0, help="frame rate of the clips")
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()
    files = sorted(p for p in args.folder.iterdir() if p.suffix in (".mp4", ".mkv"))
    tower = hf_tower(args.model, torch.bfloat16).cuda()
    gpu = threading.Lock()
    tokens = [0]

    def one(path):
        dmx = nvc.CreateDemuxer(filename=str(path))
        dec = nvc.CreateDecoder(gpuid=0, codec=dmx.GetNvCodecId(), usedevicememory=True,
                                outputColorType=nvc.OutputColorType.RGBP)
        frames = [torch.from_dlpack(f).clone() for p in dmx for f in dec.Decode(p)]
        idx, max_pixels = qwen_plan(len(frames), args.fps)
        video = torch.stack([frames[i] for i in idx])
        processor = Qwen2VLVideoProcessor(
            min_pixels=128 * 28 * 28, max_pixels=max_pixels, patch_size=14, temporal_patch_size=2, merge_size=2,
            image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711])
        res = processor(videos=[video], do_sample_frames=False, device="cuda", return_tensors="pt")
        with gpu, torch.no_grad():
            emb = tower(res["pixel_values_videos"].to(torch.bfloat16),
                        grid_thw=res["video_grid_thw"].cuda()).pooler_output
            out = emb.cpu()
            tokens[0] += out.shape[0]
        return out.shape[0]

    one(files[0])  # warm-up
    tokens[0] = 0
    t = time.perf_counter()
    with cf.ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(one, files))
    wall = time.perf_counter() - t
    print(json.dumps({"videos": len(files), "seconds": wall, "videos_per_s": len(files) / wall,
                      "tokens": tokens[0], "threads": args.threads,
                      "pipeline": "PyNvVideoCodec 2.2.4 + Qwen2VLVideoProcessor(cuda) + HF tower (sdpa, bf16)"},
                     indent=2))


if __name__ == "__main__":
    main()
