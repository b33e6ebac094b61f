"""TranscodeDataset and collate_qwen on the output of a real ``reel transcode`` run, checked
bit for bit against ``reel embed`` and ``reel frames`` on the same videos."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import PACKAGE, TINY_MODEL, VIDEO_DIR, reel_bin
from reel_client import (
    TranscodeDataset,
    TranscodeFileNotFoundError,
    TranscodeFormatError,
    collate_qwen,
)
from reel_client.result import bf16_bits_to_f32

try:
    import torch
except ImportError:
    torch = None

GOOD = ["av1.mp4", "h264_rotated.mp4", "hevc_hev1_frag.mp4", "vp9.webm", "h264.h264"]
# The fixtures that must fail to open (tests/data/video/README.md). random.bin has no
# video extension, so it is named explicitly rather than found in a folder.
BAD = ["empty.mp4", "h264_nomoov.mp4", "random.bin"]
# Small frames keep the run fast; every reel command below gets the same sampling.
SAMPLING = ["--device", "cpu", "--min-pixels", "3136", "--max-pixels", "20000"]


def transcode(out: Path, *inputs, what: str = "both", expect: int = 0, extra=()) -> dict:
    cmd = [str(reel_bin()), "transcode", *map(str, inputs), "-o", str(out), "--what", what,
           "--json", *SAMPLING, *extra]
    if what != "frames":
        cmd += ["--model", str(TINY_MODEL)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == expect, f"{cmd} exited with {proc.returncode}:\n{proc.stderr}"
    return json.loads(proc.stdout)


def reel_single(command: str, video: str, out: Path) -> dict:
    """``reel embed`` / ``reel frames`` of one video: its safetensors tensors."""
    cmd = [str(reel_bin()), command, video, "-o", str(out), *SAMPLING]
    if command == "embed":
        cmd += ["--model", str(TINY_MODEL)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    return load_file(str(out))


def manifest_rows(out: Path, name: str = "manifest.jsonl") -> list:
    return [json.loads(line) for line in (out / name).read_text().splitlines()]


def as_numpy(value):
    if torch is not None and isinstance(value, torch.Tensor):
        return value.numpy()
    return value


@pytest.fixture(scope="module")
def transcoded(tmp_path_factory) -> Path:
    """GOOD and BAD transcoded with frames and embeddings, about two videos per shard."""
    out = tmp_path_factory.mktemp("transcode") / "out"
    summary = transcode(out, *(VIDEO_DIR / v for v in GOOD + BAD), expect=2,
                        extra=["--shard-size", "2MiB"])
    assert (summary["ok"], summary["failed"]) == (len(GOOD), len(BAD))
    return out


@pytest.fixture(params=["numpy", "torch"])
def backend(request) -> str:
    if request.param == "torch" and torch is None:
        pytest.skip("torch is not installed")
    return request.param


def tensor_type(backend: str) -> type:
    return torch.Tensor if backend == "torch" else np.ndarray


# ------------------------------------------------------------------ the real output


def test_every_ok_row_loads(transcoded, backend):
    rows = manifest_rows(transcoded)
    ok = [r for r in rows if r["status"] == "ok"]
    shards = [r["shard"] for r in ok]
    # The fixture is meant to cover several shards, some holding more than one video.
    assert len(set(shards)) > 1 and len(set(shards)) < len(shards), shards
    for what, key in (("embeddings", "embeddings"), ("frames", "pixel_values")):
        ds = TranscodeDataset(transcoded, what=what, backend=backend)
        assert len(ds) == len(ok) == len(GOOD)
        assert sorted(Path(s).name for s in (item["source"] for item in ds)) == sorted(GOOD)
        for row, item in zip(ok, ds):
            assert item["row"] == row and item["source"] == row["source"]
            for k in (key, "video_grid_thw", "second_per_grid_ts", "frame_indices", "timestamps"):
                assert isinstance(item[k], tensor_type(backend)), k
            other = "pixel_values" if key == "embeddings" else "embeddings"
            assert other not in item
            t, h, w = row["video_grid_thw"]
            tokens = t * h * w // 4 if key == "embeddings" else t * h * w
            assert tuple(item[key].shape) == (tokens, 96 if key == "embeddings" else 1176)
            assert as_numpy(item[key]).dtype == np.float32
            grid = as_numpy(item["video_grid_thw"])
            assert grid.dtype == np.int64 and grid.tolist() == [[t, h, w]]
            assert as_numpy(item["frame_indices"]).tolist() == row["frame_indices"]
            assert as_numpy(item["timestamps"]).tolist() == row["timestamps"]
            assert as_numpy(item["second_per_grid_ts"]).tolist() == [row["second_per_grid_t"]]
        assert [it["source"] for it in ds] == [ds[i]["source"] for i in range(-len(ds), 0)]
        with pytest.raises(IndexError):
            ds[len(ds)]


def test_default_backend_follows_torch(transcoded):
    ds = TranscodeDataset(transcoded)
    assert ds.what == "embeddings"
    assert ds.backend == ("numpy" if torch is None else "torch")
    assert isinstance(ds[0]["embeddings"], tensor_type(ds.backend))


def test_works_when_torch_cannot_be_imported(transcoded):
    """Without torch the dataset and collate_qwen run on numpy."""
    script = f"""
