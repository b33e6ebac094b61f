"""The reel gRPC client."""

from __future__ import annotations

import math
import os
import re
import socket
import threading
from typing import Any, Iterable, NamedTuple, Optional, Sequence, Union

import grpc

from . import _cuda_ipc
from ._errors import ReelError
from ._proto import reel_pb2 as pb
from ._proto import reel_pb2_grpc as pb_grpc
from .result import DTYPE_SIZES, Result, from_inline, map_shm

_UNSET: Any = object()


class _TensorRpc(NamedTuple):
    """A streaming RPC that answers with a tensor: its method name on the stub, the
    request message it takes, and the :attr:`Result.kind` of its results."""

    method: str
    request: type
    kind: str


_EMBED = _TensorRpc("Embed", pb.EmbedRequest, "embed")
_FRAMES = _TensorRpc("Frames", pb.FramesRequest, "frames")

_OUTPUTS = {
    "auto": None,  # decided by the client, see Client._output_mode
    "server": pb.OUTPUT_MODE_UNSPECIFIED,  # the server picks: CUDA_IPC on a GPU, else SHM
    "shm": pb.OUTPUT_MODE_SHM,
    "inline": pb.OUTPUT_MODE_INLINE,
    "cuda_ipc": pb.OUTPUT_MODE_CUDA_IPC,
    "ipc": pb.OUTPUT_MODE_CUDA_IPC,
}
_MODE_NAMES = {
    pb.OUTPUT_MODE_SHM: "shm",
    pb.OUTPUT_MODE_INLINE: "inline",
    pb.OUTPUT_MODE_CUDA_IPC: "cuda_ipc",
}
_COLORS = {
    "reference": pb.COLOR_CONVERSION_REFERENCE,
    "accurate": pb.COLOR_CONVERSION_ACCURATE,
}

_DTYPES = {
    "native": pb.DTYPE_UNSPECIFIED,
    "f32": pb.DTYPE_F32,
    "float32": pb.DTYPE_F32,
    "float": pb.DTYPE_F32,
    "bf16": pb.DTYPE_BF16,
    "bfloat16": pb.DTYPE_BF16,
    "f16": pb.DTYPE_F16,
    "float16": pb.DTYPE_F16,
    "half": pb.DTYPE_F16,
}
_DTYPE_NAMES = {pb.DTYPE_F32: "f32", pb.DTYPE_BF16: "bf16", pb.DTYPE_F16: "f16"}

# A segment name as the server makes them ("reel-<hex id>"); anything else is refused
# so that a misbehaving server cannot make the client unlink other files.
_SHM_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")

# Channel options: results arrive in 4 MiB chunks plus metadata and uploads can be as
# large as the server's inline limit, so lift grpc's 4 MiB message limits.
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", -1),
    ("grpc.max_send_message_length", -1),
]


def _is_local_target(target: str) -> bool:
    """True for unix sockets and loopback/this-host addresses (SHM and IPC can work)."""
    t = target.strip()
    if t.startswith(("unix:", "unix-abstract:")):
        return True
    for prefix in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if t.startswith(prefix):
            t = t[len(prefix) :]
            break
    if t.startswith("["):
        host = t[1 : t.find("]")] if "]" in t else t[1:]
    elif t.count(":") == 1:
        host = t.split(":", 1)[0]
    elif t.count(":") > 1:
        host = t  # bare IPv6 without port
    else:
        host = t
    host = host.lower()
    if host in ("localhost", "::1", "", "0.0.0.0", "::", "ip6-localhost"):
        return True
    if host.startswith("127."):
        return True
    try:
        return host in (socket.gethostname().lower(), socket.getfqdn().lower())
    except OSError:  # pragma: no cover
        return False


def _enum(value: Any, table: dict, what: str) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    key = str(value).lower()
    if key.startswith("torch."):
        key = key[len("torch.") :]
    if key not in table:
        raise ValueError(f"unknown {what} {value!r}; one of {sorted(table)}")
    return table[key]


