"""Opening a reel server's CUDA IPC result pool and viewing results in it as tensors.

The server exports one device allocation (its pool) with ``cudaIpcGetMemHandle``; each
CUDA_IPC result is a byte range of it. A process opens the pool's 64-byte handle once
(``cudaIpcOpenMemHandle``), which maps the whole pool into its address space, and views
every result at ``base + offset`` without a copy.

The handle is opened through CuPy when it is importable, otherwise through ctypes on the
CUDA runtime library that torch uses (or the one named by ``REEL_CUDART``). Both use the
device's primary context, the one torch uses, so the pointer is valid for torch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys
import threading
import weakref
from typing import Any, Callable, Optional, Sequence

#: cudaIpcMemLazyEnablePeerAccess: enable peer access lazily when the pool lives on
#: another GPU than the one that reads it.
IPC_MEM_LAZY_ENABLE_PEER_ACCESS = 1
IPC_HANDLE_SIZE = 64

# typestr for __cuda_array_interface__; bf16 travels as int16 and is reinterpreted.
_TYPESTR = {"f32": "<f4", "f16": "<f2", "bf16": "<i2"}


class CudaIpcError(RuntimeError):
    """The CUDA runtime refused to open or close a pool handle."""


# --------------------------------------------------------------------------- backends


class _CupyBackend:
    name = "cupy"

    def __init__(self, cupy_module: Any):
        self._cp = cupy_module

    def open(self, handle: bytes, device: int) -> int:
        rt = self._cp.cuda.runtime
        with self._cp.cuda.Device(device):
            return int(rt.ipcOpenMemHandle(handle, IPC_MEM_LAZY_ENABLE_PEER_ACCESS))

    def close(self, ptr: int, device: int) -> None:
        with self._cp.cuda.Device(device):
            self._cp.cuda.runtime.ipcCloseMemHandle(ptr)


class _IpcHandleStruct(ctypes.Structure):
    _fields_ = [("reserved", ctypes.c_char * IPC_HANDLE_SIZE)]


class _CtypesBackend:
    name = "ctypes"

    def __init__(self, lib: Any, path: str = ""):
        self.lib = lib
        self.path = path
        lib.cudaIpcOpenMemHandle.argtypes = [
            ctypes.POINTER(ctypes.c_void_p),
            _IpcHandleStruct,
            ctypes.c_uint,
        ]
        lib.cudaIpcOpenMemHandle.restype = ctypes.c_int
        lib.cudaIpcCloseMemHandle.argtypes = [ctypes.c_void_p]
        lib.cudaIpcCloseMemHandle.restype = ctypes.c_int
        lib.cudaSetDevice.argtypes = [ctypes.c_int]
        lib.cudaSetDevice.restype = ctypes.c_int
        lib.cudaGetDevice.argtypes = [ctypes.POINTER(ctypes.c_int)]
        lib.cudaGetDevice.restype = ctypes.c_int
        lib.cudaGetErrorString.argtypes = [ctypes.c_int]
        lib.cudaGetErrorString.restype = ctypes.c_char_p

    def _check(self, err: int, what: str) -> None:
        if err != 0:
            msg = self.lib.cudaGetErrorString(err)
            text = msg.decode() if isinstance(msg, bytes) else str(msg)
            raise CudaIpcError(f"{what} failed: CUDA error {err} ({text}) [{self.path}]")

    def _on_device(self, device: int, fn: Callable[[], Any]) -> Any:
        prev = ctypes.c_int(-1)
        self._check(self.lib.cudaGetDevice(ctypes.byref(prev)), "cudaGetDevice")
        if prev.value != device:
            self._check(self.lib.cudaSetDevice(device), f"cudaSetDevice({device})")
        try:
            return fn()
        finally:
            if prev.value != device and prev.value >= 0:
                self.lib.cudaSetDevice(prev.value)

    def open(self, handle: bytes, device: int) -> int:
        if len(handle) != IPC_HANDLE_SIZE:
            raise CudaIpcError(f"a cudaIpcMemHandle has 64 bytes, got {len(handle)}")
        h = _IpcHandleStruct()
        ctypes.memmove(ctypes.addressof(h), handle, IPC_HANDLE_SIZE)
        ptr = ctypes.c_void_p()

        def go() -> int:
            err = self.lib.cudaIpcOpenMemHandle(
                ctypes.byref(ptr), h, IPC_MEM_LAZY_ENABLE_PEER_ACCESS
            )
            self._check(err, "cudaIpcOpenMemHandle")
            return int(ptr.value or 0)

        return self._on_device(device, go)

    def close(self, ptr: int, device: int) -> None:
        self._on_device(
            device,
            lambda: self._check(
                self.lib.cudaIpcCloseMemHandle(ctypes.c_void_p(ptr)), "cudaIpcCloseMemHandle"
            ),
        )


def _loaded_cudart_paths(maps_file: str = "/proc/self/maps") -> list[str]:
    """libcudart files already mapped into this process (torch's, normally)."""
    found: list[str] = []
    try:
        with open(maps_file) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6:
                    path = parts[-1]
                    base = os.path.basename(path)
                    if base.startswith("libcudart") and ".so" in base and path not in found:
                        found.append(path)
    except OSError:
        pass
    # torch's own copy (from the nvidia pip packages or next to torch) before copies that
    # other wheels bundle under mangled names (e.g. torchvision.libs/libcudart.<hash>.so).
    found.sort(key=lambda p: 0 if ("/nvidia/" in p or "/torch/" in p) else 1)
    return found


def cudart_candidates(
    environ: Optional[dict] = None,
    search_paths: Optional[Sequence[str]] = None,
    maps_file: str = "/proc/self/maps",
) -> list[str]:
    """Where to look for libcudart, best first.

    1. ``REEL_CUDART`` (a file path);
    2. a libcudart already loaded in the process (torch's, after ``import torch``);
    3. the ``nvidia`` pip packages next to torch: ``nvidia/cu13/lib`` (CUDA 13 wheels),
       ``nvidia/cuda_runtime/lib`` (CUDA 12 wheels);
    4. the system's (``ctypes.util.find_library``).
    """
    env = os.environ if environ is None else environ
    out: list[str] = []
    if env.get("REEL_CUDART"):
        out.append(env["REEL_CUDART"])
    out.extend(_loaded_cudart_paths(maps_file))
    if search_paths is None:
        search_paths = []
        torch_mod = sys.modules.get("torch")
        if torch_mod is not None and getattr(torch_mod, "__file__", None):
            search_paths.append(os.path.dirname(os.path.dirname(torch_mod.__file__)))
        search_paths.extend(p for p in sys.path if p and os.path.isdir(p))
    for sp in search_paths:
        for pattern in (
            "nvidia/cu[0-9]*/lib/libcudart.so*",
            "nvidia/cuda_runtime/lib/libcudart.so*",
        ):
            for path in sorted(glob.glob(os.path.join(sp, pattern)), reverse=True):
                if not path.endswith(".a") and path not in out:
                    out.append(path)
    system = ctypes.util.find_library("cudart")
    if system and system not in out:
        out.append(system)
    return out


def _load_ctypes_backend() -> _CtypesBackend:
    errors = []
    for path in cudart_candidates():
        try:
            return _CtypesBackend(ctypes.CDLL(path), path)
        except (OSError, AttributeError) as e:
            errors.append(f"{path}: {e}")
    raise CudaIpcError(
        "CUDA IPC needs CuPy or the CUDA runtime library (libcudart): none found"
        + (" (" + "; ".join(errors) + ")" if errors else "")
        + ". Install cupy, or torch with CUDA, or set REEL_CUDART=/path/to/libcudart.so"
    )


_backend_lock = threading.Lock()
_backend: Any = None


def backend() -> Any:
    """The process-wide IPC backend (CuPy if importable, else ctypes on libcudart)."""
    global _backend
    with _backend_lock:
        if _backend is None:
            if os.environ.get("REEL_CUDA_IPC_BACKEND", "") != "ctypes":
                try:
                    import cupy  # type: ignore

                    _backend = _CupyBackend(cupy)
                except ImportError:
                    pass
            if _backend is None:
                _backend = _load_ctypes_backend()
        return _backend


def set_backend(b: Any) -> None:
    """Replaces the backend (tests)."""
    global _backend
    with _backend_lock:
        _backend = b


# ------------------------------------------------------------------------------ pools


class IpcPool:
    """One opened pool: ``base`` is where the server's pool starts in this process.

    The mapping is closed when the last reference goes (the Client that opened it and
    every tensor viewing it), never while a tensor could still read it.
    """

    def __init__(self, pool_id: str, handle: bytes, device: int, be: Any = None):
        self.pool_id = pool_id
        self.device = int(device)
        self.handle = bytes(handle)
        self._backend = be if be is not None else backend()
        self.base = self._backend.open(self.handle, self.device)
        self._finalizer = weakref.finalize(self, _close_quietly, self._backend, self.base, self.device)
        # At interpreter exit the driver unmaps everything anyway; closing then may race
        # with torch's own teardown.
        self._finalizer.atexit = False

    def view(self, offset: int, shape: Sequence[int], dtype: str) -> "CudaArray":
        return CudaArray(self, self.base + int(offset), tuple(int(s) for s in shape), dtype)

    def __repr__(self) -> str:
        return f"IpcPool(id={self.pool_id!r}, device={self.device}, base=0x{self.base:x})"


def _close_quietly(be: Any, ptr: int, device: int) -> None:
    try:
        be.close(ptr, device)
    except Exception:  # noqa: BLE001 - best effort at garbage collection
        pass


class PoolCache:
    """Pools opened by a Client, by pool id; opens each at most once.

    A process-wide registry of weak references makes two Clients of the same server
    share the mapping too (CUDA refuses to map one handle twice in a context).
    """

    _registry: "weakref.WeakValueDictionary[tuple[str, int], IpcPool]" = weakref.WeakValueDictionary()
    _registry_lock = threading.Lock()

    def __init__(self, opener: Optional[Callable[[str, bytes, int], IpcPool]] = None):
        self._pools: dict[str, IpcPool] = {}
        self._lock = threading.Lock()
        self._opener = opener or IpcPool
        self.opened = 0  # how many times this cache called cudaIpcOpenMemHandle

    def get(self, pool_id: str, handle: bytes, device: int) -> IpcPool:
        if not pool_id:
            raise CudaIpcError("the server sent a CUDA IPC result without a pool id")
        with self._lock:
            pool = self._pools.get(pool_id)
            if pool is not None:
                return pool
            key = (pool_id, int(device))
            with PoolCache._registry_lock:
                pool = PoolCache._registry.get(key)
                if pool is None:
                    pool = self._opener(pool_id, handle, device)
                    self.opened += 1
                    PoolCache._registry[key] = pool
            self._pools[pool_id] = pool
            return pool

    def clear(self) -> None:
        """Drops this cache's references (mappings close once no tensor uses them)."""
        with self._lock:
            self._pools.clear()

    def __len__(self) -> int:
        return len(self._pools)


class CudaArray:
    """A result in an opened pool, exposed through ``__cuda_array_interface__``.

    Holds its pool, so the mapping stays open while a tensor built from it lives.
    """

    def __init__(self, pool: IpcPool, ptr: int, shape: tuple, dtype: str):
        if dtype not in _TYPESTR:
            raise ValueError(f"unknown dtype {dtype!r}")
        self.pool = pool
        self.ptr = ptr
        self.shape = shape
        self.dtype = dtype

    @property
    def __cuda_array_interface__(self) -> dict:
        return {
            "shape": self.shape,
            "typestr": _TYPESTR[self.dtype],
            "data": (self.ptr, False),
            "strides": None,
            "version": 2,
        }

    def to_torch(self) -> Any:
        import torch

        t = torch.as_tensor(self, device=f"cuda:{self.pool.device}")
        if self.dtype == "bf16":
            t = t.view(torch.bfloat16)
        return t
