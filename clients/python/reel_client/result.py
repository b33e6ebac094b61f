"""A reel result: the tensor (embeddings or pixel values) and what describes it."""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, Optional

import numpy as np

#: What a result calls to free its lease on the server: takes the lease id, returns True
#: if the server released it now (the Client's ``release``).
ReleaseLease = Callable[[str], bool]

#: Wire dtype names (reel.v1.Dtype) and their element sizes.
DTYPE_SIZES = {"f32": 4, "f16": 2, "bf16": 2}
# How the bytes are held in numpy: bf16 has no numpy dtype, so it is kept as int16 and
# reinterpreted (torch: .view(torch.bfloat16); numpy(): widened to float32).
_NP_STORAGE = {"f32": np.dtype("<f4"), "f16": np.dtype("<f2"), "bf16": np.dtype("<i2")}


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values held as 16-bit integers, widened exactly to float32 (a copy)."""
    return (bits.astype(np.uint16).astype(np.uint32) << 16).view(np.float32)


class Result:
    """One Embed or Frames result.

    ``tensor`` is ``[tokens, hidden]`` embeddings (Embed) or ``[t*h*w, 1176]`` pixel
    values (Frames). Where it lives depends on :attr:`mode`:

    - ``"shm"``: a private copy-on-write mapping of the server's shared-memory segment;
      the segment's name is unlinked right after mapping, so the memory lives exactly as
      long as the arrays/tensors that view it.
    - ``"cuda_ipc"``: a view into the server's GPU result pool (no copy). It is valid
      only until :meth:`release` (or lease expiry, or the Client closing): the server
      then reuses that memory for other results.
    - ``"inline"``: bytes received in the response, owned by this process.

    Call :meth:`release` (or use ``with``) when done. Do not use the tensor after
    releasing an IPC or SHM result. ``release_lease`` is what frees the lease on the
    server (None: nothing to free there).
    """

    def __init__(
        self,
        *,
        release_lease: Optional[ReleaseLease],
        kind: str,
        mode: str,
        dtype: str,
        shape: tuple,
        nbytes: int,
        grid_thw: tuple,
        second_per_grid_ts: list,
        frame_indices: list,
        timestamps: list,
        timings: dict,
        decoded_on: str,
        lease_id: Optional[str],
        lease_expires_in_s: float,
        array: Optional[np.ndarray] = None,
        cuda: Any = None,
        pool_id: str = "",
        device: Optional[int] = None,
        grid_timestamps: Optional[list] = None,
    ):
        self._release_lease = release_lease
        self.kind = kind  # "embed" | "frames"
        self.mode = mode  # "shm" | "inline" | "cuda_ipc"
        self.dtype = dtype  # "f32" | "bf16" | "f16"
        self.shape = tuple(int(s) for s in shape)
        self.nbytes = int(nbytes)
        self.grid_thw = tuple(int(v) for v in grid_thw)
        self.second_per_grid_ts = [float(v) for v in second_per_grid_ts]
        self.frame_indices = [int(v) for v in frame_indices]
        self.timestamps = [float(v) for v in timestamps]
        # One time per temporal patch (Qwen3-VL's timestamps; vLLM's `timestamps`).
        self.grid_timestamps = [float(v) for v in grid_timestamps or []]
        self.timings = dict(timings)
        self.decoded_on = decoded_on
        self.lease_id = lease_id or None
        self.lease_expires_in_s = float(lease_expires_in_s)
        self.pool_id = pool_id or None
        self.device = device
        self._array = array  # host storage (shm/inline), _NP_STORAGE dtype
        self._cuda = cuda  # _cuda_ipc.CudaArray
        self._tensor = None
        self._released = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ tensors

    @property
    def released(self) -> bool:
        return self._released

    def _check_live(self) -> None:
        if self._released and self.mode == "cuda_ipc":
            raise RuntimeError(
                "this CUDA IPC result was released: its memory belongs to the server again"
            )

    @property
    def tensor(self) -> Any:
        """The result as a torch tensor, without a copy (needs torch)."""
        self._check_live()
        if self._tensor is None:
            try:
                import torch
            except ImportError as e:  # pragma: no cover - exercised without torch
                raise ImportError(
                    "Result.tensor needs torch (pip install 'reel-client[torch]'); "
                    "Result.numpy() works without it"
                ) from e
            if self._cuda is not None:
                self._tensor = self._cuda.to_torch()
            else:
                t = torch.from_numpy(self._array)
                if self.dtype == "bf16":
                    t = t.view(torch.bfloat16)
                self._tensor = t
        return self._tensor

    def numpy(self) -> np.ndarray:
        """The result as a numpy array.

        f32/f16 host results: the zero-copy array itself. bf16: widened to float32 (a
        copy; :attr:`raw` is the zero-copy int16 view of the bits). CUDA IPC: copied to
        the host.
        """
        self._check_live()
        if self._cuda is not None:
            t = self.tensor
            if self.dtype == "bf16":
                t = t.float()
            return t.cpu().numpy()
        if self.dtype == "bf16":
            return bf16_bits_to_f32(self._array)
        return self._array

    @property
    def raw(self) -> np.ndarray:
        """Host results: the zero-copy array as stored (bf16 as int16 bit patterns)."""
        if self._array is None:
            raise TypeError("raw is only available for SHM and INLINE results")
        return self._array

    # --------------------------------------------------------------- metadata

    @property
    def num_tokens(self) -> int:
        return self.shape[0]

    @property
    def video_grid_thw(self) -> Any:
        """``torch.int64`` tensor ``[[t, h, w]]`` (shape [1, 3]), as HF/vLLM expect."""
        import torch

        return torch.tensor([list(self.grid_thw)], dtype=torch.int64)

    # ---------------------------------------------------------------- adapters

    def to_vllm(self) -> dict:
        """vLLM multi-modal data for a precomputed video embedding (``enable_mm_embeds``).

        Use as ``{"prompt": ..., "multi_modal_data": result.to_vllm()}``.
        """
        self._require_embed("to_vllm")
        return {
            "video": {
                "video_embeds": self.tensor,
                "video_grid_thw": self.video_grid_thw,
            }
        }

    def to_sglang(self) -> dict:
        """SGLang's precomputed-embedding item for a video."""
        self._require_embed("to_sglang")
        return dict(
            format="precomputed_embedding",
            feature=self.tensor,
            video_grid_thw=self.video_grid_thw,
        )

    def _require_embed(self, what: str) -> None:
        if self.kind != "embed":
            raise TypeError(f"{what}() needs an Embed result, not pixel values from frames()")

    # ---------------------------------------------------------------- lifetime

    def release(self) -> bool:
        """Frees the server-side memory behind this result (idempotent).

        Returns True if the server released a lease now; False if there was nothing to
        release (INLINE results, already released, expired, or the client closed).
        """
        with self._lock:
            if self._released:
                return False
            self._released = True
        if self.mode == "cuda_ipc":
            # Drop our views first: the memory is the server's again.
            self._tensor = None
            self._cuda = None
        if not self.lease_id or self._release_lease is None:
            return False
        return self._release_lease(self.lease_id)

    def __enter__(self) -> "Result":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def __repr__(self) -> str:
        lease = f", lease={self.lease_id}" if self.lease_id else ""
        return (
            f"Result({self.kind}, shape={self.shape}, dtype={self.dtype}, mode={self.mode}, "
            f"grid_thw={self.grid_thw}, decoded_on={self.decoded_on!r}{lease})"
        )


