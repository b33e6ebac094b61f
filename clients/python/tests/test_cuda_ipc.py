"""CUDA IPC against a GPU server. Runs only with REEL_TEST_CUDA=1 on a machine with an
NVIDIA GPU, torch with CUDA, and a reel binary built with CUDA support:

    REEL_TEST_CUDA=1 ./run_tests.sh tests/test_cuda_ipc.py tests/test_hf_e2e.py

(the second file then also runs the HF end-to-end proof on the GPU, see below).
Set REEL_CUDA_IPC_BACKEND=ctypes to test the ctypes path on a machine with CuPy.
"""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

from conftest import VIDEO, reel_bin, reel_server, wait_until

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(os.environ.get("REEL_TEST_CUDA") != "1", reason="set REEL_TEST_CUDA=1 (needs a GPU)"),
]


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.fail("REEL_TEST_CUDA=1 but torch sees no CUDA device")
    return torch


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory, torch):
    # An f32 tower: results are compared exactly with the same server's INLINE output.
    with reel_server(tmp_path_factory, "--ipc-pool-mib", "256", "--model-dtype", "f32", device="cuda") as s:
        yield s


def test_bf16_model_publishes_native_bf16(make_server, torch):
    """A bf16 tower's embeddings leave the GPU as bf16 by default, zero-copy, and equal
    the INLINE result of the same server."""
    s = make_server("--ipc-pool-mib", "64", "--model-dtype", "bf16", device="cuda")
    with s.client() as c:
        with c.embed(VIDEO, output="inline", dtype="bf16") as ref:
            expected = torch.from_numpy(ref.raw.copy()).view(torch.bfloat16)
        with c.embed(VIDEO, output="cuda_ipc") as r:
            assert r.tensor.dtype == torch.bfloat16 and r.tensor.is_cuda
            assert torch.equal(r.tensor.cpu().reshape(expected.shape), expected)


def test_info_has_gpu(gpu_server):
    with gpu_server.client() as c:
        info = c.info()
        assert info.gpus and info.gpus[0].memory_bytes > 0


def test_embed_cuda_ipc(gpu_server, torch):
    from reel_client import _cuda_ipc

    with gpu_server.client() as c:
        with c.embed(VIDEO, output="inline") as ref:
            expected = ref.numpy().copy()
        results = [c.embed(VIDEO, output="cuda_ipc") for _ in range(3)]
        for r in results:
            assert r.mode == "cuda_ipc" and r.lease_id and r.pool_id
            t = r.tensor
            assert t.is_cuda and t.device.index == r.device
            assert t.dtype == torch.float32 and tuple(t.shape) == expected.shape
            np.testing.assert_array_equal(t.cpu().numpy(), expected)
        # Three results, one pool, opened once (cached by pool id).
        assert len({r.pool_id for r in results}) == 1
        assert c.ipc_pools.opened == 1 and len(c.ipc_pools) == 1
        assert len({r.tensor.data_ptr() for r in results}) == 3
        print("CUDA IPC backend:", type(_cuda_ipc.backend()).__name__)
        # Release: True once, then False; the freed slot is reused by the next result.
        ptr0 = results[0].tensor.data_ptr()
        assert results[0].release() is True
        assert results[0].release() is False
        with pytest.raises(RuntimeError):
            results[0].tensor
        again = c.embed(VIDEO, output="cuda_ipc")
        assert again.tensor.data_ptr() == ptr0  # first fit: the released slot
        assert c.ipc_pools.opened == 1
        np.testing.assert_array_equal(again.numpy(), expected)
        # auto on a GPU server with CUDA here: CUDA IPC.
        with c.embed(VIDEO) as auto:
            assert auto.mode == "cuda_ipc"
        metrics = gpu_server.metrics()
        assert metrics["reel_leases"] == 3
        for r in results[1:] + [again]:
            assert r.release() is True
        assert gpu_server.metrics()["reel_leases"] == 0
        assert gpu_server.metrics()["reel_ipc_pool_free_bytes"] == 256 << 20


