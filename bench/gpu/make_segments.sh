#!/usr/bin/env bash
# Encodes the benchmark segments: 6 s of 1080p30 H.264 and HEVC at ~6 Mb/s with 2 s closed
# GOPs and B-frames, as raw Annex-B streams. The GPU machines have no FFmpeg and their
# H100/H200s no NVENC, so these travel with the call and bench/gpu/run.sh concatenates them
# (each starts with its parameter sets and an IDR picture, so the result is a valid stream)
# into 30 s and 5 min clips.
set -euo pipefail
out=${1:-.carry/clips}
mkdir -p "$out"
src="testsrc2=size=1920x1080:rate=30,format=yuv420p"
# Moving noise on top of the test pattern keeps the encoder honest at 6 Mb/s.
vf="noise=alls=12:allf=t"
if [ ! -f "$out/seg_h264.h264" ]; then
  ffmpeg -v error -y -f lavfi -i "$src" -t 6 -vf "$vf" -c:v libx264 -preset medium -b:v 6M -maxrate 6M \
    -bufsize 12M -g 60 -keyint_min 60 -sc_threshold 0 -bf 3 -x264-params open-gop=0 -f h264 "$out/seg_h264.h264"
fi
if [ ! -f "$out/seg_hevc.hevc" ]; then
  ffmpeg -v error -y -f lavfi -i "$src" -t 6 -vf "$vf" -c:v libx265 -preset medium -b:v 6M \
    -x265-params "keyint=60:min-keyint=60:scenecut=0:open-gop=0:bframes=3:vbv-maxrate=6000:vbv-bufsize=12000:log-level=error" \
    -f hevc "$out/seg_hevc.hevc"
fi
ls -la "$out"
