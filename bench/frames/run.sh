#!/usr/bin/env bash
# `reel frames` against the qwen-vl-utils CPU pipeline, same clips, same cores.
# Usage: bench/frames/run.sh [python-with-qwen-vl-utils]   (default: python3; make one with
# bench/frames/setup_peer.sh)
# Writes bench/results/frames_cpu_<date>.json and prints a summary.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${1:-python3}
THREADS=${THREADS:-$(nproc)}
ITER=${ITER:-5}
work=bench/work
mkdir -p "$work" bench/results
clip=$work/h264_1080p30_30s.mp4
if [ ! -f "$clip" ]; then
  # 30 s of 1080p30 H.264 at ~6 Mb/s with 2 s GOPs (x264 medium, B-frames).
  ffmpeg -v error -y -f lavfi -i "testsrc2=size=1920x1080:rate=30,format=yuv420p" -t 30 \
    -c:v libx264 -preset medium -b:v 6M -maxrate 6M -bufsize 12M -g 60 -keyint_min 60 \
    -sc_threshold 0 -bf 3 -movflags +faststart "$clip"
fi
fixtures=(tests/data/video/h264_main_bframes.mp4 tests/data/video/hevc_main.mp4 tests/data/video/vp9.webm)
cargo build --release -q
reel_json=$(./target/release/reel bench frames "$clip" "${fixtures[@]}" --threads "$THREADS" --iterations "$ITER")
peer_json=$($PY bench/frames/peer_qwen.py "$clip" "${fixtures[@]}" --threads "$THREADS" --iterations "$ITER")
out=bench/results/frames_cpu_$(date +%Y%m%d).json
python3 - "$out" "$THREADS" <<PYEOF
import json, platform, subprocess, sys
reel = json.loads('''$reel_json'''); peer = json.loads('''$peer_json''')
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
rows = []
for r, p in zip(reel, peer):
    rows.append({"file": r["file"], "reel": r, "qwen_vl_utils": p,
                 "speedup_latency": p["latency_s"]["median"] / r["latency_s"]["median"]})
doc = {"benchmark": "frames_cpu", "commit": subprocess.check_output(["git", "rev-parse", "HEAD"]).decode().strip(),
       "device": f"cpu: {cpu}, {sys.argv[2]} threads", "command": "bench/frames/run.sh", "results": rows}
json.dump(doc, open(sys.argv[1], "w"), indent=2)
print(f"{'clip':48} {'reel s':>8} {'peer s':>8} {'speedup':>8}")
for row in rows:
    print(f"{row['file'][-48:]:48} {row['reel']['latency_s']['median']:8.3f} {row['qwen_vl_utils']['latency_s']['median']:8.3f} {row['speedup_latency']:7.2f}x")
print("wrote", sys.argv[1])
PYEOF
