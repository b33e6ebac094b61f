#!/usr/bin/env python3
"""Write expected.json for the video fixtures in this folder.

Called at the end of make_fixtures.sh; can also be run on its own:

    python3 tests/data/video/make_expected.py [FOLDER]

Everything comes from ffprobe / ffmpeg (5.1) run single-threaded
(-threads 1) so that error concealment and frame output are reproducible.
Besides writing expected.json, it asserts that every fixture really has the
property it is meant to exercise (B frames, open GOP, rotation, VFR, VP9
superframes, 10-bit, 4:4:4, ...) and fails loudly otherwise.

Per-file keys (file name -> object):
  size_bytes, error (null or a short string; for files that must fail to
  open nothing else is recorded), stream, packets, frames, framemd5,
  framemd5_pix_fmt, keyframe_pts, and some derived extras:
  keyframe_packets (indices of the key packets; useful for raw streams
  without pts), partial_packets/samples_in_index (h264_truncated.mp4),
  vcl_nal_types (H.264/HEVC: NAL unit type of the first VCL NAL of each
  packet), open_gop (key packets that are not IDR, with the pts of their
  leading pictures), vp9_superframes ([packet index, number of frames]),
  damaged_frames (h264_corrupt.mp4), notes.
"""

import hashlib
import json
import os
import re
import subprocess
import sys

HERE = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(__file__))
NOT_FIXTURES = {"make_fixtures.sh", "make_expected.py", "README.md", "expected.json"}

# Files that must not open.  The strings are informative (what ffprobe 5.1
# says); tests should only rely on "error" being non-null.
ERROR_FILES = {
    "empty.mp4": "empty file",
    "random.bin": "not a media file",
    "h264_nomoov.mp4": "moov atom not found",
}

NOTES = {
    "h264_baseline.mp4": "Constrained Baseline, no B frames, IDR every 15 frames, faststart.",
    "h264_main_bframes.mp4": "Main, 3 B frames with b-pyramid; edit list makes first pts 0 and first dts negative.",
    "h264_high_opengop.mkv": "x264 open-gop: I frames at 25/50/75 are non-IDR (recovery point SEI) but flagged key in Matroska; leading B frames follow them in decode order.",
    "h264_frag.mp4": "Fragmented MP4 (empty moov); no edit list, so pts start at 1024 (2 frames of B delay) instead of 0.",
    "h264.h264": "Raw Annex-B: ffprobe reports no pts/dts at all (N/A) and time_base 1/1200000; frame rate is the demuxer default 25.",
    "h264_odd_size.mp4": "250x142 coded as 256x144 macroblocks with SPS frame cropping.",
    "h264_vfr.mkv": "VFR: 30 frames at 30 fps then 20 frames at 10 fps (time_base 1/1000, ms rounding).",
    "h264_vfr.mp4": "VFR: 30 frames at 30 fps then 20 frames at 10 fps.",
    "h264_rotated.mp4": "Display matrix rotation; display size is 240x320.",
    "h264_longgop.mp4": "Keyframes only at frame 0 and 300 (360 frames).",
    "h264_bt709_full.mp4": "Full range BT.709 in VUI and colr nclx; ffmpeg 5.1 decodes it as yuvj420p.",
    "h264_with_audio.mp4": "Stream 0 is AAC audio, stream 1 is the H.264 video.",
    "h264_corrupt.mp4": "h264_baseline.mp4 with the second half of every slice NAL of frames 30..44 overwritten with random.Random(1234) bytes.",
    "h264_truncated.mp4": "h264_main_bframes.mp4 cut to 55%: moov lists 90 samples, only the first ones are in the file; the last packet read is partial (flagged corrupt).",
    "hevc_main.mp4": "x265 defaults: open GOP (CRA at frame 30 with RASL leading pictures), 4 B frames.",
    "hevc_hev1_frag.mp4": "hev1 (parameter sets in band), fragmented, no edit list.",
    "hevc.hevc": "Raw Annex-B HEVC: no pts/dts (N/A).",
    "vp9.webm": "Two-pass libvpx with alt-ref: some packets are superframes holding a hidden ARF plus a shown frame.",
}


def run(cmd, check=True):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {p.stderr}")
    return p


def ffprobe_json(path, *args):
    return json.loads(run(["ffprobe", "-v", "error", "-threads", "1", *args,
                           "-of", "json", path]).stdout)


def ratio(s):
    n, d = s.split("/")
    return [int(n), int(d)]


def opt_int(v):
    if v is None or v == "N/A":
        return None
    return int(v)


def opt_str(v):
    if v is None or v in ("unknown", "N/A", ""):
        return None
    return v


def hexdump_bytes(dump):
    """Parse ffprobe -show_data output back into bytes."""
    out = bytearray()
    for line in dump.split("\n"):
        if not line:
            continue
        out += bytes.fromhex(line[10:50].replace(" ", ""))
    return bytes(out)


