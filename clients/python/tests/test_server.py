"""The client against a real ``reel serve`` (CPU, tiny model). Needs only numpy (and
safetensors for the CLI comparison); torch-specific checks are skipped without torch."""

from __future__ import annotations

import os
import random
import subprocess
import threading

import grpc
import numpy as np
import pytest

from conftest import REPO, VIDEO, VIDEO_DIR, reel_bin, wait_until
from reel_client import Client, ReelError
from reel_client._proto import reel_pb2 as pb
from reel_client._proto import reel_pb2_grpc as pb_grpc

try:
    import torch
except ImportError:  # the plugin core works without torch
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")

GRID = (3, 20, 28)
TOKENS = 3 * 20 * 28 // 4
HIDDEN = 96  # the tiny model's out_hidden_size


def raw_stub(server, channel_options=None):
    channel = grpc.insecure_channel(server.target, options=channel_options or [])
    return channel, pb_grpc.ReelStub(channel)


def raw_shm_embed(stub) -> pb.TensorDescriptor:
    """An SHM result the client library does not touch (its segment stays in place)."""
    req = pb.EmbedRequest(source=pb.Source(path=VIDEO), output=pb.OUTPUT_MODE_SHM)
    responses = list(stub.Embed(req))
    return responses[0].tensor


# ------------------------------------------------------------------------- basics


def test_info(client):
    info = client.info()
    assert info.version
    assert [m.name for m in info.models] == ["tiny-qwen2.5-vl"]
    assert info.models[0].architecture == "Qwen2_5_VLForConditionalGeneration"
    assert info.models[0].out_hidden_size == HIDDEN
    assert [(o.name, o.width) for o in info.models[0].outputs] == [("main", HIDDEN)]
    assert os.path.realpath(str(VIDEO_DIR)) in info.media_roots
    assert not info.gpus


