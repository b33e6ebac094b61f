"""The output folder of ``reel transcode`` as a dataset of tensors.

``reel transcode`` writes safetensors shards (``part-00000.safetensors``, ...) and a JSONL
manifest with one row per video: the source, its size and BLAKE3 hash, its status (and
error), the stream info, the sampled frames, ``video_grid_thw``, ``second_per_grid_t``,
and the shard and tensor names of its ``pixel_values`` and/or ``embeddings``,
``video_grid_thw`` and ``timestamps``. Workers of ``--shard i/N`` write
``manifest-0000i-of-0000N.jsonl`` instead; all manifests of the folder are read.

>>> from torch.utils.data import DataLoader
>>> from reel_client import TranscodeDataset, collate_qwen
>>> ds = TranscodeDataset("out/", what="embeddings")
>>> ds[0]["embeddings"].shape                     # (tokens, hidden), zero-copy
>>> for batch in DataLoader(ds, batch_size=8, collate_fn=collate_qwen):
...     batch["video_embeds"], batch["video_grid_thw"]

Needs numpy and safetensors. torch is optional: without it, items hold numpy arrays.
"""

from __future__ import annotations

import functools
import json
import operator
import os
import struct
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .result import bf16_bits_to_f32

#: ``what`` -> the tensor's role in the manifest row's ``tensors`` (and its item key).
_ROLES = {"embeddings": "embeddings", "frames": "pixel_values"}
#: The item key -> the batch key of :func:`collate_qwen` (HF / vLLM names).
_BATCH_KEYS = {"embeddings": "video_embeds", "pixel_values": "pixel_values_videos"}
#: safetensors dtypes and how their bytes are viewed in numpy. bf16 has no numpy dtype:
#: its bits are viewed as int16 (then torch.bfloat16, or widened to float32).
_NP_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<i2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}


class TranscodeFileNotFoundError(FileNotFoundError):
    """A manifest, or a shard that a manifest row names, does not exist.

    ``filename`` is the missing path.
    """

    def __init__(self, message: str, filename: Union[str, Path]):
        super().__init__(message)
        self.filename = str(filename)

    def __str__(self) -> str:
        return str(self.args[0])


class TranscodeFormatError(ValueError):
    """A malformed manifest line, a row without the wanted tensor, or a truncated or
    corrupt shard. ``filename`` is the manifest or shard at fault."""

    def __init__(self, message: str, filename: Union[str, Path]):
        super().__init__(message)
        self.filename = str(filename)


