"""Pure-Python parts of the client, without a server or a GPU: target parsing, payload
assembly, shared-memory mapping, and the CUDA IPC path with a fake CUDA runtime."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import types
from pathlib import Path

import grpc
import numpy as np
import pytest

from reel_client import Client, ReelError, _cuda_ipc
from reel_client._proto import reel_pb2 as pb
from reel_client.client import _DTYPES, _EMBED, _enum, _is_local_target
from reel_client.result import Result, bf16_bits_to_f32, from_inline, map_shm

HERE = Path(__file__).resolve().parent


# -------------------------------------------------------------------- client bits


@pytest.mark.parametrize(
    "target,local",
    [
        ("127.0.0.1:50051", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("unix:/run/reel.sock", True),
        ("unix:///run/reel.sock", True),
        ("dns:///localhost:50051", True),
        ("ipv4:127.0.0.2:1", True),
        ("10.1.2.3:50051", False),
        ("gpu-box.example:50051", False),
        ("[2001:db8::1]:50051", False),
    ],
)
def test_local_targets(target, local):
    assert _is_local_target(target) is local


def test_enum_names():
    assert _enum("bf16", _DTYPES, "dtype") == pb.DTYPE_BF16
    assert _enum("torch.bfloat16", _DTYPES, "dtype") == pb.DTYPE_BF16
    assert _enum("FLOAT32", _DTYPES, "dtype") == pb.DTYPE_F32
    assert _enum(pb.DTYPE_F16, _DTYPES, "dtype") == pb.DTYPE_F16
    with pytest.raises(ValueError, match="dtype"):
        _enum("int8", _DTYPES, "dtype")


def test_auto_output_remote_is_inline():
    c = Client("10.255.255.1:1")  # never contacted: auto needs no Info for remote servers
    assert c._output_mode("auto") == pb.OUTPUT_MODE_INLINE
    assert c._output_mode("shm") == pb.OUTPUT_MODE_SHM
    assert c._output_mode("server") == pb.OUTPUT_MODE_UNSPECIFIED
    c.close()


def test_token_metadata():
    c = Client("127.0.0.1:1", token="abc")
    assert c._metadata == (("authorization", "Bearer abc"),)
    assert Client("127.0.0.1:1")._metadata is None


def test_deadline_normalization():
    class Fake(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.CANCELLED

        def details(self):
            return "Timeout expired"

    assert ReelError.from_rpc(Fake(), "Embed", True).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert ReelError.from_rpc(Fake(), "Embed", False).code() == grpc.StatusCode.CANCELLED
    e = ReelError(grpc.StatusCode.NOT_FOUND, "no model", "Embed")
    assert str(e) == "Embed: NOT_FOUND: no model" and isinstance(e, grpc.RpcError)


# -------------------------------------------------------------------- host payloads


def test_bf16_widening():
    values = np.array([1.0, -2.5, 3.140625, 0.0, -0.0, np.inf], dtype=np.float32)
    bits = (values.view(np.uint32) >> 16).astype(np.uint16).view(np.int16)
    np.testing.assert_array_equal(bf16_bits_to_f32(bits), values)


def test_inline_chunks():
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    raw = data.tobytes()
    arr = from_inline([raw[:10], raw[10:30], raw[30:]], "f32", (3, 4), len(raw))
    np.testing.assert_array_equal(arr, data)
    assert arr.flags.writeable
    with pytest.raises(ValueError, match="bytes"):
        from_inline([raw[:10]], "f32", (3, 4), len(raw))


def test_map_shm_unlinks(tmp_path):
    data = np.arange(20, dtype=np.float16).reshape(4, 5)
    path = tmp_path / "reel-abc"
    path.write_bytes(data.tobytes())
    arr = map_shm(str(path), "f16", (4, 5), data.nbytes)
    assert not path.exists()
    np.testing.assert_array_equal(arr, data)
    arr[0, 0] = 7  # private copy-on-write pages
    assert arr[0, 0] == 7
    path.write_bytes(b"\0" * 8)
    with pytest.raises(ValueError, match="expected"):
        map_shm(str(path), "f32", (4, 5), 80)
    with pytest.raises(FileNotFoundError, match="shm_dir"):
        map_shm(str(tmp_path / "missing"), "f32", (1,), 4)


def _response(mode, shape=(6, 4), dtype=pb.DTYPE_F32, **descriptor):
    size = {pb.DTYPE_F32: 4, pb.DTYPE_BF16: 2, pb.DTYPE_F16: 2}[dtype]
    d = pb.TensorDescriptor(
        mode=mode, shape=list(shape), dtype=dtype, nbytes=int(np.prod(shape)) * size, **descriptor
    )
    return pb.EmbedResponse(
        tensor=d,
        video_grid_thw=[1, 4, 6],
        second_per_grid_ts=[1.0],
        frame_indices=[0, 1],
        timestamps=[0.0, 0.5],
        decoded_on="cpu",
        last=True,
    )


def _embed_result(client, first, chunks=(), last=True):
    """What ``client`` makes of an Embed response stream: ``first``, then ``chunks``."""
    return client._result(_EMBED, first, list(chunks), last)


def test_refuses_odd_shm_names(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"x" * 96)
    c = Client("127.0.0.1:1", shm_dir=str(tmp_path / "shm"))
    for name in ("../victim", "/etc/passwd", "..", "a/b"):
        first = _response(pb.OUTPUT_MODE_SHM, shm_name=name)
        with pytest.raises(ReelError, match="refusing"):
            _embed_result(c, first)
    assert victim.exists()


def test_descriptor_size_checked():
    first = _response(pb.OUTPUT_MODE_INLINE)
    first.tensor.nbytes = 5
    with pytest.raises(ReelError, match="nbytes"):
        _embed_result(Client("127.0.0.1:1"), first, [b"\0" * 5])
    first = _response(pb.OUTPUT_MODE_INLINE)
    with pytest.raises(ReelError, match="last part"):
        _embed_result(Client("127.0.0.1:1"), first, [b"\0" * 96], last=False)


def test_embed_and_frames_requests():
    """embed() sends an EmbedRequest, frames() a FramesRequest with the same fields (and
    numbers); both assemble a chunked INLINE stream into a result of their kind."""
    values = np.arange(24, dtype=np.float32).reshape(6, 4)
    raw = values.tobytes()
    sent = []

    def rpc(method):
        def call(request, timeout=None, metadata=None):
            sent.append((method, request))
            first = _response(pb.OUTPUT_MODE_INLINE)
            first.inline_chunk, first.last = raw[:40], False
            return iter([first, pb.EmbedResponse(inline_chunk=raw[40:], last=True)])

        return call

    c = Client("127.0.0.1:1")
    c._stub = types.SimpleNamespace(Embed=rpc("Embed"), Frames=rpc("Frames"))
    args = dict(nframes=4, resized_height=56, resized_width=84, model="m", output="inline", dtype="f32")
    e = c.embed("clip.mp4", **args)
    f = c.frames("clip.mp4", **args)
    (em, ereq), (fm, freq) = sent
    assert em == "Embed" and type(ereq) is pb.EmbedRequest
    assert fm == "Frames" and type(freq) is pb.FramesRequest
    assert freq.source.path == "clip.mp4" and freq.sampling.nframes == 4 and freq.model == "m"
    assert freq.output == pb.OUTPUT_MODE_INLINE and freq.dtype == pb.DTYPE_F32
    assert ereq.SerializeToString() == freq.SerializeToString()
    assert (e.kind, f.kind) == ("embed", "frames")
    for r in (e, f):
        assert r.mode == "inline" and r.grid_thw == (1, 4, 6)
        np.testing.assert_array_equal(r.numpy(), values)
    # The colour conversion: reference by default, accurate on request, nothing else.
    assert ereq.sampling.color == pb.COLOR_CONVERSION_REFERENCE
    c.frames("clip.mp4", color="accurate", **args)
    assert sent[-1][1].sampling.color == pb.COLOR_CONVERSION_ACCURATE
    with pytest.raises(ValueError, match="color"):
        c.frames("clip.mp4", color="vivid", **args)
    c.close()


# --------------------------------------------------------------- CUDA IPC (mocked)


class FakeBackend:
    name = "fake"

    def __init__(self):
        self.opened = []
        self.closed = []

    def open(self, handle, device):
        self.opened.append((bytes(handle), device))
        return 0x7F0000000000 + 0x100000 * len(self.opened)

    def close(self, ptr, device):
        self.closed.append((ptr, device))


@pytest.fixture
def fake_backend():
    be = FakeBackend()
    _cuda_ipc.set_backend(be)
    yield be
    _cuda_ipc.set_backend(None)


def test_ipc_pool_opened_once_per_pool(fake_backend):
    c = Client("127.0.0.1:1")
    released = []
    c.release = lambda lease_id, **kw: released.append(lease_id) or True
    handle_a = bytes(range(64))
    handle_b = bytes(range(1, 65))
    results = []
    for i, (pool_id, handle, offset) in enumerate(
        [("pool-a", handle_a, 0), ("pool-a", handle_a, 512), ("pool-a", handle_a, 4096), ("pool-b", handle_b, 0)]
    ):
        first = _response(
            pb.OUTPUT_MODE_CUDA_IPC,
            dtype=pb.DTYPE_BF16 if i == 2 else pb.DTYPE_F32,
            cuda_ipc_handle=handle,
            device=1,
            offset=offset,
            pool_id=pool_id,
            lease_id=f"lease-{i}",
        )
        results.append(_embed_result(c, first))
    assert [h for h, _ in fake_backend.opened] == [handle_a, handle_b]
    assert all(dev == 1 for _, dev in fake_backend.opened)
    assert c.ipc_pools.opened == 2 and len(c.ipc_pools) == 2
    base_a = 0x7F0000100000
    cais = [r._cuda.__cuda_array_interface__ for r in results]
    assert [cai["data"] for cai in cais[:3]] == [(base_a, False), (base_a + 512, False), (base_a + 4096, False)]
    assert cais[0]["shape"] == (6, 4) and cais[0]["typestr"] == "<f4"
    assert cais[2]["typestr"] == "<i2"  # bf16 bits, reinterpreted by to_torch()
    assert results[0].mode == "cuda_ipc" and results[0].device == 1 and results[0].pool_id == "pool-a"
    # A second client in the same process reuses the open mapping.
    c2 = Client("127.0.0.1:1")
    first = _response(pb.OUTPUT_MODE_CUDA_IPC, cuda_ipc_handle=handle_a, device=1, pool_id="pool-a")
    r2 = _embed_result(c2, first)
    assert c2.ipc_pools.opened == 0 and r2._cuda.pool is results[0]._cuda.pool
    # Release: the lease goes back, the result refuses to hand out the memory again.
    assert results[0].release() is True and results[0].release() is False
    assert released == ["lease-0"]
    with pytest.raises(RuntimeError, match="released"):
        results[0].tensor
    # Mappings close only when nothing uses them any more.
    c.close()
    c2.close()
    assert fake_backend.closed == []  # results still view the pools
    del results, r2, first, cais
    import gc

    gc.collect()
    assert sorted(p for p, _ in fake_backend.closed) == [base_a, 0x7F0000200000]


def test_ipc_bad_handle(fake_backend):
    first = _response(pb.OUTPUT_MODE_CUDA_IPC, cuda_ipc_handle=b"short", pool_id="p")
    with pytest.raises(ReelError, match="64"):
        _embed_result(Client("127.0.0.1:1"), first)


def test_cudart_candidates(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text(
        "7f00-7f01 r-xp 00000000 08:01 1 /venv/nvidia/cu13/lib/libcudart.so.13\n"
        "7f02-7f03 r-xp 00000000 08:01 2 /usr/lib/libc.so.6\n"
    )
    site = tmp_path / "site"
    for sub in ("nvidia/cu13/lib", "nvidia/cuda_runtime/lib"):
        (site / sub).mkdir(parents=True)
    (site / "nvidia/cu13/lib/libcudart.so.13").write_bytes(b"")
    (site / "nvidia/cu13/lib/libcudart_static.a").write_bytes(b"")
    (site / "nvidia/cuda_runtime/lib/libcudart.so.12").write_bytes(b"")
    got = _cuda_ipc.cudart_candidates(
        environ={"REEL_CUDART": "/opt/libcudart.so"}, search_paths=[str(site)], maps_file=str(maps)
    )
    assert got[:4] == [
        "/opt/libcudart.so",
        "/venv/nvidia/cu13/lib/libcudart.so.13",
        str(site / "nvidia/cu13/lib/libcudart.so.13"),
        str(site / "nvidia/cuda_runtime/lib/libcudart.so.12"),
    ]
    assert not any(p.endswith(".a") for p in got)


@pytest.fixture(scope="module")
def fake_cudart(tmp_path_factory):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler for the fake libcudart")
    out = tmp_path_factory.mktemp("fake-cudart") / "libcudart.so"
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(HERE / "fake_cudart" / "fake_cudart.c")],
        check=True,
    )
    return str(out)


def test_ctypes_backend_abi(fake_cudart, monkeypatch):
    """The 64-byte handle goes by value, flags and device are right, errors are clear."""
    lib = ctypes.CDLL(fake_cudart)
    be = _cuda_ipc._CtypesBackend(lib, fake_cudart)
    handle = bytes((i * 7 + 3) % 256 for i in range(64))
    ptr = be.open(handle, 1)
    assert bytes((ctypes.c_ubyte * 64).in_dll(lib, "last_handle")) == handle
    assert ctypes.c_uint.in_dll(lib, "last_flags").value == _cuda_ipc.IPC_MEM_LAZY_ENABLE_PEER_ACCESS
    assert ctypes.c_int.in_dll(lib, "last_open_device").value == 1
    assert ptr == 0x7F0000000000 + (handle[0] << 20) + (handle[63] << 12)
    cur = ctypes.c_int(-1)
    lib.cudaGetDevice(ctypes.byref(cur))
    assert cur.value == 0  # the caller's device is restored
    be.close(ptr, 1)
    assert ctypes.c_int.in_dll(lib, "closes").value == 1
    assert ctypes.c_size_t.in_dll(lib, "last_closed").value == ptr
    with pytest.raises(_cuda_ipc.CudaIpcError, match="invalid resource handle"):
        be.open(b"\xff" * 64, 0)
    with pytest.raises(_cuda_ipc.CudaIpcError, match="invalid device ordinal"):
        be.open(handle, 5)
    # REEL_CUDART selects the library when CuPy is absent.
    monkeypatch.setenv("REEL_CUDART", fake_cudart)
    loaded = _cuda_ipc._load_ctypes_backend()
    assert loaded.path == fake_cudart
    # Through a pool: open once, close when unused.
    pool = _cuda_ipc.IpcPool("p", handle, 0, be=loaded)
    arr = pool.view(1024, (2, 3), "f16")
    assert arr.__cuda_array_interface__["data"] == (pool.base + 1024, False)
    assert arr.__cuda_array_interface__["typestr"] == "<f2"
    del pool, arr
    import gc

    gc.collect()
    assert ctypes.c_int.in_dll(lib, "closes").value == 2


def test_result_without_torch_numpy(monkeypatch):
    r = Result(
        release_lease=None,
        kind="embed",
        mode="inline",
        dtype="bf16",
        shape=(2, 2),
        nbytes=8,
        grid_thw=(1, 2, 4),
        second_per_grid_ts=[1.0],
        frame_indices=[0, 1],
        timestamps=[0.0, 0.5],
        timings={},
        decoded_on="cpu",
        lease_id="",
        lease_expires_in_s=0,
        array=np.array([[0x3F80, 0x4000], [-0x4080, 0]], dtype=np.int16),
    )
    np.testing.assert_array_equal(r.numpy(), [[1.0, 2.0], [-1.0, 0.0]])
    assert r.release() is False and r.released


def test_loaded_cudart_prefers_torchs(tmp_path):
    maps = tmp_path / "maps"
    maps.write_text(
        "1-2 r-xp 0 0:0 1 /venv/torchvision.libs/libcudart.faf08d9a.so.13\n"
        "3-4 r-xp 0 0:0 1 /venv/nvidia/cu13/lib/libcudart.so.13\n"
        "5-6 r-xp 0 0:0 1 /venv/nvidia/cu13/lib/libcudart.so.13\n"
    )
    assert _cuda_ipc._loaded_cudart_paths(str(maps)) == [
        "/venv/nvidia/cu13/lib/libcudart.so.13",
        "/venv/torchvision.libs/libcudart.faf08d9a.so.13",
    ]


def test_real_libcudart_loads_and_reports_errors():
    """With torch's CUDA runtime present (a CUDA build of torch on a machine without a
    GPU): the symbols bind and a failure comes back as a readable CudaIpcError."""
    try:
        import torch  # noqa: F401  (maps torch's libcudart, when it has one)
    except ImportError:
        pass
    lib = path = None
    for candidate in _cuda_ipc.cudart_candidates(environ={}):
        try:
            loaded = ctypes.CDLL(candidate)
        except OSError:
            continue
        if hasattr(loaded, "cudaGetDeviceCount"):  # not the fake one of this module
            lib, path = loaded, candidate
            break
    if lib is None:
        pytest.skip("no libcudart on this machine")
    be = _cuda_ipc._CtypesBackend(lib, path)
    count = ctypes.c_int(0)
    lib.cudaGetDeviceCount.restype = ctypes.c_int
    if lib.cudaGetDeviceCount(ctypes.byref(count)) == 0 and count.value > 0:
        pytest.skip("a GPU is present: covered by test_cuda_ipc.py")
    with pytest.raises(_cuda_ipc.CudaIpcError, match="CUDA error"):
        be.open(b"\0" * 64, 0)


def test_cuda_array_to_torch(monkeypatch):
    torch = pytest.importorskip("torch")
    seen = {}

    def fake_as_tensor(obj, device=None):
        seen["cai"] = obj.__cuda_array_interface__
        seen["device"] = device
        return torch.zeros(obj.shape, dtype=torch.int16 if obj.dtype == "bf16" else torch.float32)

    monkeypatch.setattr(torch, "as_tensor", fake_as_tensor)
    pool = _cuda_ipc.IpcPool("p-torch", b"\1" * 64, 3, be=FakeBackend())
    t = pool.view(4096, (5, 7), "bf16").to_torch()
    assert t.dtype == torch.bfloat16 and tuple(t.shape) == (5, 7)
    assert seen["device"] == "cuda:3"
    assert seen["cai"]["data"] == (pool.base + 4096, False) and seen["cai"]["typestr"] == "<i2"
    t = pool.view(0, (2,), "f32").to_torch()
    assert t.dtype == torch.float32