def test_qwen3_model_packs_deepstack_and_gives_grid_timestamps(make_server):
    """A Qwen3-VL model beside the default one: its own preprocessing (patch 16, HF's
    Qwen3VLVideoProcessor), its deepstack features packed after the main embeddings."""
    server = make_server("--model", str(REPO / "tests" / "data" / "tiny-qwen3-vl"))
    with server.client() as c:
        models = {m.name: m for m in c.info().models}
        q3 = models["tiny-qwen3-vl"]
        assert q3.architecture == "Qwen3VLForConditionalGeneration"
        assert [(o.name, o.width) for o in q3.outputs] == [
            ("main", 64),
            ("deepstack0", 64),
            ("deepstack1", 64),
        ]
        r = c.embed(VIDEO, model="tiny-qwen3-vl", output="inline")
        assert r.shape == (3 * 16 * 20 // 4, 3 * 64)
        assert r.grid_thw == (3, 16, 20)
        assert r.frame_indices == [0, 18, 36, 53, 71, 89]
        # HF's timestamps: the mean of each temporal patch's first and last frame time.
        assert r.grid_timestamps == pytest.approx([0.3, 89 / 60, 160 / 60])
        px = c.frames(VIDEO, model="tiny-qwen3-vl", output="inline")
        assert px.shape == (3 * 16 * 20, 1536)
        r.release()
        px.release()


def test_embed_shm(server, client):
    assert server.segments() == []
    r = client.embed(VIDEO, output="shm")
    assert r.mode == "shm" and r.kind == "embed" and r.dtype == "f32"
    assert r.shape == (TOKENS, HIDDEN)
    assert r.grid_thw == GRID
    assert r.second_per_grid_ts == pytest.approx([1.0])
    assert r.frame_indices == [0, 18, 36, 53, 71, 89]
    assert len(r.timestamps) == 6 and r.timestamps[0] == 0.0
    assert r.decoded_on == "cpu"
    assert set(r.timings) == {
        "demux_s",
        "decode_preprocess_s",
        "encode_s",
        "publish_s",
        "queue_s",
        "total_s",
    }
    assert r.timings["total_s"] > 0
    assert r.lease_id and r.lease_expires_in_s == pytest.approx(60.0)
    # Mapped, then unlinked at once: nothing is left in the shm folder ...
    assert server.segments() == []
    # ... yet the mapping is alive and holds the values.
    a = r.numpy()
    before = a.copy()
    assert a.shape == (TOKENS, HIDDEN) and a.dtype == np.float32
    assert np.isfinite(a).all() and np.abs(a).sum() > 0
    assert server.metrics()["reel_leases"] >= 1
    assert r.release() is True
    assert r.release() is False  # idempotent
    assert client.release(r.lease_id) is False  # the server no longer knows it
    np.testing.assert_array_equal(a, before)  # SHM pages stay valid while mapped


@needs_torch
def test_embed_tensor_zero_copy(client):
    with client.embed(VIDEO, output="shm") as r:
        t = r.tensor
        assert t.dtype == torch.float32 and tuple(t.shape) == (TOKENS, HIDDEN)
        # The tensor and the numpy view share the mapping.
        assert t.data_ptr() == r.numpy().ctypes.data
        assert r.video_grid_thw.dtype == torch.int64
        assert r.video_grid_thw.tolist() == [list(GRID)]
    assert r.released


def test_inline_equals_shm(client):
    with client.embed(VIDEO, output="shm") as shm, client.embed(VIDEO, output="inline") as inline:
        assert inline.mode == "inline" and inline.lease_id is None
        assert inline.grid_thw == shm.grid_thw
        np.testing.assert_array_equal(inline.numpy(), shm.numpy())
        assert inline.release() is False  # nothing to release


def test_frames_equal_cli(client, tmp_path):
    out = tmp_path / "frames.safetensors"
    subprocess.run(
        [str(reel_bin()), "frames", str(VIDEO_DIR / VIDEO), "-o", str(out), "--device", "cpu"],
        check=True,
        capture_output=True,
    )
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    cli = safetensors_numpy.load_file(str(out))
    for output in ("shm", "inline"):  # inline: 7.9 MB, several 4 MiB chunks
        with client.frames(VIDEO, output=output) as r:
            assert r.kind == "frames" and r.shape == (GRID[0] * GRID[1] * GRID[2], 1176)
            np.testing.assert_array_equal(r.numpy(), cli["pixel_values"])
            assert [list(r.grid_thw)] == cli["video_grid_thw"].tolist()
            assert r.frame_indices == cli["frame_indices"].tolist()
            np.testing.assert_allclose(r.timestamps, cli["timestamps"])


def test_inline_upload(client):
    data = (VIDEO_DIR / VIDEO).read_bytes()
    with client.embed(data=data, filename="clip.mp4", output="inline") as up, client.embed(
        VIDEO, output="inline"
    ) as by_path:
        np.testing.assert_array_equal(up.numpy(), by_path.numpy())
    # Raw Annex-B needs the file name hint; file objects work too.
    with open(VIDEO_DIR / "h264.h264", "rb") as f:
        with client.frames(data=f, filename="h264.h264", output="inline") as raw:
            assert raw.shape[1] == 1176


def test_inline_upload_over_4mib(client):
    data = (VIDEO_DIR / VIDEO).read_bytes()
    padded = data + b"\0" * (5 << 20)  # trailing bytes after the MP4's boxes
    with client.frames(data=padded, filename="clip.mp4", output="inline") as r:
        assert r.grid_thw == GRID


def test_sampling_options(client):
    with client.frames(VIDEO, nframes=4, resized_height=56, resized_width=84, output="inline") as r:
        assert r.grid_thw == (2, 4, 6)
        assert len(r.frame_indices) == 4
    with client.frames(VIDEO, frames=[0, 10, 20, 30], output="inline") as r:
        assert r.frame_indices == [0, 10, 20, 30]
    with client.frames(VIDEO, fps=2.0, start=1.0, end=2.0, output="inline") as r:
        assert all(1.0 - 1e-6 <= t <= 2.0 + 1e-6 for t in r.timestamps)
    with pytest.raises(ValueError):
        client.frames(VIDEO, resized_height=56)
    with pytest.raises(ValueError):
        client.embed()
    with pytest.raises(ValueError):
        client.embed(VIDEO, data=b"x")
    with pytest.raises(ValueError):
        client.embed(VIDEO, output="carrier-pigeon")


# ------------------------------------------------------------------------- errors


def test_path_outside_media_root(client):
    for path in [str(REPO / "README.md"), "/etc/passwd", "../../../README.md"]:
        with pytest.raises(ReelError) as e:
            client.embed(path)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, path
        assert "media root" in e.value.details()
    assert isinstance(e.value, grpc.RpcError)


def test_corrupt_input(client):
    junk = random.Random(7).randbytes(64 << 10)
    with pytest.raises(ReelError) as e:
        client.embed(data=junk, filename="junk.mp4")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unrecognized container" in e.value.details()
    with pytest.raises(ReelError) as e:
        client.embed("random.bin")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unrecognized container" in str(e.value)
    with pytest.raises(ReelError) as e:
        client.embed("empty.mp4")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(ReelError) as e:
        client.embed("h264_truncated.mp4")
    assert e.value.code() == grpc.StatusCode.DATA_LOSS


def _patched_fixture(edit) -> bytes:
    """The bytes of the main fixture clip after ``edit(bytearray)``."""
    data = bytearray((VIDEO_DIR / VIDEO).read_bytes())
    edit(data)
    return bytes(data)


def test_error_kinds_on_the_wire(client):
    """Each kind of bad input has its own code (docs/errors.md): a stream no decoder here
    takes is FAILED_PRECONDITION, a damaged container DATA_LOSS, and neither is
    UNAVAILABLE (which clients retry)."""

    def second_sample_entry(d):  # 'avc1' -> 'mp4v' in the stsd box
        i = d.find(b"avc1", d.find(b"avc1") + 1)
        d[i : i + 4] = b"mp4v"

    def huge_stsz(d):  # a sample-size table that claims more entries than it holds
        i = d.find(b"stsz")
        d[i + 12 : i + 16] = (0xFFFFFF).to_bytes(4, "big")

    for edit, code, words in [
        (second_sample_entry, grpc.StatusCode.FAILED_PRECONDITION, "unsupported codec"),
        (huge_stsz, grpc.StatusCode.DATA_LOSS, "malformed mp4"),
    ]:
        with pytest.raises(ReelError) as e:
            client.embed(data=_patched_fixture(edit), filename="clip.mp4")
        assert e.value.code() == code, e.value.details()
        assert words in e.value.details()
    # The server is fine afterwards.
    with client.embed(VIDEO, output="inline") as r:
        assert r.shape == (TOKENS, HIDDEN)


def test_unknown_model(client):
    with pytest.raises(ReelError) as e:
        client.embed(VIDEO, model="qwen-huge")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with client.embed(VIDEO, model="tiny-qwen2.5-vl", output="inline") as r:
        assert r.shape == (TOKENS, HIDDEN)


def test_release_unknown(client):
    assert client.release("0" * 32) is False


def test_deadline(client):
    with pytest.raises(ReelError) as e:
        client.frames("h264_longgop.mp4", fps=30, output="inline", timeout=0.001)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    c = Client(client.target, timeout=0.001, shm_dir=client.shm_dir)
    with pytest.raises(ReelError) as e:
        c.frames("h264_longgop.mp4", fps=30, output="inline")
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    c.close()


def test_auto_output(server, client):
    # A CPU server on loopback: SHM.
    with client.embed(VIDEO) as r:
        assert r.mode == "shm"
    with client.embed(VIDEO, output="server") as r:
        assert r.mode == "shm"


def test_bad_shm_dir(server):
    with server.client(shm_dir="/nonexistent-reel-shm") as c:
        with pytest.raises(FileNotFoundError, match="shm"):
            c.embed(VIDEO, output="shm")
    # The client released the lease it could not map: the server removed the segment.
    assert wait_until(lambda: server.segments() == [], 5), server.segments()


def test_closed_client(server):
    c = server.client()
    c.close()
    c.close()
    assert c.closed
    with pytest.raises(RuntimeError):
        c.embed(VIDEO)
    assert c.release("x") is False


# ------------------------------------------------------------------------ dtypes


def test_half_dtypes(client):
    with client.embed(VIDEO, output="inline") as f32:
        ref = f32.numpy()
    with client.embed(VIDEO, output="shm", dtype="bf16") as b:
        assert b.dtype == "bf16" and b.nbytes == TOKENS * HIDDEN * 2
        assert b.raw.dtype == np.int16
        np.testing.assert_allclose(b.numpy(), ref, rtol=2**-8, atol=1e-6)
        if torch is not None:
            t = b.tensor
            assert t.dtype == torch.bfloat16 and tuple(t.shape) == (TOKENS, HIDDEN)
            np.testing.assert_array_equal(t.float().numpy(), b.numpy())
            np.testing.assert_array_equal(t.float().numpy(), torch.from_numpy(ref).bfloat16().float().numpy())
    with client.embed(VIDEO, output="inline", dtype="bfloat16") as bi:
        np.testing.assert_array_equal(bi.raw, client.embed(VIDEO, output="inline", dtype="bf16").raw)
    with client.embed(VIDEO, output="shm", dtype="f16") as h:
        assert h.numpy().dtype == np.float16
        np.testing.assert_allclose(h.numpy().astype(np.float32), ref, rtol=2**-10, atol=1e-4)
        if torch is not None:
            assert h.tensor.dtype == torch.float16


# ---------------------------------------------------------------------- adapters


@needs_torch
def test_adapters(client):
    with client.embed(VIDEO) as r:
        v = r.to_vllm()
        assert set(v) == {"video"}
        assert tuple(v["video"]["video_embeds"].shape) == (TOKENS, HIDDEN)
        assert v["video"]["video_grid_thw"].tolist() == [list(GRID)]
        assert v["video"]["video_grid_thw"].dtype == torch.int64
        s = r.to_sglang()
        assert s["format"] == "precomputed_embedding"
        assert tuple(s["feature"].shape) == (TOKENS, HIDDEN)
        assert s["video_grid_thw"].tolist() == [list(GRID)]
        assert s["feature"].data_ptr() == v["video"]["video_embeds"].data_ptr()
    with client.frames(VIDEO, output="inline") as f:
        with pytest.raises(TypeError):
            f.to_vllm()


# ------------------------------------------------------------------------ leases


def test_lease_expiry(make_server):
    server = make_server("--lease-ttl", "1")
    channel, stub = raw_stub(server)
    d = raw_shm_embed(stub)
    assert d.lease_expires_in_s == pytest.approx(1.0)
    assert server.segments() == [d.shm_name]
    # The sweeper runs every second: gone within ~2 s.
    assert wait_until(lambda: server.segments() == [], timeout=6), server.segments()
    assert not stub.Release(pb.ReleaseRequest(lease_id=d.lease_id)).released
    channel.close()
    # Through the client: an expired lease cannot be released any more.
    with server.client() as c:
        r = c.embed(VIDEO, output="shm")
        assert wait_until(lambda: server.metrics()["reel_leases"] == 0, timeout=6)
        assert r.release() is False
        assert np.isfinite(r.numpy()).all()  # the SHM mapping outlives the lease


def test_connection_close_frees_leases(make_server):
    server = make_server()
    channel, stub = raw_stub(server)
    d1 = raw_shm_embed(stub)
    d2 = raw_shm_embed(stub)
    assert server.segments() == sorted([d1.shm_name, d2.shm_name])
    channel.close()
    assert wait_until(lambda: server.segments() == [], timeout=5), server.segments()
    # Through the client: the server forgets the client's leases when it closes.
    c = server.client()
    results = [c.embed(VIDEO, output="shm") for _ in range(3)]
    assert server.metrics()["reel_leases"] == 3
    c.close()
    assert wait_until(lambda: server.metrics()["reel_leases"] == 0, timeout=5)
    assert all(r.release() is False for r in results)


# ----------------------------------------------------------------------- security


def test_bearer_token(make_server):
    server = make_server("--token", "s3cret-token")
    for token in (None, "wrong", "s3cret-token-and-more"):
        with server.client(token=token) as c:
            with pytest.raises(ReelError) as e:
                c.embed(VIDEO, output="inline")
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, token
            with pytest.raises(ReelError) as e:
                c.info()
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with server.client() as c:  # the right token
        assert c.info().models
        with c.embed(VIDEO) as r:
            assert r.shape == (TOKENS, HIDDEN)
            assert r.release() is True


def test_unix_socket(make_server, tmp_path):
    sock = tmp_path / "reel.sock"
    server = make_server("--socket", str(sock))
    assert (sock.stat().st_mode & 0o777) == 0o660
    with Client(f"unix:{sock}", shm_dir=str(server.shm_dir)) as c:
        with c.embed(VIDEO) as r:  # auto on a unix socket: SHM
            assert r.mode == "shm" and r.shape == (TOKENS, HIDDEN)
            assert r.release() is True


# ------------------------------------------------------------------ embedding cache


def test_embedding_cache(make_server, tmp_path):
    server = make_server()
    with server.client() as c:
        with c.embed(VIDEO, output="inline") as first:
            assert first.decoded_on == "cpu"
            values = first.numpy().copy()
        # The same video again (by path, then as uploaded bytes): no decode, no encode.
        with c.embed(VIDEO, output="inline") as again:
            assert again.decoded_on == "cache"
            assert again.timings["decode_preprocess_s"] == 0 and again.timings["encode_s"] == 0
            np.testing.assert_array_equal(again.numpy(), values)
            assert again.frame_indices == first.frame_indices and again.grid_thw == GRID
        data = (VIDEO_DIR / VIDEO).read_bytes()
        with c.embed(data=data, output="inline") as uploaded:
            assert uploaded.decoded_on == "cache"
            np.testing.assert_array_equal(uploaded.numpy(), values)
        # Other sampling or other bytes: computed afresh.
        with c.embed(VIDEO, fps=1, output="inline") as other:
            assert other.decoded_on == "cpu"
        with c.embed("hevc_main.mp4", output="inline") as other:
            assert other.decoded_on == "cpu"
    m = server.metrics()
    assert m["reel_cache_hits"] == 2 and m["reel_cache_misses"] == 3
    assert m["reel_cache_entries"] == 3 and m["reel_cache_bytes"] > 0
    # Off: every request is computed.
    off = make_server("--cache-mib", "0")
    with off.client() as c:
        for _ in range(2):
            with c.embed(VIDEO, output="inline") as r:
                assert r.decoded_on == "cpu"


# -------------------------------------------------------------------- backpressure


def test_backpressure(make_server):
    server = make_server("--workers", "1", "--max-queue", "1")
    n = 6
    codes: list = []
    lock = threading.Lock()

    def one(c, barrier):
        barrier.wait()
        try:
            r = c.frames("h264_longgop.mp4", fps=30, resized_height=56, resized_width=56, output="inline")
            code = grpc.StatusCode.OK
            assert r.shape == (180 * 4 * 4, 1176)
        except ReelError as e:
            code = e.code()
        with lock:
            codes.append(code)

    for _ in range(5):  # the rejection depends on timing: a few rounds at most
        codes.clear()
        clients = [server.client() for _ in range(n)]
        for c in clients:
            c.info()  # connect first, so that the requests start together
        barrier = threading.Barrier(n)
        threads = [threading.Thread(target=one, args=(c, barrier)) for c in clients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        for c in clients:
            c.close()
        assert len(codes) == n
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
        assert grpc.StatusCode.OK in codes
        if grpc.StatusCode.RESOURCE_EXHAUSTED in codes:
            break
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes, codes
    m = server.metrics()
    assert m.get('reel_requests_total{method="Frames",code="ResourceExhausted"}', 0) >= 1
    # Once the queue drains, requests are admitted again.
    with server.client() as c:
        with c.embed(VIDEO, output="inline") as r:
            assert r.shape == (TOKENS, HIDDEN)