def test_dtypes_and_frames(gpu_server, torch):
    with gpu_server.client() as c:
        with c.embed(VIDEO, output="inline") as ref:
            expected = torch.from_numpy(ref.numpy().copy())
        with c.embed(VIDEO, output="cuda_ipc", dtype="bf16") as b:
            assert b.tensor.dtype == torch.bfloat16 and b.tensor.is_cuda
            assert torch.equal(b.tensor.cpu(), expected.bfloat16())
        with c.embed(VIDEO, output="cuda_ipc", dtype="f16") as h:
            assert h.tensor.dtype == torch.float16
            assert torch.equal(h.tensor.cpu(), expected.half())
        # Frames decoded on the GPU are published from device memory (f32) without a
        # host round trip; they must equal the same server's INLINE bytes.
        with c.frames(VIDEO, output="inline") as fi, c.frames(VIDEO, output="cuda_ipc") as fc:
            assert fc.tensor.is_cuda and fc.shape == fi.shape
            assert torch.equal(fc.tensor.cpu(), torch.from_numpy(fi.numpy()))
        for output in ("vllm", "sglang"):
            with c.embed(VIDEO, output="cuda_ipc") as r:
                d = r.to_vllm()["video"] if output == "vllm" else r.to_sglang()
                emb = d["video_embeds"] if output == "vllm" else d["feature"]
                assert emb.is_cuda and emb.data_ptr() == r.tensor.data_ptr()


def test_close_frees_ipc_leases(gpu_server, torch):
    c = gpu_server.client()
    held = [c.embed(VIDEO, output="cuda_ipc") for _ in range(2)]
    for r in held:
        r.tensor  # mapped
    assert gpu_server.metrics()["reel_leases"] == 2
    c.close()
    assert wait_until(lambda: gpu_server.metrics()["reel_leases"] == 0, 5)
    # Mappings stay open while tensors reference them (no illegal address on access) ...
    tensors = [r.tensor for r in held]
    tensors[0].sum().item()  # stale values, but a valid mapping
    del held, tensors
    gc.collect()
    torch.cuda.synchronize()


def test_hf_e2e_on_gpu(make_server, torch):
    """The HF proof with the model on the GPU and reel's results through CUDA IPC."""
    pytest.importorskip("transformers")
    import e2e_hf

    server = make_server("--ipc-pool-mib", "256", *e2e_hf.exact_server_flags(reel_bin()), device="cuda")
    model = e2e_hf.build_model(device="cuda")
    with server.client() as c:
        report = e2e_hf.run(c, model, output="cuda_ipc")
        report["pool_opens"] = c.ipc_pools.opened
    print("HF e2e (CUDA IPC):", report)
    assert report["embeds_on"].startswith("cuda") and report["pixels_on"].startswith("cuda")
    assert report["control_differs"]
    assert report["max_abs_diff_embeddings"] < 1e-3, report
    assert report["equal"], report


def _hold_device_memory(torch):
    """Takes every byte torch can allocate on the GPU, in shrinking chunks, and returns
    the tensors (freeing them gives the memory back)."""
    held = []
    for chunk in (1 << 30, 64 << 20, 4 << 20, 1 << 20, 64 << 10):
        while True:
            try:
                held.append(torch.empty(chunk, dtype=torch.uint8, device="cuda"))
            except torch.OutOfMemoryError:
                break
    return held


def test_device_out_of_memory_is_resource_exhausted_and_the_server_goes_on(make_server, torch):
    """A request that cannot get device memory fails with RESOURCE_EXHAUSTED (not
    UNAVAILABLE, which clients retry), and the server serves the next request once the
    memory is back: the OOM is real, taken by another process (this one) while the
    server's first request needs decoder surfaces, frame buffers and activations."""
    import grpc

    from reel_client import ReelError

    s = make_server("--ipc-pool-mib", "64", "--cache-mib", "0", device="cuda")
    with s.client() as c:
        c.info()  # the server is up, its model loaded
        held = _hold_device_memory(torch)
        try:
            free, _ = torch.cuda.mem_get_info()
            with pytest.raises(ReelError) as e:
                c.embed(VIDEO, output="inline")
            print(f"with {free >> 20} MiB free: {e.value.code()}: {e.value.details()}")
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value.details()
            assert "memory" in e.value.details()
        finally:
            del held
            gc.collect()
            torch.cuda.empty_cache()
        with c.embed(VIDEO, output="inline") as r:
            assert r.shape[0] > 0
        assert c.info().gpus