class Client:
    """A connection to a ``reel serve`` process.

    ``target``: ``"host:port"`` or ``"unix:/path/to/socket"``. ``token``: the server's
    bearer token (sent as ``authorization: Bearer <token>``). ``timeout``: default
    deadline in seconds for every call (None: no deadline); each call can override it.
    ``shm_dir``: the folder the server writes shared-memory results to (its
    ``--shm-dir``; default ``$REEL_SHM_DIR`` or ``/dev/shm``).

    Closing the client (or leaving its ``with`` block) closes the connection, which makes
    the server free every lease handed out on it: SHM mappings already made stay valid,
    CUDA IPC results do not.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        token: Optional[str] = None,
        timeout: Optional[float] = None,
        *,
        shm_dir: Optional[str] = None,
        options: Optional[Sequence[tuple]] = None,
    ):
        self.target = target
        self.timeout = timeout
        self.shm_dir = shm_dir or os.environ.get("REEL_SHM_DIR") or "/dev/shm"
        opts = list(_CHANNEL_OPTIONS)
        if target.startswith(("unix:", "unix-abstract:")):
            # grpc-core sends the socket path, percent-encoded, as :authority
            # ("tmp%2Freel.sock"); the server's HTTP/2 stack (h2) rejects that with
            # RST_STREAM PROTOCOL_ERROR. Any valid authority will do.
            opts.append(("grpc.default_authority", "localhost"))
        if options:
            opts = [o for o in opts if o[0] not in {k for k, _ in options}] + list(options)
        self._channel = grpc.insecure_channel(target, options=opts)
        self._stub = pb_grpc.ReelStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._pools = _cuda_ipc.PoolCache()
        self._info: Optional[pb.InfoResponse] = None
        self._lock = threading.Lock()
        self._closed = False
        self._local = _is_local_target(target)

    # ----------------------------------------------------------------- calls

    def _timeout(self, timeout: Any) -> Optional[float]:
        return self.timeout if timeout is _UNSET else timeout

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this reel Client is closed")

    def info(self, *, timeout: Any = _UNSET) -> pb.InfoResponse:
        """What the server has: version, GPUs, codecs, models, limits, media roots
        (a ``reel.v1.InfoResponse`` message)."""
        self._check_open()
        deadline = self._timeout(timeout)
        try:
            info = self._stub.Info(pb.InfoRequest(), timeout=deadline, metadata=self._metadata)
        except grpc.RpcError as e:
            raise ReelError.from_rpc(e, "Info", deadline is not None) from None
        self._info = info
        return info

    def release(self, lease_id: str, *, timeout: Any = _UNSET) -> bool:
        """Frees a lease now. False if it does not exist (released, expired, or freed
        because its connection closed) or this client is closed."""
        if self._closed or not lease_id:
            return False
        deadline = self._timeout(timeout)
        try:
            resp = self._stub.Release(
                pb.ReleaseRequest(lease_id=lease_id), timeout=deadline, metadata=self._metadata
            )
        except grpc.RpcError as e:
            if self._closed:
                return False
            raise ReelError.from_rpc(e, "Release", deadline is not None) from None
        return bool(resp.released)

    def embed(
        self,
        path: Union[str, os.PathLike, None] = None,
        data: Any = None,
        filename: Optional[str] = None,
        *,
        fps: Optional[float] = None,
        min_frames: Optional[int] = None,
        max_frames: Optional[int] = None,
        nframes: Optional[int] = None,
        frames: Optional[Iterable[int]] = None,
        timestamps: Optional[Iterable[float]] = None,
        start: Optional[float] = None,
        end: Optional[float] = None,
        min_pixels: Optional[float] = None,
        max_pixels: Optional[float] = None,
        total_pixels: Optional[float] = None,
        resized_height: Optional[int] = None,
        resized_width: Optional[int] = None,
        color: str = "reference",
        model: str = "",
        output: str = "auto",
        dtype: str = "native",
        timeout: Any = _UNSET,
    ) -> Result:
        """Embeds a video with the vision tower of the server's model ``model`` (empty: its
        default), preprocessed as that model's processor does.

        The video is ``path`` (a file under one of the server's media roots, absolute
        or relative to the first root, as seen by the server) or ``data`` (the file's
        bytes, or a binary file object; ``filename`` helps recognize raw .h264/.hevc
        streams). Sampling arguments follow the model's processor (unset: its defaults;
        qwen-vl-utils' for Qwen2.5-VL, ``Qwen3VLVideoProcessor``'s for the Qwen3-VL family).
        ``color``: "reference" (the frames OpenCV and PyAV read from the same
        file: what the models saw) or "accurate" (the signalled matrix and range in
        floating point, bilinear chroma).
        ``output``: "auto" (CUDA IPC when the server has a GPU and this process has
        torch with CUDA, SHM for other local servers, INLINE for remote ones), "shm",
        "inline", "cuda_ipc" or "server" (let the server pick). ``dtype``: "native"
        (the server's: its tower's dtype, e.g. bf16 on a GPU, which CUDA IPC hands over
        without a conversion), "f32", "bf16" or "f16".

        Returns a :class:`Result` with ``tensor`` ``[t*h*w/4, width]``: ``out_hidden``
        wide, or for Qwen3-VL towers with deepstack the main embeddings and each deepstack
        feature packed side by side (``Info`` lists the parts), and ``grid_timestamps``
        (one time per temporal patch).
        """
        return self._run(_EMBED, locals())

    def frames(
        self,
        path: Union[str, os.PathLike, None] = None,
        data: Any = None,
        filename: Optional[str] = None,
        *,
        fps: Optional[float] = None,
        min_frames: Optional[int] = None,
        max_frames: Optional[int] = None,
        nframes: Optional[int] = None,
        frames: Optional[Iterable[int]] = None,
        timestamps: Optional[Iterable[float]] = None,
        start: Optional[float] = None,
        end: Optional[float] = None,
        min_pixels: Optional[float] = None,
        max_pixels: Optional[float] = None,
        total_pixels: Optional[float] = None,
        resized_height: Optional[int] = None,
        resized_width: Optional[int] = None,
        color: str = "reference",
        model: str = "",
        output: str = "auto",
        dtype: str = "native",
        timeout: Any = _UNSET,
    ) -> Result:
        """Samples and preprocesses a video: ``tensor`` is the pixel values
        ``[t*h*w, 1176]`` a Qwen2.5-VL vision tower takes (HF's ``pixel_values_videos``).
        Arguments as :meth:`embed`."""
        return self._run(_FRAMES, locals())

    # ---------------------------------------------------------------- internals

    def _request(self, message: type, a: dict) -> Union[pb.EmbedRequest, pb.FramesRequest]:
        """The ``message`` (EmbedRequest or FramesRequest: same fields) for the arguments
        ``a`` of :meth:`embed` / :meth:`frames`."""
        path, data, filename = a["path"], a["data"], a["filename"]
        if (path is None) == (data is None):
            raise ValueError("give exactly one of path= (on the server) or data= (bytes)")
        source = pb.Source()
        if path is not None:
            source.path = os.fspath(path)
        else:
            if hasattr(data, "read"):
                data = data.read()
            source.data = data if isinstance(data, bytes) else bytes(data)
            if filename:
                source.filename_hint = os.path.basename(os.fspath(filename))
        s = pb.Sampling()
        for name in (
            "fps",
            "start",
            "end",
            "min_pixels",
            "max_pixels",
            "total_pixels",
        ):
            if a[name] is not None:
                v = float(a[name])
                if not math.isfinite(v):
                    raise ValueError(f"{name} must be finite, got {a[name]!r}")
                setattr(s, name, v)
        for name in ("min_frames", "max_frames", "nframes"):
            if a[name] is not None:
                setattr(s, name, int(a[name]))
        if a["frames"] is not None:
            s.frames.extend(int(f) for f in a["frames"])
        if a["timestamps"] is not None:
            s.timestamps.extend(float(t) for t in a["timestamps"])
        rh, rw = a["resized_height"], a["resized_width"]
        if (rh is None) != (rw is None):
            raise ValueError("give both resized_height and resized_width, or neither")
        if rh is not None:
            s.resized_height, s.resized_width = int(rh), int(rw)
        s.color = _enum(a["color"], _COLORS, "color")
        return message(
            source=source,
            sampling=s,
            model=a["model"] or "",
            output=self._output_mode(a["output"]),
            dtype=_enum(a["dtype"], _DTYPES, "dtype"),
        )

    def _output_mode(self, output: Any) -> int:
        mode = _enum(output, _OUTPUTS, "output")
        if mode is not None:
            return mode
        if not self._local:
            return pb.OUTPUT_MODE_INLINE
        info = self._info or self.info()
        if info.gpus and _torch_cuda_available():
            return pb.OUTPUT_MODE_CUDA_IPC
        return pb.OUTPUT_MODE_SHM

    def _run(self, rpc: _TensorRpc, args: dict) -> Result:
        """Calls ``rpc`` with the arguments ``args`` of :meth:`embed` / :meth:`frames`,
        gathers its response stream and returns the Result (its lease released again if
        the result cannot be made)."""
        self._check_open()
        req = self._request(rpc.request, args)
        method = rpc.method
        first = None
        chunks: list = []
        last = False
        deadline = self._timeout(args["timeout"])
        try:
            stream = getattr(self._stub, method)(req, timeout=deadline, metadata=self._metadata)
            for resp in stream:
                if first is None:
                    first = resp
                if resp.inline_chunk:
                    chunks.append(resp.inline_chunk)
                if resp.last:
                    last = True
        except grpc.RpcError as e:
            raise ReelError.from_rpc(e, method, deadline is not None) from None
        if first is None or not first.HasField("tensor"):
            raise ReelError(grpc.StatusCode.INTERNAL, "the server sent no result", method)
        lease = first.tensor.lease_id
        try:
            return self._result(rpc, first, chunks, last)
        except BaseException:
            if lease:
                try:
                    self.release(lease)
                except Exception:  # noqa: BLE001 - the original error matters more
                    pass
            raise

    def _result(self, rpc: _TensorRpc, first: Any, chunks: list, last: bool) -> Result:
        """The Result of ``rpc``'s response stream: ``first`` is its first response (the
        descriptor and metadata), ``chunks`` the INLINE payload parts in order, ``last``
        whether the final part arrived."""
        method = rpc.method
        d = first.tensor
        mode = _MODE_NAMES.get(d.mode)
        if mode is None:
            raise ReelError(grpc.StatusCode.INTERNAL, f"unknown output mode {d.mode}", method)
        dtype = _DTYPE_NAMES.get(d.dtype)
        if dtype is None:
            raise ReelError(grpc.StatusCode.INTERNAL, f"unknown dtype {d.dtype}", method)
        shape = tuple(int(v) for v in d.shape)
        expected = DTYPE_SIZES[dtype]
        for s in shape:
            expected *= s
        if expected != d.nbytes:
            raise ReelError(
                grpc.StatusCode.INTERNAL,
                f"descriptor shape {shape} {dtype} needs {expected} bytes, nbytes is {d.nbytes}",
                method,
            )
        array = cuda = None
        if mode == "inline":
            if not last:
                raise ReelError(
                    grpc.StatusCode.DATA_LOSS, "the inline payload ended before its last part", method
                )
            array = from_inline(chunks, dtype, shape, d.nbytes)
        elif mode == "shm":
            if not _SHM_NAME.match(d.shm_name) or d.shm_name in (".", ".."):
                raise ReelError(
                    grpc.StatusCode.INTERNAL, f"refusing shared-memory name {d.shm_name!r}", method
                )
            array = map_shm(os.path.join(self.shm_dir, d.shm_name), dtype, shape, d.nbytes)
        else:
            if len(d.cuda_ipc_handle) != _cuda_ipc.IPC_HANDLE_SIZE:
                raise ReelError(
                    grpc.StatusCode.INTERNAL,
                    f"CUDA IPC handle of {len(d.cuda_ipc_handle)} bytes (expected 64)",
                    method,
                )
            pool = self._pools.get(d.pool_id, bytes(d.cuda_ipc_handle), d.device)
            cuda = pool.view(d.offset, shape, dtype)
        t = first.timings
        timings = {
            "demux_s": t.demux_s,
            "decode_preprocess_s": t.decode_preprocess_s,
            "encode_s": t.encode_s,
            "publish_s": t.publish_s,
            "queue_s": t.queue_s,
            "total_s": t.total_s,
        }
        return Result(
            release_lease=self.release,
            kind=rpc.kind,
            mode=mode,
            dtype=dtype,
            shape=shape,
            nbytes=d.nbytes,
            grid_thw=tuple(first.video_grid_thw),
            second_per_grid_ts=list(first.second_per_grid_ts),
            frame_indices=list(first.frame_indices),
            timestamps=list(first.timestamps),
            grid_timestamps=list(first.grid_timestamps),
            timings=timings,
            decoded_on=first.decoded_on,
            lease_id=d.lease_id,
            lease_expires_in_s=d.lease_expires_in_s,
            array=array,
            cuda=cuda,
            pool_id=d.pool_id,
            device=d.device if mode == "cuda_ipc" else None,
        )

    # ----------------------------------------------------------------- lifetime

    @property
    def ipc_pools(self) -> _cuda_ipc.PoolCache:
        """The CUDA IPC pools this client opened (each pool id once)."""
        return self._pools

    def close(self) -> None:
        """Closes the connection; the server then frees this connection's leases."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._pools.clear()
        self._channel.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.target!r}{', closed' if self._closed else ''})"


def _torch_cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False
