#!/usr/bin/env bash
# Generate the small video fixtures in this folder with the REAL encoders
# (libx264, libx265, libvpx-vp9, libaom-av1 through ffmpeg), then write
# expected.json from ffprobe/ffmpeg output (make_expected.py).
#
#   bash tests/data/video/make_fixtures.sh
#
# Made with ffmpeg 5.1 (Debian 12: ffmpeg 5.1.x, libx264 0.164, libx265 3.5,
# libvpx 1.12, libaom 3.6).  Other versions will produce different bytes;
# regenerate expected.json together with the fixtures.
#
# Determinism: every encoder runs single threaded (-threads 1, x265
# pools=none:frame-threads=1, vp9/av1 row-mt 0), all sources are synthetic
# lavfi sources, muxers run with -fflags +bitexact and -map_metadata -1 (no
# encoder version string, no creation time, fixed Matroska UIDs), and the
# garbage used for the damaged/random files comes from Python's
# random.Random with fixed seeds.  With the same ffmpeg/encoder builds a
# re-run gives identical bytes for every file (checked with sha256sum on two
# runs).  Note that libx264 and libx265 still write their version and option
# string into an SEI message, so a different x264/x265 build changes bytes.
# None of the encoders used is known to be non-reproducible when single
# threaded; the one soft spot is swscale's RGB->YUV conversion (mandelbrot,
# and the explicit scale filters), whose SIMD paths could in principle differ
# between CPUs.  Regenerate expected.json whenever the fixtures change.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

# Common flags.
FF=(ffmpeg -nostdin -hide_banner -loglevel error -y)
# Output side: no metadata, bitexact muxing, bitexact encoding where supported.
BX=(-map_metadata -1 -fflags +bitexact -flags:v +bitexact)
X264=(-c:v libx264 -threads 1 -preset medium)
# x265: single threaded, quiet; callers append their own keys after this.
X265P="pools=none:frame-threads=1:log-level=error"

# lavfi source helper: src SIZE RATE DURATION [SOURCE]
src() {
    local kind="${4:-testsrc2}"
    if [ "$kind" = mandelbrot ]; then   # no duration option: trim instead
        echo "${kind}=size=$1:rate=$2,trim=duration=$3"
    else
        echo "${kind}=size=$1:rate=$2:duration=$3"
    fi
}

echo "== H.264"

# Constrained Baseline: no B frames, IDR every 15 frames, moov first.
"${FF[@]}" -f lavfi -i "$(src 320x240 30 2)" -an \
    "${X264[@]}" -profile:v baseline -pix_fmt yuv420p -b:v 200k \
    -g 15 -keyint_min 15 -sc_threshold 0 \
    -movflags +faststart "${BX[@]}" h264_baseline.mp4

# Main with B frames (3, b-pyramid default=normal), closed GOP of 30.
"${FF[@]}" -f lavfi -i "$(src 320x240 30 3)" -an \
    "${X264[@]}" -profile:v main -pix_fmt yuv420p -b:v 200k \
    -bf 3 -g 30 -sc_threshold 0 \
    -movflags +faststart "${BX[@]}" h264_main_bframes.mp4

# High, open GOP: I frames after the first are non-IDR (recovery point SEI)
# and are followed in decode order by B frames that display before them.
"${FF[@]}" -f lavfi -i "$(src 352x288 25 4)" -an \
    "${X264[@]}" -profile:v high -pix_fmt yuv420p -b:v 250k \
    -bf 3 -g 25 -x264-params open-gop=1:scenecut=0 \
    "${BX[@]}" h264_high_opengop.mkv

# Fragmented MP4 (empty moov, one moof per keyframe).
"${FF[@]}" -f lavfi -i "$(src 320x240 30 3)" -an \
    "${X264[@]}" -profile:v high -pix_fmt yuv420p -b:v 200k \
    -bf 2 -g 30 -sc_threshold 0 \
    -movflags frag_keyframe+empty_moov+default_base_moof "${BX[@]}" h264_frag.mp4

# Raw Annex-B elementary stream (no container, no timestamps).
"${FF[@]}" -f lavfi -i "$(src 320x240 25 2)" -an \
    "${X264[@]}" -profile:v main -pix_fmt yuv420p -b:v 200k \
    -bf 2 -g 25 -sc_threshold 0 \
    "${BX[@]}" -f h264 h264.h264

# Odd size: 250x142 is coded as 256x144 with SPS frame cropping.
"${FF[@]}" -f lavfi -i "$(src 250x142 30 1 mandelbrot)" -an \
    "${X264[@]}" -profile:v high -pix_fmt yuv420p -b:v 200k \
    -movflags +faststart "${BX[@]}" h264_odd_size.mp4

