"""Peers for the GPU benchmarks, run in the same call as reel on the same clips.

decode:   PyNvVideoCodec 2.2.4 (CreateDemuxer + CreateDecoder, frames into device
          memory), N threads each decoding a whole clip, released together.
pipeline: PyNvVideoCodec single decoder (RGB planar output) + HF transformers'
          Qwen2VLVideoProcessor(device="cuda"), frames sampled like qwen-vl-utils
          (2 fps) and sized with its pixel budget, so the output matches reel's plan.
Prints JSON shaped like `reel bench decode` / `reel bench frames`.
"""

import argparse
import json
import statistics
import sys
import threading
import time


def decode_bench(paths, sessions, repeat):
    import PyNvVideoCodec as nvc

    def run(path, n):
        barrier = threading.Barrier(n + 1)
        counts, errors = [], []

        def worker():
            try:
                dmx = nvc.CreateDemuxer(filename=path)
                dec = nvc.CreateDecoder(gpuid=0, codec=dmx.GetNvCodecId(), usedevicememory=True,
                                        bWaitForSessionWarmUp=True)
                barrier.wait()
                count = 0
                for packet in dmx:
                    for _ in dec.Decode(packet):
                        count += 1
                counts.append(count)
            except Exception as e:  # reported, not swallowed
                errors.append(repr(e))
                barrier.abort()

        threads = [threading.Thread(target=worker) for _ in range(n)]
        for t in threads:
            t.start()
        barrier.wait()
        start = time.perf_counter()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
        if errors:
            raise RuntimeError(errors[0])
        return elapsed, sum(counts)

    out = []
    for path in paths:
        run(path, max(sessions))  # warm up
        rows = []
        for n in sessions:
            best = min((run(path, n) for _ in range(repeat)), key=lambda r: r[0])
            fps = best[1] / best[0]
            print(f"{path}: {n} sessions: {fps:.0f} fps", file=sys.stderr)
            rows.append({"sessions": n, "seconds": best[0], "frames": best[1], "aggregate_fps": fps,
                         "per_session_fps": fps / n})
        out.append({"file": path, "results": rows})
    return out


def qwen_plan(total_frames, video_fps):
    """qwen-vl-utils 0.0.14 frame indices and per-frame pixel budget for fps=2."""
    import torch
    from qwen_vl_utils.vision_process import smart_nframes
    n = smart_nframes({"fps": 2.0}, total_frames=total_frames, video_fps=video_fps)
    idx = torch.linspace(0, total_frames - 1, n).round().long().tolist()
    max_pixels = max(min(768 * 28 * 28, 128000 * 28 * 28 * 0.9 / n * 2), int(128 * 28 * 28 * 1.05))
    return idx, int(max_pixels)


def pipeline_bench(paths, iterations, video_fps):
    import torch
    import PyNvVideoCodec as nvc
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    out = []
    for path in paths:
        # Frame count from a first decode (raw streams carry none); not timed.
        dmx = nvc.CreateDemuxer(filename=path)
        dec = nvc.CreateDecoder(gpuid=0, codec=dmx.GetNvCodecId(), usedevicememory=True)
        total = sum(len(dec.Decode(p)) for p in dmx)
        idx, max_pixels = qwen_plan(total, video_fps)
        processor = Qwen2VLVideoProcessor(
            min_pixels=128 * 28 * 28, max_pixels=max_pixels, patch_size=14, temporal_patch_size=2, merge_size=2,
            image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
        )
        wanted = set(idx)

        def run_once():
            torch.cuda.synchronize()
            t = time.perf_counter()
            dmx = nvc.CreateDemuxer(filename=path)
            dec = nvc.CreateDecoder(gpuid=0, codec=dmx.GetNvCodecId(), usedevicememory=True,
                                    outputColorType=nvc.OutputColorType.RGBP)
            frames, i = {}, 0
            for packet in dmx:
                for frame in dec.Decode(packet):
                    if i in wanted:
                        frames[i] = torch.from_dlpack(frame).clone()
                    i += 1
            video = torch.stack([frames[j] for j in idx])
            result = processor(videos=[video], do_sample_frames=False, device="cuda", return_tensors="pt")
            pv = result["pixel_values_videos"]
            torch.cuda.synchronize()
            return time.perf_counter() - t, pv, result["video_grid_thw"][0].tolist()

        _, _, grid = run_once()
        times = [run_once()[0] for _ in range(iterations)]
        med = statistics.median(times)
        print(f"{path}: median {med:.3f} s", file=sys.stderr)
        out.append({"file": path, "video_frames": total, "sampled_frames": len(idx), "grid_thw": grid,
                    "latency_s": {"median": med, "min": min(times), "max": max(times), "runs": len(times)},
                    "video_frames_per_s": total / med})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["decode", "pipeline"])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--sessions", default="1,2,4,7,8,14,16")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--fps", type=float, default=30.0, help="frame rate of the raw clips")
    args = ap.parse_args()
    if args.mode == "decode":
        result = decode_bench(args.files, [int(s) for s in args.sessions.split(",")], args.repeat)
    else:
        result = pipeline_bench(args.files, args.iterations, args.fps)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
