"""Turns the files bench/gpu/run.sh leaves in $OUT into bench/results/*.json.

Usage: python3 bench/gpu/collect.py <fetched OUT folder, or its results.tar> <device description>
(several folders or tars joined by commas: later ones win for the same file name)
"""

import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from datetime import date


def load(folder, name):
    """The JSON document in a result file (after any log lines a peer library printed)."""
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        return None
    text = open(path).read()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return json.loads(text[text.rfind("\n{") + 1:])


def gather(spec):
    """One folder holding every result file, from folders and results.tar files."""
    folder = tempfile.mkdtemp(prefix="reel-results-")
    for part in spec.split(","):
        tars = [part] if part.endswith(".tar") else [os.path.join(part, "results.tar")]
        for t in tars:
            if os.path.exists(t):
                with tarfile.open(t) as tar:
                    tar.extractall(folder, filter="data")
        if os.path.isdir(part):
            for name in os.listdir(part):
                src = os.path.join(part, name)
                if os.path.isfile(src) and not name.endswith(".tar"):
                    with open(src, "rb") as a, open(os.path.join(folder, name), "wb") as b:
                        b.write(a.read())
    return folder


def main():
    folder, device = gather(sys.argv[1]), sys.argv[2]
    commit = subprocess.check_output(["git", "rev-parse", "HEAD"]).decode().strip()
    stamp = date.today().strftime("%Y%m%d")
    os.makedirs("bench/results", exist_ok=True)

    reel, peer = load(folder, "reel-decode.json"), load(folder, "peer-decode.json")
    if reel and peer:
        clips = []
        for r, p in zip(reel, peer):
            rows = {x["sessions"]: x for x in r["results"]}
            prow = {x["sessions"]: x for x in p["results"]}
            best_reel = max(r["results"], key=lambda x: x["aggregate_fps"])
            best_peer = max(p["results"], key=lambda x: x["aggregate_fps"])
            clips.append({
                "file": os.path.basename(r["file"]), "codec": r["codec"], "frames": r["frames"],
                "nvdec_engines": r["nvdec_engines"],
                "sessions": [{"sessions": n, "reel_fps": rows[n]["aggregate_fps"], "pynvvideocodec_fps": prow[n]["aggregate_fps"],
                              "ratio": rows[n]["aggregate_fps"] / prow[n]["aggregate_fps"]} for n in sorted(rows) if n in prow],
                "single_session_ratio": rows[1]["aggregate_fps"] / prow[1]["aggregate_fps"],
                "best": {"reel": best_reel, "pynvvideocodec": best_peer,
                         "ratio": best_reel["aggregate_fps"] / best_peer["aggregate_fps"]},
            })
        util = None
        dmon = os.path.join(folder, "dmon.txt")
        if os.path.exists(dmon):
            decs = [int(l.split()[4]) for l in open(dmon) if re.match(r"^\s+\d", l)]
            busy = [d for d in decs if d > 0]
            util = {"samples": len(busy), "mean_dec_percent": sum(busy) / len(busy) if busy else 0,
                    "clip": "h264_5min", "sessions": 14}
        doc = {"benchmark": "nvdec_decode", "commit": commit, "device": device,
               "command": "bash bench/gpu/run.sh (reel bench decode; bench/gpu/peer_pynvc.py decode)",
               "peer": "PyNvVideoCodec 2.2.4, CreateDemuxer + CreateDecoder(usedevicememory=True)",
               "clips": clips, "decoder_utilization": util,
               "reel_5min": load(folder, "reel-decode-5min.json")}
        json.dump(doc, open(f"bench/results/nvdec_decode_{stamp}.json", "w"), indent=2)
        for c in clips:
            print(f"decode {c['file']}: single {c['single_session_ratio']:.2f}x, best {c['best']['reel']['aggregate_fps']:.0f} vs "
                  f"{c['best']['pynvvideocodec']['aggregate_fps']:.0f} fps = {c['best']['ratio']:.2f}x")
        if util:
            print(f"decoder utilization at 14 sessions: {util['mean_dec_percent']:.1f}%")

    reel, peer = load(folder, "reel-frames.json"), load(folder, "peer-frames.json")
    if reel and peer:
        single = load(folder, "reel-frames-1session.json") or []
        single = {os.path.basename(r["file"]): r for r in single}
        one_gpu = {os.path.basename(r["file"]): r for r in load(folder, "reel-frames-1gpu.json") or []}
        rows = []
        for r, p in zip(reel, peer):
            name = os.path.basename(r["file"])
            row = {"file": name, "reel_all_engines": r, "peer": p,
                   "speedup_vs_peer": p["latency_s"]["median"] / r["latency_s"]["median"]}
            if name in single:
                row["reel_one_session"] = single[name]
                row["speedup_vs_one_session"] = single[name]["latency_s"]["median"] / r["latency_s"]["median"]
            if name in one_gpu:
                # reel-frames.json ran on every GPU of the machine; this on GPU 0 alone.
                row["reel_one_gpu"] = one_gpu[name]
                row["speedup_all_gpus_vs_one_gpu"] = one_gpu[name]["latency_s"]["median"] / r["latency_s"]["median"]
                print(f"  {name}: all GPUs vs one GPU {row['speedup_all_gpus_vs_one_gpu']:.2f}x")
            rows.append(row)
            print(f"pipeline {name}: all engines {r['latency_s']['median']:.3f} s, one session "
                  f"{single[name]['latency_s']['median'] if name in single else float('nan'):.3f} s, peer "
                  f"{p['latency_s']['median']:.3f} s = {row['speedup_vs_peer']:.2f}x")
        many, ceiling = load(folder, "reel-frames-64.json"), load(folder, "reel-decode-ceiling.json")
        concurrency = None
        if many and ceiling:
            best = max(ceiling[0]["results"], key=lambda x: x["aggregate_fps"])
            m = many[0]
            concurrency = {"videos": m["concurrent"], "videos_per_s": m["videos_per_s"],
                           "aggregate_decoded_fps": m["aggregate_decoded_fps"],
                           "decode_ceiling_fps": best["aggregate_fps"], "ceiling_sessions": best["sessions"],
                           "fraction_of_ceiling": m["aggregate_decoded_fps"] / best["aggregate_fps"]}
            print(f"64 videos at once: {m['aggregate_decoded_fps']:.0f} decoded fps = "
                  f"{100 * concurrency['fraction_of_ceiling']:.1f}% of the {best['aggregate_fps']:.0f} fps ceiling")
            concurrency["latency_s"] = m["latency_s"]
        doc = {"benchmark": "gpu_decode_preprocess", "commit": commit, "device": device,
               "command": "ONLY=frames bash bench/gpu/run.sh (reel bench frames --device cuda [--sessions 1] "
                          "[--concurrent 64]; reel bench decode; bench/gpu/peer_pynvc.py pipeline)",
               "peer": "PyNvVideoCodec 2.2.4 single decoder (RGB planar) + transformers 5.17 Qwen2VLVideoProcessor(device='cuda')",
               "sampling": "2 fps, qwen-vl-utils indices and pixel budget", "clips": rows,
               "concurrent_videos": concurrency}
        json.dump(doc, open(f"bench/results/gpu_frames_{stamp}.json", "w"), indent=2)

    reel, peer = load(folder, "reel-encode.json"), load(folder, "peer-encode.json")
    if reel and peer:
        # MFU against the higher of the two measured bf16 GEMM peaks (conservative).
        peak = max(reel["gemm_peak_tflops"] or 0, peer["torch_matmul_peak_tflops"])
        rows = []
        for r, p in zip(reel["batches"], peer["batches"]):
            row = {"batch": r["batch"], "patches": r["patches"], "flops": r["flops"],
                   "reel": {k: r[k] for k in ("latency_s", "patches_per_s", "tflops", "peak_activation_bytes",
                                              "activation_bytes_per_patch")},
                   "hf": {k: p[k] for k in ("latency_s", "patches_per_s", "peak_activation_bytes",
                                            "activation_bytes_per_patch")},
                   "speedup": r["patches_per_s"] / p["patches_per_s"],
                   "reel_mfu": r["tflops"] / peak,
                   "hf_mfu": r["flops"] / p["latency_s"]["median"] / 1e12 / peak,
                   "max_rel_diff_reel_vs_hf_bf16": p.get("reel_max_rel_diff")}
            for k in ("hf_bf16_vs_hf_f32", "reel_bf16_vs_hf_f32", "reel_f32_vs_hf_f32"):
                if k in p:
                    row[k] = p[k]
            rows.append(row)
            print(f"encoder {r['batch']}: reel {r['patches_per_s']:.0f} vs HF {p['patches_per_s']:.0f} patches/s = "
                  f"{row['speedup']:.2f}x, MFU {100 * row['reel_mfu']:.1f}% (HF {100 * row['hf_mfu']:.1f}%)")
        doc = {"benchmark": "encoder_gpu", "commit": commit, "device": device,
               "command": "ONLY=encoder bash bench/gpu/run.sh (reel bench encode; bench/encoder/bench_gpu.py)",
               "model": "Qwen2.5-VL-7B vision tower, random weights (reel model init --arch qwen2.5-vl-7b --random --seed 0), bf16",
               "peer": peer["reference"],
               "gemm_peak_tflops": {"cublaslt_8192": reel["gemm_peak_tflops"], "torch_matmul_8192": peer["torch_matmul_peak_tflops"],
                                    "used_for_mfu": peak},
               "flops": "2*linear MACs (patch embed, 32 blocks, merger) + 4*head_dim*heads per attention pair",
               "batches": rows}
        json.dump(doc, open(f"bench/results/encoder_gpu_{stamp}.json", "w"), indent=2)

    small, large, embed = (load(folder, n) for n in ("reel-batch.json", "reel-batch-large.json", "reel-embed.json"))
    if small and embed:
        doc = {"benchmark": "encoder_batching_gpu", "commit": commit, "device": device,
               "command": "ONLY=batching bash bench/gpu/run.sh (reel bench batch; reel bench embed)",
               "model": "Qwen2.5-VL-7B vision tower, random weights, bf16",
               "batch_small_requests": small, "batch_large_requests": large, "embed_one_video": embed}
        json.dump(doc, open(f"bench/results/encoder_batching_{stamp}.json", "w"), indent=2)
        for b in (small, large):
            if b:
                print(f"batching {b['requests']} x {b['grid']}: {b['batched']['patches_per_s']:.0f} vs "
                      f"{b['one_forward_each']['patches_per_s']:.0f} patches/s one forward each = {b['speedup']:.2f}x, "
                      f"peak {b['batched']['peak_pool_bytes'] / 2**20:.0f} MiB of {b['memory_budget_bytes'] / 2**20:.0f} MiB")
        m = embed["modes"]
        print(f"embed {os.path.basename(embed['file'])}: decode-then-encode {m['decode_then_encode']['latency_s']['median']:.3f} s, "
              f"streamed {m['streamed_slices']['latency_s']['median']:.3f} s, cache hit {m['cache_hit']['latency_s']['median'] * 1e3:.1f} ms")

    e2e = load(folder, "e2e.json")
    if e2e and "baseline" in e2e:
        doc = {"benchmark": "e2e_serve_gpu", "commit": commit, "device": device,
               "command": "ONLY=e2e bash bench/gpu/run.sh (bench/serve/bench_e2e.py)",
               "workload": "30 s 1080p30 H.264 (6 Mb/s) → Qwen2.5-VL-7B vision embeddings (random weights, bf16), "
                           "2 fps sampling; reel serve + reel_client CUDA IPC vs OpenCV decode + HF "
                           "Qwen2VLVideoProcessor(cuda) + HF tower (sdpa, bf16) on the same GPU",
               **e2e}
        json.dump(doc, open(f"bench/results/e2e_serve_{stamp}.json", "w"), indent=2)
        print(f"e2e: latency {e2e['reel']['latency_s']['median']:.3f} vs {e2e['baseline']['latency_s']['median']:.3f} s "
              f"= {e2e['latency_speedup']:.1f}x; throughput {e2e['reel']['throughput']['videos_per_s']:.2f} vs "
              f"{e2e['baseline']['throughput']['videos_per_s']:.2f} videos/s = {e2e['throughput_speedup']:.1f}x")

    handoff = load(folder, "handoff.json")
    if handoff:
        doc = {"benchmark": "handoff_cuda_ipc_vs_inline", "commit": commit, "device": device,
               "command": "ONLY=handoff bash bench/gpu/run.sh (bench/serve/bench_e2e.py --handoff-only)",
               "what": "client wall time minus the server's total_s: from the published result to a usable "
                       "CUDA tensor in the client; 7B embeddings of a 1080p 8 s clip",
               **handoff["reel"]["handoff"]}
        json.dump(doc, open(f"bench/results/handoff_{stamp}.json", "w"), indent=2)
        print(f"handoff: CUDA IPC {doc['cuda_ipc']['median_s'] * 1e3:.2f} ms vs inline "
              f"{doc['inline']['median_s'] * 1e3:.1f} ms = {doc['ratio']:.0f}x")

    reel, wall, peer = (load(folder, n) for n in ("reel-transcode.json", "reel-transcode-wall.json", "peer-transcode.json"))
    if reel and wall and peer:
        videos = peer["videos"]
        rate = videos / wall["wall_s"]
        doc = {"benchmark": "transcode_gpu", "commit": commit, "device": device,
               "command": "ONLY=transcode bash bench/gpu/run.sh (reel transcode --what embeddings; bench/transcode/peer.py)",
               "workload": "200 clips (bench/transcode/make_clips.sh: 20 distinct H.264/HEVC, MP4/MKV, 360p-1080p, "
                           "2-8 s, each copied 10 times) → Qwen2.5-VL-7B embeddings (random weights, bf16)",
               "reel": {"wall_s": wall["wall_s"], "videos_per_s": rate, "summary": reel,
                        "note": "wall time of the whole command, model load included"},
               "peer": peer, "speedup": rate / peer["videos_per_s"]}
        json.dump(doc, open(f"bench/results/transcode_gpu_{stamp}.json", "w"), indent=2)
        print(f"transcode: {rate:.2f} vs {peer['videos_per_s']:.2f} videos/s = {doc['speedup']:.2f}x")

    scaling = []
    for n in (1, 2, 4, 8):
        frames = load(folder, f"scaling-frames-{n}.json")
        if not frames:
            continue
        row = {"gpus": n, "latency_s": {os.path.basename(r["file"]): r["latency_s"] for r in frames}}
        for c in (64, 256):
            serve = load(folder, f"scaling-serve-{n}-{c}.json")
            if serve:
                row[f"serve_{c}"] = serve["reel"]
        scaling.append(row)
    if scaling:
        base = scaling[0]
        for row in scaling:
            n = row["gpus"] / base["gpus"]
            row["latency_speedup"] = {k: base["latency_s"][k]["median"] / v["median"]
                                      for k, v in row["latency_s"].items()}
            for c in (64, 256):
                key = f"serve_{c}"
                if key in row and key in base:
                    rate = row[key]["throughput"]["videos_per_s"]
                    row[f"{key}_efficiency"] = rate / (n * base[key]["throughput"]["videos_per_s"])
            print(f"scaling {row['gpus']} GPU(s): latency " +
                  ", ".join(f"{k} {v['median']:.3f} s" for k, v in row["latency_s"].items()) + "; serve " +
                  ", ".join(f"{c}: {row[f'serve_{c}']['throughput']['videos_per_s']:.2f} videos/s"
                            for c in (64, 256) if f"serve_{c}" in row))
        doc = {"benchmark": "scaling", "commit": commit, "device": device,
               "command": "ONLY=scaling bash bench/gpu/run.sh (CUDA_VISIBLE_DEVICES=0..n-1: reel bench frames; "
                          "bench/serve/bench_e2e.py --skip-baseline --concurrency 64|256)",
               "workload": "30 s and 5 min 1080p30 H.264, 2 fps sampling; serve: 30 s clip → Qwen2.5-VL-7B "
                           "embeddings (random weights, bf16), CUDA IPC, embedding cache off",
               "runs": scaling}
        json.dump(doc, open(f"bench/results/scaling_{stamp}.json", "w"), indent=2)

    split = []
    for n in (1, 2, 4, 8):
        for clip in ("h264_30s", "h264_5min"):
            row = {"gpus": n, "clip": clip}
            for mode in ("plain", "split"):
                runs = [load(folder, f"split-{n}-{clip}-{mode}-{r}.json") for r in (1, 2, 3)]
                runs = [r for r in runs if r]
                if not runs:
                    continue
                latency = sorted(r["seconds"]["demux"] + r["seconds"]["decode_preprocess"] + r["seconds"]["encode"]
                                 for r in runs)
                row[mode] = {"latency_s": {"median": latency[len(latency) // 2], "runs": latency},
                             "device": runs[0]["device"], "tokens": runs[0]["tokens"]}
            compare = load(folder, f"split-{n}-{clip}-compare.json")
            if "plain" in row and "split" in row:
                row["speedup"] = row["plain"]["latency_s"]["median"] / row["split"]["latency_s"]["median"]
                row["compare"] = compare
                split.append(row)
                print(f"split {n} GPU(s) {clip}: plain {row['plain']['latency_s']['median']:.3f} s, "
                      f"split {row['split']['latency_s']['median']:.3f} s ({row['speedup']:.2f}x); {compare}")
    if split:
        doc = {"benchmark": "split_encode", "commit": commit, "device": device,
               "command": "ONLY=split bash bench/gpu/run.sh (CUDA_VISIBLE_DEVICES=0..n-1: reel embed "
                          "[--split-encode] --device cuda --json, runs 1-3 after a warm-up)",
               "workload": "30 s and 5 min 1080p30 H.264, 2 fps sampling, Qwen2.5-VL-7B vision tower "
                           "(random weights, bf16); latency = demux + decode/preprocess + encode, "
                           "embeddings resident on GPU 0 (the file write is not counted)",
               "runs": split}
        json.dump(doc, open(f"bench/results/split_encode_{stamp}.json", "w"), indent=2)

    one, many, ceiling = (load(folder, f"host-{n}.json") for n in ("frames", "frames-64", "decode"))
    if one and many and ceiling:
        best = max(ceiling[0]["results"], key=lambda x: x["aggregate_fps"])["aggregate_fps"]
        m = many[0]
        us = m["host_cpu"]["us_per_decoded_frame"]
        machine_cores = {1: 16, 2: 32, 4: 64, 8: 128}
        projection = [{"gpus": n, "decode_ceiling_fps": n * best, "host_cores_needed": n * best * us / 1e6,
                       "machine_cores": machine_cores[n]} for n in (1, 2, 4, 8)]
        doc = {"benchmark": "host_cpu", "commit": commit, "device": device,
               "command": "ONLY=host bash bench/gpu/run.sh (reel bench decode --sessions 14; reel bench frames "
                          "--device cuda [--concurrent 64]; host CPU from getrusage per run, median of 3)",
               "workload": "30 s and 5 min 1080p30 H.264, 2 fps sampling, to preprocessed frames on the GPU",
               "single_video": [{"file": os.path.basename(r["file"]), "latency_s": r["latency_s"]["median"],
                                 "host_cpu": r["host_cpu"]} for r in one],
               "concurrent_64": {"aggregate_decoded_fps": m["aggregate_decoded_fps"], "host_cpu": m["host_cpu"],
                                 "decode_ceiling_fps": best},
               "projection": projection,
               "note": "host_cores_needed = GPUs x one GPU's decode ceiling x CPU time per decoded picture at "
                       "64 videos at once; machine_cores = the cores the lent 1/2/4/8-GPU kinds come with"}
        json.dump(doc, open(f"bench/results/host_cpu_{stamp}.json", "w"), indent=2)
        print(f"host CPU: 64 videos at {m['aggregate_decoded_fps']:.0f} fps keep {m['host_cpu']['cores_busy']:.1f} "
              f"cores busy, {us:.0f} us per decoded picture; " +
              ", ".join(f"{p['gpus']} GPUs need {p['host_cores_needed']:.1f} of {p['machine_cores']} cores"
                        for p in projection))

    logical = {}
    for clip in ("h264_30s", "h264_5min"):
        plain, split = load(folder, f"logical-{clip}-plain.json"), load(folder, f"logical-{clip}-split.json")
        if plain and split:
            logical[clip] = {"plain_device": plain["device"], "split_device": split["device"],
                             "tokens": split["tokens"], "compare": load(folder, f"logical-{clip}-compare.json")}
    serve = load(folder, "logical-serve.json")
    if logical or serve:
        doc = {"benchmark": "logical_gpus", "commit": commit, "device": device,
               "command": "ONLY=logical bash bench/gpu/run.sh (REEL_GPUS_PER_DEVICE=2: reel embed --split-encode "
                          "vs reel embed --device cuda:0; bench_e2e.py --serve-arg=--split-encode --serve-arg=true)",
               "what": "the multi-GPU code paths (decode peers, split encoding, a replica per GPU) run on one device "
                       "opened as two GPUs; a correctness run, not a scaling measurement",
               "embed": logical, "serve": serve}
        json.dump(doc, open(f"bench/results/logical_gpus_{stamp}.json", "w"), indent=2)
        for clip, row in logical.items():
            print(f"logical {clip}: {row['split_device']} vs {row['plain_device']}: {row['compare']}")
        if serve:
            print(f"logical serve: {serve['reel']['throughput']['videos_per_s']:.2f} videos/s, "
                  f"{serve['reel'].get('embedding_shapes')}")


if __name__ == "__main__":
    main()