import sys
sys.modules["torch"] = None  # `import torch` now raises ImportError
sys.path.insert(0, {str(PACKAGE)!r})
import numpy as np
from reel_client import TranscodeDataset, collate_qwen
ds = TranscodeDataset({str(transcoded)!r}, what="frames")
assert ds.backend == "numpy", ds.backend
items = list(ds)
assert all(type(it["pixel_values"]) is np.ndarray for it in items)
batch = collate_qwen(items)
assert type(batch["pixel_values_videos"]) is np.ndarray
print(len(items), batch["pixel_values_videos"].shape[0])
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    ds = TranscodeDataset(transcoded, what="frames", backend="numpy")
    assert proc.stdout.split() == [str(len(GOOD)), str(sum(it["pixel_values"].shape[0] for it in ds))]


def test_embeddings_equal_reel_embed(transcoded, backend, tmp_path):
    ds = TranscodeDataset(transcoded, what="embeddings", backend=backend)
    singles = {}
    for i, item in enumerate(ds):
        single = reel_single("embed", item["source"], tmp_path / f"e{i}.safetensors")
        got = as_numpy(item["embeddings"])
        assert got.dtype == single["embeddings"].dtype == np.float32
        assert got.shape == single["embeddings"].shape
        assert got.tobytes() == single["embeddings"].tobytes(), item["source"]
        assert as_numpy(item["video_grid_thw"]).tolist() == single["video_grid_thw"].tolist()
        assert as_numpy(item["frame_indices"]).tolist() == single["frame_indices"].tolist()
        assert as_numpy(item["timestamps"]).tobytes() == single["timestamps"].tobytes()
        assert as_numpy(item["second_per_grid_ts"]).tolist() == single["second_per_grid_ts"].tolist()
        singles[item["source"]] = single["embeddings"]
    # Control: the comparison tells the videos apart.
    a, b = list(singles.values())[:2]
    assert a.tobytes() != b.tobytes()


def test_frames_equal_reel_frames(transcoded, backend, tmp_path):
    ds = TranscodeDataset(transcoded, what="frames", backend=backend)
    for i, item in enumerate(ds):
        single = reel_single("frames", item["source"], tmp_path / f"f{i}.safetensors")
        got = as_numpy(item["pixel_values"])
        assert got.shape == single["pixel_values"].shape
        assert got.tobytes() == single["pixel_values"].tobytes(), item["source"]
        assert as_numpy(item["video_grid_thw"]).tolist() == single["video_grid_thw"].tolist()
    # Control: the comparison tells the videos apart.
    assert as_numpy(ds[0]["pixel_values"]).tobytes() != as_numpy(ds[1]["pixel_values"]).tobytes()


def test_items_are_views_of_the_shards_and_copy_on_write(transcoded):
    ds = TranscodeDataset(transcoded, what="frames", backend="numpy")
    first, again = ds[0]["pixel_values"], ds[0]["pixel_values"]
    assert not first.flags.owndata and np.shares_memory(first, again)
    value = float(first[0, 0])
    first[0, 0] = value + 1.0  # private pages: the file is unchanged
    fresh = TranscodeDataset(transcoded, what="frames", backend="numpy")
    assert float(fresh[0]["pixel_values"][0, 0]) == value