# Variable frame rate: frames 0..29 at 30 fps (1 s), then every 3rd frame of
# the 30 fps source (10 fps) for 2 s; timestamps are kept (-fps_mode vfr).
# 30 + 20 = 50 frames.
VFR_VF="select='lt(n\,30)+not(mod(n\,3))'"
for ext in mkv mp4; do
    "${FF[@]}" -f lavfi -i "$(src 320x240 30 3)" -an -vf "$VFR_VF" -fps_mode vfr \
        "${X264[@]}" -profile:v high -pix_fmt yuv420p -b:v 200k \
        -bf 0 -g 30 -sc_threshold 0 \
        "${BX[@]}" "h264_vfr.$ext"
done

# Rotation: encode, then stream-copy with rotate=90 stream metadata; the
# ffmpeg 5.1 mov muxer turns it into a tkhd display matrix.
"${FF[@]}" -f lavfi -i "$(src 320x240 30 1)" -an \
    "${X264[@]}" -profile:v main -pix_fmt yuv420p -b:v 200k -bf 2 -g 30 \
    "${BX[@]}" "$TMP/rot_src.mp4"
"${FF[@]}" -i "$TMP/rot_src.mp4" -map 0:v:0 -c copy -metadata:s:v:0 rotate=90 \
    -movflags +faststart "${BX[@]}" h264_rotated.mp4

# Long GOP: 12 s = 360 frames, keyframes at 0 and 300 only.
"${FF[@]}" -f lavfi -i "$(src 160x120 30 12)" -an \
    "${X264[@]}" -profile:v high -pix_fmt yuv420p -b:v 60k \
    -bf 3 -g 300 -keyint_min 300 -sc_threshold 0 \
    -movflags +faststart "${BX[@]}" h264_longgop.mp4

# Full range BT.709, tagged in the SPS VUI and in the mp4 'colr' box.  The
# pixels are really converted to full range BT.709 (scale filter).
"${FF[@]}" -f lavfi -i "$(src 320x240 30 2 smptehdbars)" -an \
    -vf "scale=out_color_matrix=bt709:out_range=full,format=yuv420p" \
    "${X264[@]}" -profile:v high -pix_fmt yuv420p -b:v 150k \
    -color_range pc -colorspace bt709 -color_primaries bt709 -color_trc bt709 \
    -movflags +faststart+write_colr "${BX[@]}" h264_bt709_full.mp4

# High 10 (10-bit 4:2:0).
"${FF[@]}" -f lavfi -i "$(src 320x240 30 1)" -an \
    "${X264[@]}" -profile:v high10 -pix_fmt yuv420p10le -b:v 250k \
    -movflags +faststart "${BX[@]}" h264_high10.mp4

# High 4:4:4 Predictive (8-bit 4:4:4).
"${FF[@]}" -f lavfi -i "$(src 320x240 30 1)" -an \
    "${X264[@]}" -profile:v high444 -pix_fmt yuv444p -b:v 300k \
    -movflags +faststart "${BX[@]}" h264_444.mp4

# Audio first (stream 0 = AAC), video second (stream 1 = H.264).
"${FF[@]}" -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=1" \
    -f lavfi -i "$(src 320x240 30 1)" \
    -map 0:a:0 -map 1:v:0 \
    -c:a aac -b:a 64k -ac 1 -flags:a +bitexact \
    "${X264[@]}" -profile:v main -pix_fmt yuv420p -b:v 200k -g 30 \
    -movflags +faststart "${BX[@]}" h264_with_audio.mp4

echo "== HEVC"

# x265 defaults: open GOP (CRA), 4 B frames, b-pyramid.
"${FF[@]}" -f lavfi -i "$(src 320x240 30 2)" -an \
    -c:v libx265 -pix_fmt yuv420p -b:v 200k -tag:v hvc1 \
    -x265-params "$X265P:keyint=30:min-keyint=30:scenecut=0" \
    -movflags +faststart "${BX[@]}" hevc_main.mp4

"${FF[@]}" -f lavfi -i "$(src 320x240 24 2)" -an \
    -vf "scale=out_color_matrix=bt709:out_range=limited,format=yuv420p10le" \
    -c:v libx265 -pix_fmt yuv420p10le -b:v 200k \
    -color_range tv -colorspace bt709 -color_primaries bt709 -color_trc bt709 \
    -x265-params "$X265P:keyint=24:min-keyint=24:scenecut=0" \
    "${BX[@]}" hevc_main10.mkv

"${FF[@]}" -f lavfi -i "$(src 256x144 30 2)" -an \
    -c:v libx265 -pix_fmt yuv420p -b:v 150k -tag:v hev1 \
    -x265-params "$X265P:keyint=30:min-keyint=30:scenecut=0" \
    -movflags frag_keyframe+empty_moov+default_base_moof "${BX[@]}" hevc_hev1_frag.mp4

"${FF[@]}" -f lavfi -i "$(src 256x144 25 2)" -an \
    -c:v libx265 -pix_fmt yuv420p -b:v 150k \
    -x265-params "$X265P:keyint=25:min-keyint=25:scenecut=0:bframes=3" \
    "${BX[@]}" -f hevc hevc.hevc