def nal_units(data, annexb):
    """Yield the NAL units (without length prefix / start code)."""
    if annexb:
        starts = [m.end() for m in re.finditer(b"\x00\x00\x01", data)]
        for i, s in enumerate(starts):
            e = starts[i + 1] - 3 if i + 1 < len(starts) else len(data)
            yield data[s:e].rstrip(b"\x00")
    else:
        off = 0
        while off + 4 <= len(data):
            n = int.from_bytes(data[off:off + 4], "big")
            yield data[off + 4:off + 4 + n]  # may be short if truncated
            off += 4 + n


def first_vcl_type(data, codec, annexb):
    for nal in nal_units(data, annexb):
        if not nal:
            continue
        if codec == "h264":
            t = nal[0] & 0x1F
            if 1 <= t <= 5:
                return t
        else:
            t = (nal[0] >> 1) & 0x3F
            if t < 32:
                return t
    return None


def vp9_superframe(data):
    """Number of frames in a VP9 superframe, or None if not a superframe."""
    if not data:
        return None
    b = data[-1]
    if b & 0xE0 != 0xC0:
        return None
    frames = (b & 7) + 1
    mag = ((b >> 3) & 3) + 1
    idx = 2 + mag * frames
    if len(data) >= idx and data[-idx] == b:
        return frames
    return None


def describe(name):
    path = os.path.join(HERE, name)
    entry = {"size_bytes": os.path.getsize(path)}

    probe = run(["ffprobe", "-v", "error", "-show_streams", "-of", "json", path], check=False)
    if name in ERROR_FILES:
        assert probe.returncode != 0, f"{name} was expected to fail to open"
        entry["error"] = ERROR_FILES[name]
        return entry
    assert probe.returncode == 0, f"{name} failed to open: {probe.stderr}"
    entry["error"] = None

    # ---- stream -----------------------------------------------------------
    info = ffprobe_json(path, "-count_frames", "-show_streams")
    vstreams = [s for s in info["streams"] if s["codec_type"] == "video"]
    s = vstreams[0]
    pix_fmt = s["pix_fmt"]
    rotation = 0
    display_matrix = None
    for sd in s.get("side_data_list", []):
        if sd.get("side_data_type") == "Display Matrix":
            rotation = int(sd["rotation"])
            display_matrix = [int(x) for line in sd["displaymatrix"].strip().split("\n")
                              for x in line.split(":")[1].split()]
    stream = {
        "index": s["index"],
        "codec": s["codec_name"],
        "profile": s.get("profile"),
        "width": s["width"],
        "height": s["height"],
        "pix_fmt": pix_fmt,
        "bit_depth": 10 if "10" in pix_fmt else 8,
        "chroma": "444" if "444" in pix_fmt else "420",
        "color_range": opt_str(s.get("color_range")),
        "color_space": opt_str(s.get("color_space")),
        "color_primaries": opt_str(s.get("color_primaries")),
        "color_transfer": opt_str(s.get("color_transfer")),
        "rotation": rotation,
        "time_base": ratio(s["time_base"]),
        "avg_frame_rate": ratio(s["avg_frame_rate"]),
        "r_frame_rate": ratio(s["r_frame_rate"]),
        "duration": float(s["duration"]) if s.get("duration") not in (None, "N/A") else None,
        "nb_frames": opt_int(s.get("nb_frames")),
        "nb_read_frames": opt_int(s.get("nb_read_frames")),
    }
    if display_matrix is not None:
        stream["display_matrix"] = display_matrix
    entry["stream"] = stream

    # ---- packets ----------------------------------------------------------
    pk = ffprobe_json(path, "-select_streams", "v:0", "-show_packets",
                      "-show_data", "-show_data_hash", "MD5")["packets"]
    packets, payloads = [], []
    for i, p in enumerate(pk):
        data = hexdump_bytes(p.get("data", ""))
        md5 = hashlib.md5(data).hexdigest()
        assert p["data_hash"].lower() == "md5:" + md5, (name, i)
        assert len(data) == int(p["size"]), (name, i)
        pos = opt_int(p.get("pos"))
        packets.append([opt_int(p.get("pts")), opt_int(p.get("dts")),
                        pos if pos is None or pos >= 0 else None,
                        int(p["size"]), 1 if "K" in p["flags"] else 0, md5])
        payloads.append(data)
    entry["packets"] = packets

    # ---- frames -----------------------------------------------------------
    fr = ffprobe_json(path, "-select_streams", "v:0", "-show_frames", "-show_entries",
                      "frame=best_effort_timestamp,key_frame,pict_type")["frames"]
    entry["frames"] = [[opt_int(f.get("best_effort_timestamp")), int(f["key_frame"]),
                        f.get("pict_type")] for f in fr]

    md5s = []
    out = run(["ffmpeg", "-nostdin", "-v", "error", "-threads", "1", "-noautorotate",
               "-i", path, "-map", f"0:{s['index']}", "-fps_mode", "passthrough",
               "-pix_fmt", pix_fmt, "-f", "framemd5", "-"]).stdout
    for line in out.splitlines():
        if line and not line.startswith("#"):
            md5s.append(line.split(",")[-1].strip())
    entry["framemd5"] = md5s
    entry["framemd5_pix_fmt"] = pix_fmt
    assert len(md5s) == len(entry["frames"]), (name, len(md5s), len(entry["frames"]))

    entry["keyframe_pts"] = [p[0] for p in packets if p[4]]
    entry["keyframe_packets"] = [i for i, p in enumerate(packets) if p[4]]

    # ---- derived ----------------------------------------------------------
    codec = stream["codec"]
    if codec in ("h264", "hevc"):
        annexb = name.endswith((".h264", ".hevc"))
        types = [first_vcl_type(d, codec, annexb) for d in payloads]
        entry["vcl_nal_types"] = types
        # Key packets that are not IDR (H.264 type 5, HEVC IDR 19/20) and
        # the pictures that follow them in decode order but display before.
        og = []
        for i, p in enumerate(packets):
            t = types[i]
            if not p[4] or t is None or (codec == "h264" and t == 5) or \
                    (codec == "hevc" and t in (19, 20)):
                continue
            # Leading pictures: by pts where there are timestamps, else (raw
            # HEVC) by NAL type RADL/RASL (6..9).  Raw H.264 has neither.
            lead, lead_pk = [], []
            for j in range(i + 1, len(packets)):
                q = packets[j]
                if q[4]:
                    break
                if (q[0] is not None and p[0] is not None and q[0] < p[0]) or \
                        (codec == "hevc" and types[j] in (6, 7, 8, 9)):
                    lead.append(q[0])
                    lead_pk.append(j)
            og.append({"packet": i, "pts": p[0], "nal_type": t,
                       "leading_packets": lead_pk, "leading_pts": lead})
        if og:
            entry["open_gop"] = og
    if codec == "vp9":
        sf = [[i, n] for i, d in enumerate(payloads) if (n := vp9_superframe(d))]
        entry["vp9_superframes"] = sf
    if name in NOTES:
        entry["notes"] = NOTES[name]
    return entry