def test_failed_rows_are_listed_not_returned(transcoded):
    ds = TranscodeDataset(transcoded)
    assert sorted(Path(r["source"]).name for r in ds.failed) == sorted(BAD)
    assert all(r["status"] == "error" and r["error"] for r in ds.failed)
    returned = {Path(item["source"]).name for item in ds}
    assert returned.isdisjoint(BAD)
    with pytest.raises(KeyError, match="empty input"):
        ds.by_source(VIDEO_DIR / "empty.mp4")
    # Selecting failed rows as items: they have no tensors.
    with pytest.raises(TranscodeFormatError, match="has no shard"):
        TranscodeDataset(transcoded, statuses=("ok", "error"))


def test_by_source(transcoded, monkeypatch):
    ds = TranscodeDataset(transcoded, what="frames", backend="numpy")
    item = ds.by_source(VIDEO_DIR / "vp9.webm")
    assert Path(item["source"]).name == "vp9.webm"
    assert ds.by_source(f"{VIDEO_DIR}/../video/./vp9.webm")["source"] == item["source"]
    monkeypatch.chdir(VIDEO_DIR)
    assert ds.by_source("vp9.webm")["source"] == item["source"]
    with pytest.raises(KeyError, match="not in the manifest"):
        ds.by_source("h264_baseline.mp4")


def test_collate_qwen(transcoded, backend):
    ds = TranscodeDataset(transcoded, what="embeddings", backend=backend)
    items = [ds[0], ds[2], ds[1]]
    batch = collate_qwen(items)
    assert set(batch) == {"video_embeds", "video_grid_thw", "second_per_grid_ts", "sources"}
    expected = np.concatenate([as_numpy(it["embeddings"]) for it in items])
    assert as_numpy(batch["video_embeds"]).tobytes() == expected.tobytes()
    assert as_numpy(batch["video_grid_thw"]).tolist() == [it["row"]["video_grid_thw"] for it in items]
    assert as_numpy(batch["second_per_grid_ts"]).tolist() == [it["row"]["second_per_grid_t"] for it in items]
    assert batch["sources"] == [it["source"] for it in items]
    if backend == "torch":
        assert batch["video_grid_thw"].dtype == torch.int64
        assert batch["second_per_grid_ts"].dtype == torch.float32
    frames = collate_qwen(list(TranscodeDataset(transcoded, what="frames", backend=backend)))
    assert frames["pixel_values_videos"].shape[0] == sum(
        int(np.prod(r["video_grid_thw"])) for r in ds.rows
    )
    with pytest.raises(ValueError):
        collate_qwen([])
    with pytest.raises(ValueError, match="every item"):
        collate_qwen([ds[0], TranscodeDataset(transcoded, what="frames", backend=backend)[1]])


def test_dataloader_and_pickling(transcoded):
    if torch is None:
        pytest.skip("torch is not installed")
    from torch.utils.data import DataLoader

    ds = TranscodeDataset(transcoded)
    ds[0]  # opens a shard; a pickled copy must not carry it
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[0]["embeddings"], ds[0]["embeddings"])
    batches = list(DataLoader(ds, batch_size=2, collate_fn=collate_qwen, num_workers=2))
    assert [len(b["sources"]) for b in batches] == [2, 2, 1]
    assert torch.equal(batches[1]["video_embeds"], torch.cat([ds[2]["embeddings"], ds[3]["embeddings"]]))


# ------------------------------------------------------------------ damaged output


@pytest.fixture
def damaged(transcoded, tmp_path) -> Path:
    """A private copy of the transcode output, to break."""
    out = tmp_path / "out"
    shutil.copytree(transcoded, out)
    return out


def test_missing_manifest(tmp_path):
    with pytest.raises(TranscodeFileNotFoundError, match=re.escape(str(tmp_path))) as e:
        TranscodeDataset(tmp_path)
    assert isinstance(e.value, FileNotFoundError)
    with pytest.raises(FileNotFoundError, match="no transcode manifest"):
        TranscodeDataset(tmp_path / "absent")