# ------------------------------------------------------------------ host storage


def map_shm(path: str, dtype: str, shape: tuple, nbytes: int) -> np.ndarray:
    """Maps a shared-memory segment privately (copy-on-write) and unlinks its name.

    The pages stay valid as long as the returned array (or anything viewing it) lives.
    """
    storage = _NP_STORAGE[dtype]
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise FileNotFoundError(
            f"shared-memory segment {path} not found: the client must see the server's "
            "shm folder (same host or a shared /dev/shm; set Client(shm_dir=...) if the "
            "server runs with --shm-dir), and map it before the lease expires. "
            "Use output='inline' across machines."
        ) from None
    if size != nbytes:
        raise ValueError(f"shared-memory segment {path} has {size} bytes, expected {nbytes}")
    try:
        if nbytes == 0:
            arr = np.empty(shape, dtype=storage)
        else:
            arr = np.asarray(np.memmap(path, dtype=storage, mode="c", shape=tuple(shape)))
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return arr


def from_inline(chunks: list, dtype: str, shape: tuple, nbytes: int) -> np.ndarray:
    """Joins INLINE chunks into one writable buffer (one copy) and views it."""
    total = sum(len(c) for c in chunks)
    if total != nbytes:
        raise ValueError(f"inline payload has {total} bytes, the descriptor says {nbytes}")
    buf = bytearray(total)
    view = memoryview(buf)
    pos = 0
    for c in chunks:
        view[pos : pos + len(c)] = c
        pos += len(c)
    return np.frombuffer(buf, dtype=_NP_STORAGE[dtype]).reshape(shape)