# ---- property checks -------------------------------------------------------

def reordered(e):
    pts = [p[0] for p in e["packets"]]
    return any(b is not None and a is not None and b < a for a, b in zip(pts, pts[1:]))


def check(exp):
    E = exp
    # B frames / reordering where asked, none where not.
    for n in ["h264_main_bframes.mp4", "h264_high_opengop.mkv", "h264_frag.mp4",
              "h264_longgop.mp4", "hevc_main.mp4", "hevc_main10.mkv",
              "hevc_hev1_frag.mp4", "h264_rotated.mp4"]:
        assert reordered(E[n]), n
        assert "B" in {f[2] for f in E[n]["frames"]}, n
    for n in ["h264.h264", "hevc.hevc"]:
        assert "B" in {f[2] for f in E[n]["frames"]}, n
    for n in ["h264_baseline.mp4", "h264_vfr.mkv", "h264_vfr.mp4"]:
        assert not reordered(E[n]), n
        assert "B" not in {f[2] for f in E[n]["frames"]}, n

    # Profiles, bit depth, chroma.
    assert E["h264_baseline.mp4"]["stream"]["profile"] == "Constrained Baseline"
    assert E["h264_high10.mp4"]["stream"]["profile"] == "High 10"
    assert E["h264_high10.mp4"]["stream"]["bit_depth"] == 10
    assert E["h264_444.mp4"]["stream"]["profile"] == "High 4:4:4 Predictive"
    assert E["h264_444.mp4"]["stream"]["chroma"] == "444"
    assert E["hevc_main10.mkv"]["stream"]["profile"] == "Main 10"
    assert E["hevc_main10.mkv"]["stream"]["bit_depth"] == 10
    assert E["hevc_main10.mkv"]["stream"]["color_space"] == "bt709"
    assert E["vp9_10bit.webm"]["stream"]["profile"] == "Profile 2"
    assert E["vp9_10bit.webm"]["stream"]["bit_depth"] == 10
    assert E["av1.mp4"]["stream"]["codec"] == "av1"
    assert E["vp9.mp4"]["stream"]["codec"] == "vp9"

    # Open GOP: non-IDR keyframes with leading B frames.
    og = E["h264_high_opengop.mkv"]["open_gop"]
    assert len(og) == 3 and all(o["nal_type"] == 1 for o in og), og
    assert sum(1 for o in og if o["leading_pts"]) >= 2, og
    og = E["hevc_main.mp4"]["open_gop"]
    assert og and all(o["nal_type"] == 21 and o["leading_pts"] for o in og), og

    # Keyframe spacing.
    assert len(E["h264_baseline.mp4"]["keyframe_pts"]) == 4
    assert len(E["h264_longgop.mp4"]["keyframe_pts"]) == 2
    assert len(E["h264_longgop.mp4"]["frames"]) == 360

    # VFR: 50 frames, 33 ms then 100 ms spacing.
    for n in ["h264_vfr.mkv", "h264_vfr.mp4"]:
        ts = [f[0] for f in E[n]["frames"]]
        tb = E[n]["stream"]["time_base"]
        d = [(b - a) * tb[0] / tb[1] for a, b in zip(ts, ts[1:])]
        assert len(ts) == 50, n
        assert all(abs(x - 1 / 30) < 0.002 for x in d[:30]), (n, d)
        assert all(abs(x - 0.1) < 0.002 for x in d[30:]), (n, d)

    # Rotation.
    assert E["h264_rotated.mp4"]["stream"]["rotation"] in (90, -90)

    # Colour.
    st = E["h264_bt709_full.mp4"]["stream"]
    assert st["color_range"] == "pc" and st["color_space"] == "bt709", st
    assert st["color_primaries"] == "bt709" and st["color_transfer"] == "bt709", st
    data = open(os.path.join(HERE, "h264_bt709_full.mp4"), "rb").read()
    i = data.find(b"colrnclx")
    assert i > 0 and data[i + 8:i + 15] == b"\x00\x01\x00\x01\x00\x01\x80", "colr box"

    # Odd size.
    st = E["h264_odd_size.mp4"]["stream"]
    assert (st["width"], st["height"]) == (250, 142)

    # Track selection.
    assert E["h264_with_audio.mp4"]["stream"]["index"] == 1

    # VP9 superframes (hidden alt-ref + shown frame in one packet).
    assert E["vp9.webm"]["vp9_superframes"], "no superframes in vp9.webm"
    assert len(E["vp9.webm"]["frames"]) == len(E["vp9.webm"]["packets"])

    # Corrupt: frames outside 30..44 are identical to the clean file.
    a, b = E["h264_baseline.mp4"]["framemd5"], E["h264_corrupt.mp4"]["framemd5"]
    assert len(a) == len(b) == 60
    diff = [i for i in range(60) if a[i] != b[i]]
    assert diff and all(30 <= i <= 44 for i in diff), diff
    assert E["h264_corrupt.mp4"]["packets"][:30] == E["h264_baseline.mp4"]["packets"][:30]

    # Truncated: fewer packets than the moov claims, the last one partial.
    t = E["h264_truncated.mp4"]
    assert t["stream"]["nb_frames"] == 90 and len(t["packets"]) < 90
    assert t["partial_packets"] == [len(t["packets"]) - 1], t["partial_packets"]
    assert t["packets"][:-1] == E["h264_main_bframes.mp4"]["packets"][:len(t["packets"]) - 1]