def test_truncated_shard(damaged):
    ds = TranscodeDataset(damaged)
    shard = ds.rows[0]["shard"]
    path = damaged / shard
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 100)
    ds = TranscodeDataset(damaged)  # shards are opened lazily
    with pytest.raises(TranscodeFormatError, match=f"{shard} is truncated: {size - 100} bytes") as e:
        ds[0]
    assert isinstance(e.value, ValueError) and e.value.filename == str(path)
    others = [i for i, r in enumerate(ds.rows) if r["shard"] != shard]
    assert others and all(ds[i]["embeddings"].shape[0] > 0 for i in others)
    with open(path, "r+b") as f:
        f.truncate(4)
    with pytest.raises(TranscodeFormatError, match="not even its header"):
        TranscodeDataset(damaged)[0]


def test_corrupt_shard_header(damaged):
    shard = TranscodeDataset(damaged).rows[0]["shard"]
    path = damaged / shard
    data = bytearray(path.read_bytes())
    n = struct.unpack("<Q", data[:8])[0]
    header = data[8 : 8 + n].decode()
    # Same length, but a shape that does not fit the tensor's bytes: safetensors refuses it.
    name = next(k for k in json.loads(header) if k.endswith(".timestamps"))
    bad = header.replace(f'"{name}":{{"dtype":"F64","shape":[4]', f'"{name}":{{"dtype":"F64","shape":[5]')
    assert bad != header and len(bad) == len(header)
    data[8 : 8 + n] = bad.encode()
    path.write_bytes(bytes(data))
    with pytest.raises(TranscodeFormatError, match=f"{shard} is not a valid safetensors file"):
        TranscodeDataset(damaged)[0]


def test_missing_shard_and_tensor(damaged):
    rows = manifest_rows(damaged)
    first_ok = next(r for r in rows if r["status"] == "ok")
    (damaged / first_ok["shard"]).unlink()
    ds = TranscodeDataset(damaged)
    with pytest.raises(TranscodeFileNotFoundError, match=f"shard .*{first_ok['shard']} not found") as e:
        ds[0]
    assert isinstance(e.value, FileNotFoundError)
    assert e.value.filename == str(damaged / first_ok["shard"])

    other = next(r for r in rows if r.get("shard") not in (None, first_ok["shard"]))
    shutil.copy(damaged / other["shard"], damaged / first_ok["shard"])  # the wrong shard
    with pytest.raises(TranscodeFormatError, match=f"{first_ok['shard']} has no tensor '{first_ok['tensors']['embeddings']}'"):
        TranscodeDataset(damaged)[0]


def test_malformed_manifest_and_wrong_what(damaged, tmp_path):
    manifest = damaged / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:2] + ['{"source": "x.mp4", "stat'] + lines[2:]) + "\n")
    with pytest.raises(TranscodeFormatError, match=r"manifest.jsonl:3: not a manifest row"):
        TranscodeDataset(damaged)

    frames_only = tmp_path / "frames-only"
    transcode(frames_only, VIDEO_DIR / "av1.mp4", what="frames")
    assert len(TranscodeDataset(frames_only, what="frames")) == 1
    with pytest.raises(TranscodeFormatError, match="has no embeddings tensor .*another --what"):
        TranscodeDataset(frames_only, what="embeddings")
    with pytest.raises(ValueError, match="what must be"):
        TranscodeDataset(frames_only, what="pixels")


def test_grid_mismatch_is_reported(damaged):
    manifest = damaged / "manifest.jsonl"
    rows = manifest_rows(damaged)
    first_ok = next(r for r in rows if r["status"] == "ok")
    first_ok["video_grid_thw"] = [first_ok["video_grid_thw"][0] * 2, *first_ok["video_grid_thw"][1:]]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(TranscodeFormatError, match="video_grid_thw is .* the manifest says"):
        TranscodeDataset(damaged)[0]


# ------------------------------------------------------------------ manifests over runs