@functools.lru_cache(maxsize=None)
def _torch() -> Any:
    """torch, imported on first use (None when it is not installed)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


class _Shard:
    """One shard, mapped once: every tensor is a view of a private (copy-on-write)
    memory map of the whole file.

    safetensors' ``safe_open`` validates the file (header, dtypes, shapes and offsets that
    cover the data exactly). Its numpy backend copies every tensor it returns, and it does
    not expose the offsets, so they are read from the header here to build zero-copy views.
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise TranscodeFileNotFoundError(
                f"shard {path} not found (named by the manifest): was the output folder "
                "copied without it, or did transcode stop before writing it?",
                path,
            ) from None
        self.tensors, self.data_start, data_end = self._read_header(size)
        if size != self.data_start + data_end:
            state = "truncated" if size < self.data_start + data_end else "longer than its header says"
            raise TranscodeFormatError(
                f"shard {path} is {state}: {size} bytes on disk, its header describes "
                f"{self.data_start + data_end} (an interrupted copy or download?)",
                path,
            )
        try:
            from safetensors import SafetensorError, safe_open
        except ImportError as e:  # pragma: no cover - the tests have safetensors
            raise ImportError("TranscodeDataset needs safetensors (pip install safetensors)") from e
        try:
            with safe_open(str(path), framework="numpy"):
                pass
        except SafetensorError as e:
            raise TranscodeFormatError(f"shard {path} is not a valid safetensors file: {e}", path) from None
        self.map = np.asarray(np.memmap(path, dtype=np.uint8, mode="c"))

    def _read_header(self, size: int) -> Tuple[Dict[str, dict], int, int]:
        """The header's tensor entries (without ``__metadata__``), where the data begins,
        and where the data ends relative to that."""
        with open(self.path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            if n is None or 8 + n > size:
                raise TranscodeFormatError(
                    f"shard {self.path} is truncated: {size} bytes, not even its header is complete",
                    self.path,
                )
            try:
                header = json.loads(f.read(n))
                entries = {k: v for k, v in header.items() if k != "__metadata__"}
                data_end = max((int(v["data_offsets"][1]) for v in entries.values()), default=0)
            except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
                raise TranscodeFormatError(
                    f"shard {self.path} has no valid safetensors header: {e}", self.path
                ) from None
        return entries, 8 + n, data_end

    def array(self, name: str) -> np.ndarray:
        """The tensor ``name`` as a numpy view of the mapping (bf16: its int16 bits)."""
        entry = self.tensors.get(name)
        if entry is None:
            raise TranscodeFormatError(
                f"shard {self.path} has no tensor {name!r} (named by the manifest)", self.path
            )
        dtype = _NP_DTYPES.get(entry["dtype"])
        if dtype is None:
            raise TranscodeFormatError(
                f"shard {self.path}: tensor {name!r} has dtype {entry['dtype']}, which this "
                "reader does not know",
                self.path,
            )
        start, end = entry["data_offsets"]
        raw = self.map[self.data_start + start : self.data_start + end]
        arr = raw.view(dtype).reshape(entry["shape"])
        # safetensors aligns tensors within the data, but not the data to the file:
        # an unaligned view is copied rather than handed to torch.
        return arr if arr.flags.aligned else arr.copy()

    def is_bf16(self, name: str) -> bool:
        return self.tensors[name]["dtype"] == "BF16"


class TranscodeDataset:
    """The videos of a ``reel transcode`` output folder, as tensors.

    ``outdir``: the folder given to ``reel transcode -o`` (all its ``manifest*.jsonl`` are
    read, in name order), or one manifest file. Shards are looked up next to the
    manifest.

    ``what``: ``"embeddings"`` (``[tokens, hidden]``) or ``"frames"`` (the pixel values,
    ``[t*h*w, 1176]``). Every selected row must have it (transcode's ``--what``).

    ``statuses``: the row statuses that make items; every other row (transcode writes
    ``"error"`` for videos that failed) is listed in :attr:`failed` instead. When a
    source has several rows (a rerun retries failed videos, and a file that changed is
    transcoded again), only its last row counts.

    ``backend``: ``"torch"`` or ``"numpy"``; by default torch when it is installed.

    Item ``i`` is a dict:

    - ``"embeddings"`` or ``"pixel_values"``: float32 as transcode writes them (a bf16
      shard gives ``torch.bfloat16``, or float32 in numpy), a zero-copy view of the shard;
    - ``"video_grid_thw"``: int64 ``[1, 3]``;
    - ``"second_per_grid_ts"``: float32 ``[1]``, as HF's processor computes it;
    - ``"frame_indices"`` (int64) and ``"timestamps"`` (float64, seconds): the sampled
      frames;
    - ``"source"``: the video's path as given to transcode;
    - ``"row"``: the manifest row (a dict).

    Shards are opened on first use, once each, and mapped copy-on-write: writing to an
    item's tensor never changes the file. A dataset pickles without its open shards, so
    it works in ``DataLoader`` worker processes.
    """

    def __init__(
        self,
        outdir: Union[str, os.PathLike],
        what: str = "embeddings",
        statuses: Sequence[str] = ("ok",),
        *,
        backend: Optional[str] = None,
    ):
        if what not in _ROLES:
            raise ValueError(f"what must be 'embeddings' or 'frames', not {what!r}")
        if isinstance(statuses, str):
            raise TypeError(f"statuses must be a sequence of statuses, e.g. ({statuses!r},)")
        if backend is None:
            backend = "torch" if _torch() is not None else "numpy"
        elif backend == "torch" and _torch() is None:
            raise ImportError("backend='torch' needs torch (pip install 'reel-client[torch]')")
        elif backend not in ("torch", "numpy"):
            raise ValueError(f"backend must be 'torch' or 'numpy', not {backend!r}")
        self.what = what
        self.role = _ROLES[what]
        self.backend = backend
        self.manifests = self._find_manifests(Path(outdir))
        self.rows: List[dict] = []
        self.failed: List[dict] = []
        self._dirs: List[Path] = []  # the folder of each row's manifest
        for row, manifest in self._last_rows():
            if row.get("status") in statuses:
                self._check_row(row, manifest)
                self.rows.append(row)
                self._dirs.append(manifest.parent)
            else:
                self.failed.append(row)
        self._by_source = {os.path.abspath(r["source"]): i for i, r in enumerate(self.rows)}
        self._shards: Dict[Path, _Shard] = {}

    @staticmethod
    def _find_manifests(outdir: Path) -> List[Path]:
        if outdir.is_file():
            return [outdir]
        manifests = sorted(outdir.glob("manifest*.jsonl")) if outdir.is_dir() else []
        if not manifests:
            raise TranscodeFileNotFoundError(
                f"no transcode manifest (manifest*.jsonl) in {outdir}: is it the folder "
                "given to `reel transcode -o`?",
                outdir / "manifest.jsonl",
            )
        return manifests

    def _last_rows(self) -> List[Tuple[dict, Path]]:
        """The rows of all manifests, the last one per source, in manifest order."""
        last: Dict[str, Tuple[int, dict, Path]] = {}
        order = 0
        for manifest in self.manifests:
            with open(manifest, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                        source = row["source"]
                    except (ValueError, TypeError, KeyError):
                        raise TranscodeFormatError(
                            f"{manifest}:{lineno}: not a manifest row: {line[:200]!r}", manifest
                        ) from None
                    last[source] = (order, row, manifest)
                    order += 1
        return [(row, manifest) for _, row, manifest in sorted(last.values(), key=lambda v: v[0])]

    def _check_row(self, row: dict, manifest: Path) -> None:
        tensors = row.get("tensors") or {}
        missing = [f for f in ("shard", "video_grid_thw", "second_per_grid_t") if row.get(f) is None]
        missing += [f"{r} tensor" for r in (self.role, "video_grid_thw", "timestamps") if r not in tensors]
        if missing:
            hint = " (transcoded with another --what?)" if self.role not in tensors else ""
            raise TranscodeFormatError(
                f"{manifest}: the row of {row['source']} (status {row.get('status')!r}) has no "
                f"{', '.join(missing)}{hint}",
                manifest,
            )

    # ------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        index = operator.index(index)
        if not -len(self.rows) <= index < len(self.rows):
            raise IndexError(f"index {index} out of range for {len(self.rows)} videos")
        index %= len(self.rows)
        row = self.rows[index]
        shard = self._shard(self._dirs[index] / row["shard"])
        names = row["tensors"]
        main = shard.array(names[self.role])
        grid = shard.array(names["video_grid_thw"])
        timestamps = shard.array(names["timestamps"])
        if grid.tolist() != [row["video_grid_thw"]]:
            raise TranscodeFormatError(
                f"shard {shard.path}: {names['video_grid_thw']} is {grid.tolist()}, the manifest "
                f"says {row['video_grid_thw']} for {row['source']}",
                shard.path,
            )
        t, h, w = row["video_grid_thw"]
        # One embedding per 2x2 patches (Qwen2.5-VL's spatial merge), one pixel row per patch.
        rows_expected = t * h * w // (4 if self.role == "embeddings" else 1)
        if main.ndim != 2 or main.shape[0] != rows_expected:
            raise TranscodeFormatError(
                f"shard {shard.path}: {names[self.role]} has shape {main.shape}, grid "
                f"{row['video_grid_thw']} needs {rows_expected} rows",
                shard.path,
            )
        frame_indices = np.asarray(row.get("frame_indices", []), dtype=np.int64)
        seconds = np.asarray([row["second_per_grid_t"]], dtype=np.float32)
        bf16 = shard.is_bf16(names[self.role])
        if self.backend == "torch":
            torch = _torch()
            tensor = torch.from_numpy(main)
            item = {
                self.role: tensor.view(torch.bfloat16) if bf16 else tensor,
                "video_grid_thw": torch.from_numpy(grid),
                "second_per_grid_ts": torch.from_numpy(seconds),
                "frame_indices": torch.from_numpy(frame_indices),
                "timestamps": torch.from_numpy(timestamps),
            }
        else:
            item = {
                self.role: bf16_bits_to_f32(main) if bf16 else main,
                "video_grid_thw": grid,
                "second_per_grid_ts": seconds,
                "frame_indices": frame_indices,
                "timestamps": timestamps,
            }
        item["source"] = row["source"]
        item["row"] = row
        return item

    def __iter__(self) -> Iterator[dict]:
        for i in range(len(self.rows)):
            yield self[i]

    def by_source(self, path: Union[str, os.PathLike]) -> dict:
        """The item of the video transcoded from ``path``.

        Sources are compared as absolute paths; a relative source (transcode records
        paths as it was given them) is taken relative to the current directory.
        Raises KeyError for an unknown source, or one whose row is in :attr:`failed`.
        """
        key = os.path.abspath(os.fspath(path))
        if key in self._by_source:
            return self[self._by_source[key]]
        for row in self.failed:
            if os.path.abspath(row["source"]) == key:
                raise KeyError(
                    f"{path}: status {row.get('status')!r} in the manifest: {row.get('error', '')}"
                )
        raise KeyError(f"{path} is not in the manifest(s) {', '.join(map(str, self.manifests))}")

    def _shard(self, path: Path) -> _Shard:
        shard = self._shards.get(path)
        if shard is None:
            shard = self._shards[path] = _Shard(path)
        return shard

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_shards"] = {}  # memory maps are reopened where the dataset is unpickled
        return state

    def __repr__(self) -> str:
        return (
            f"TranscodeDataset({len(self.rows)} videos, what={self.what!r}, "
            f"{len(self.failed)} failed, backend={self.backend!r})"
        )


def collate_qwen(items: Sequence[dict]) -> dict:
    """Batches items the way Qwen2.5-VL takes several videos: their rows concatenated,
    one ``video_grid_thw`` row and one ``second_per_grid_ts`` value per video.

    Returns ``video_embeds`` (embeddings; the name vLLM and :mod:`reel_client.hf` use) or
    ``pixel_values_videos`` (frames; HF's ``model(...)`` argument), ``video_grid_thw``
    ``[n, 3]``, ``second_per_grid_ts`` ``[n]`` and ``sources``. Use it as a
    ``DataLoader``'s ``collate_fn``. The rows are copied (concatenation).
    """
    if not items:
        raise ValueError("collate_qwen needs at least one item")
    roles = {role for role in _BATCH_KEYS if role in items[0]}
    if len(roles) != 1 or any(role not in item for item in items for role in roles):
        raise ValueError("collate_qwen: every item must have embeddings, or every item pixel_values")
    role = roles.pop()
    torch = _torch()
    if torch is not None and isinstance(items[0][role], torch.Tensor):
        cat = torch.cat
    else:
        cat = np.concatenate
    return {
        _BATCH_KEYS[role]: cat([item[role] for item in items]),
        "video_grid_thw": cat([item["video_grid_thw"] for item in items]),
        "second_per_grid_ts": cat([item["second_per_grid_ts"] for item in items]),
        "sources": [item["source"] for item in items],
    }