def dump(obj, ind=0):
    """Compact, diff-friendly JSON: lists of lists/strings one item per line."""
    pad = " " * (ind + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad}{json.dumps(k)}: {dump(v, ind + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * ind + "}"
    if isinstance(obj, list) and obj and (
            any(isinstance(x, (list, dict)) for x in obj) or all(isinstance(x, str) for x in obj)):
        items = [pad + (dump(x, ind + 1) if isinstance(x, dict) else json.dumps(x)) for x in obj]
        return "[\n" + ",\n".join(items) + "\n" + " " * ind + "]"
    return json.dumps(obj)


def main():
    names = sorted(n for n in os.listdir(HERE)
                   if n not in NOT_FIXTURES and os.path.isfile(os.path.join(HERE, n)))
    exp = {}
    for n in names:
        print("probing", n, file=sys.stderr)
        exp[n] = describe(n)
    # Frames decoded from the garbled samples of h264_corrupt.mp4 (no B
    # frames, so frame index == sample index).
    exp["h264_corrupt.mp4"]["damaged_frames"] = list(range(30, 45))
    # h264_truncated.mp4 has the moov of h264_main_bframes.mp4: packets that
    # ffprobe returns shorter than the indexed sample size were cut by EOF.
    t, full = exp["h264_truncated.mp4"], exp["h264_main_bframes.mp4"]
    t["partial_packets"] = [i for i, (a, b) in enumerate(zip(t["packets"], full["packets"]))
                            if a[3] != b[3]]
    t["samples_in_index"] = len(full["packets"])
    check(exp)
    with open(os.path.join(HERE, "expected.json"), "w") as f:
        f.write(dump(exp) + "\n")


if __name__ == "__main__":
    main()