def test_reruns_keep_the_last_row_per_source(tmp_path):
    """A rerun retries failed videos (appending rows); the last row of a source counts."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(VIDEO_DIR / "empty.mp4", inputs / "x.mp4")
    shutil.copy(VIDEO_DIR / "av1.mp4", inputs / "y.mp4")
    out = tmp_path / "out"
    transcode(out, inputs, what="frames", expect=2)
    transcode(out, inputs, what="frames", expect=2)  # x fails again, y is skipped
    assert [(Path(r["source"]).name, r["status"]) for r in manifest_rows(out)] == [
        ("x.mp4", "error"), ("y.mp4", "ok"), ("x.mp4", "error")
    ]
    ds = TranscodeDataset(out, what="frames")
    assert [Path(r["source"]).name for r in ds.failed] == ["x.mp4"]
    assert [Path(it["source"]).name for it in ds] == ["y.mp4"]

    shutil.copy(VIDEO_DIR / "vp9.webm", inputs / "x.mp4")  # fixed
    transcode(out, inputs, what="frames")
    ds = TranscodeDataset(out, what="frames")
    assert ds.failed == []
    assert [Path(it["source"]).name for it in ds] == ["y.mp4", "x.mp4"]
    assert ds.by_source(inputs / "x.mp4")["row"]["stream"]["codec"] == "vp9"


def test_shard_workers_share_a_folder(tmp_path):
    """`--shard i/N` workers write manifest-0000i-of-0000N.jsonl: all are read."""
    out = tmp_path / "out"
    videos = [VIDEO_DIR / v for v in GOOD]
    for i in range(2):
        transcode(out, *videos, what="frames", extra=["--shard", f"{i}/2"])
    names = sorted(p.name for p in out.glob("manifest*.jsonl"))
    assert names == ["manifest-00000-of-00002.jsonl", "manifest-00001-of-00002.jsonl"]
    ds = TranscodeDataset(out, what="frames")
    assert sorted(Path(it["source"]).name for it in ds) == sorted(GOOD)
    sources = []
    for name in names:  # a single manifest file
        one = TranscodeDataset(out / name, what="frames")
        assert [it["source"] for it in one] == [r["source"] for r in manifest_rows(out, name)]
        sources += [it["source"] for it in one]
    assert sources == [it["source"] for it in ds]


# ------------------------------------------------------------------ bf16 shards


def write_safetensors(path: Path, tensors: dict) -> None:
    """A safetensors file by hand: {name: (dtype, shape, bytes)}."""
    header, offset = {}, 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(t[2] for t in tensors.values()))


def test_bf16_shard(tmp_path, backend):
    """transcode writes float32, but a bf16 shard must come back as torch.bfloat16."""
    values = np.array([[1.0, -2.5, 3.140625, 0.0], [65280.0, -0.0078125, 7.0, 1e-3]], np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16)  # truncation to bf16
    grid = np.array([[1, 2, 4]], np.int64)
    write_safetensors(tmp_path / "part-00000.safetensors", {
        "k.embeddings": ("BF16", [2, 4], bits.tobytes()),
        "k.video_grid_thw": ("I64", [1, 3], grid.tobytes()),
        "k.timestamps": ("F64", [2], np.array([0.0, 0.5]).tobytes()),
    })
    row = {"source": "v.mp4", "size": 1, "hash": "k", "status": "ok", "frame_indices": [0, 1],
           "timestamps": [0.0, 0.5], "video_grid_thw": [1, 2, 4], "second_per_grid_t": 1.0,
           "shard": "part-00000.safetensors",
           "tensors": {"embeddings": "k.embeddings", "video_grid_thw": "k.video_grid_thw",
                       "timestamps": "k.timestamps"}}
    (tmp_path / "manifest.jsonl").write_text(json.dumps(row) + "\n")
    emb = TranscodeDataset(tmp_path, backend=backend)[0]["embeddings"]
    expected = bf16_bits_to_f32(bits)
    assert expected[1, 3] != np.float32(1e-3)  # the values were really rounded to bf16
    if backend == "torch":
        assert emb.dtype == torch.bfloat16
        assert emb.view(torch.int16).numpy().tobytes() == bits.tobytes()
        assert emb.float().numpy().tobytes() == expected.tobytes()
    else:
        assert emb.dtype == np.float32 and emb.tobytes() == expected.tobytes()
