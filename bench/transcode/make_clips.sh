#!/usr/bin/env bash
# Makes the 20 distinct clips of the transcode benchmark with the real encoders (x264,
# x265): H.264 and HEVC, MP4 and MKV, 360p to 1080p, 2 to 8 s, synthetic scenes.
# bench/gpu/run.sh copies each 10 times into a 200-video dataset.
#   bench/transcode/make_clips.sh OUTDIR
set -euo pipefail
out=${1:?usage: make_clips.sh OUTDIR}
mkdir -p "$out"
sizes=(640x360 1280x720 1920x1080 960x540 1280x720)
i=0
for codec in libx264 libx265; do
  for k in 0 1 2 3 4 5 6 7 8 9; do
    size=${sizes[$((k % 5))]}
    dur=$((2 + (k * 3) % 7))
    ext=$([ $((k % 2)) -eq 0 ] && echo mp4 || echo mkv)
    src=$([ $((k % 3)) -eq 0 ] && echo "mandelbrot=size=$size:rate=30" || echo "testsrc2=size=$size:rate=30")
    f="$out/clip$(printf %02d $i)_${codec#lib}_${size}_${dur}s.$ext"
    [ -f "$f" ] || ffmpeg -loglevel error -y -f lavfi -i "$src" -t "$dur" -pix_fmt yuv420p \
      -c:v "$codec" -preset veryfast -b:v 600k -g 60 \
      $([ "$codec" = libx265 ] && echo "-tag:v hvc1 -x265-params log-level=error") "$f"
    i=$((i + 1))
  done
done
du -sh "$out"