echo "== VP9"

VPX=(-c:v libvpx-vp9 -threads 1 -row-mt 0 -tile-columns 0 -frame-parallel 0
     -deadline good -cpu-used 4 -auto-alt-ref 1 -lag-in-frames 25)
# Good deadline, alt-ref frames on (lag 25): the hidden ARF is packed with the
# next shown frame into a superframe.  libvpx 1.12 does not place alt-ref
# frames in one-pass mode (all 60 packets were plain frames), so this one is
# two-pass (the first-pass stats file lives in $TMP).
for pass in 1 2; do
    if [ $pass = 1 ]; then out=(-f null -); else out=("${BX[@]}" vp9.webm); fi
    "${FF[@]}" -f lavfi -i "$(src 320x240 30 2)" -an \
        "${VPX[@]}" -pix_fmt yuv420p -b:v 200k -g 30 \
        -pass $pass -passlogfile "$TMP/vp9pass" "${out[@]}"
done

# Profile 2 (10-bit 4:2:0).
"${FF[@]}" -f lavfi -i "$(src 320x240 30 1)" -an \
    "${VPX[@]}" -pix_fmt yuv420p10le -profile:v 2 -b:v 250k -g 30 \
    "${BX[@]}" vp9_10bit.webm

# VP9 in ISO BMFF ('vp09' sample entry + 'vpcC').
"${FF[@]}" -f lavfi -i "$(src 320x240 30 1)" -an \
    "${VPX[@]}" -pix_fmt yuv420p -b:v 200k -g 30 \
    -movflags +faststart "${BX[@]}" vp9.mp4

echo "== AV1"

# libaom realtime usage, speed 8 ('av01' sample entry + 'av1C').
"${FF[@]}" -f lavfi -i "$(src 160x120 30 1)" -an \
    -c:v libaom-av1 -usage realtime -cpu-used 8 -threads 1 -row-mt 0 \
    -tile-columns 0 -tile-rows 0 -pix_fmt yuv420p -b:v 100k -g 30 \
    -movflags +faststart "${BX[@]}" av1.mp4

echo "== Broken files"

# h264_corrupt.mp4: h264_baseline.mp4 with the slice data of frames 30..44
# (the 3rd GOP; baseline has no B frames so decode order = display order)
# garbled.  Inside each of those samples the 4-byte AVCC length prefixes,
# the NAL header and the first half of every VCL NAL (slice header and the
# first macroblocks) are kept; the second half of each VCL NAL payload is
# overwritten with bytes from random.Random(1234).  The moov box, the sample
# sizes and all other samples are untouched.
python3 - h264_baseline.mp4 h264_corrupt.mp4 <<'EOF'
import json, random, subprocess, sys
src, dst = sys.argv[1], sys.argv[2]
data = bytearray(open(src, "rb").read())
out = subprocess.run(
    ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_packets",
     "-show_entries", "packet=pts,pos,size", "-of", "json", src],
    check=True, capture_output=True, text=True).stdout
pkts = json.loads(out)["packets"]
assert len(pkts) == 60, len(pkts)
rng = random.Random(1234)
for i, p in enumerate(pkts):
    if not 30 <= i <= 44:
        continue
    assert int(p["pts"]) == int(pkts[1]["pts"]) * i  # decode == display order
    pos, size = int(p["pos"]), int(p["size"])
    off = pos
    while off < pos + size:
        n = int.from_bytes(data[off:off + 4], "big")
        nal = off + 4
        if data[nal] & 0x1F in (1, 5):  # coded slice (non-IDR / IDR)
            start = nal + n // 2
            data[start:nal + n] = rng.randbytes(nal + n - start)
        off = nal + n
    assert off == pos + size
open(dst, "wb").write(bytes(data))
EOF

# Faststart file (moov first) cut to 55%: the index lists samples past EOF.
size=$(stat -c %s h264_main_bframes.mp4)
head -c $((size * 55 / 100)) h264_main_bframes.mp4 > h264_truncated.mp4

# Non-faststart file (mdat first, moov last) cut to 70%: no moov at all.
"${FF[@]}" -f lavfi -i "$(src 320x240 30 3)" -an \
    "${X264[@]}" -profile:v main -pix_fmt yuv420p -b:v 200k \
    -bf 3 -g 30 -sc_threshold 0 "${BX[@]}" "$TMP/nomoov_src.mp4"
size=$(stat -c %s "$TMP/nomoov_src.mp4")
head -c $((size * 70 / 100)) "$TMP/nomoov_src.mp4" > h264_nomoov.mp4

: > empty.mp4
python3 -c 'import random,sys; sys.stdout.buffer.write(random.Random(7).randbytes(4096))' > random.bin

echo "== expected.json"
python3 "$HERE/make_expected.py" "$HERE"

ls -l "$HERE"
du -sb "$HERE"
