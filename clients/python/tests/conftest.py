"""Fixtures: real ``reel serve`` processes on free local ports.

The binary is ``$REEL_BIN`` or ``<repo>/target/release/reel`` (``cargo build --release``).
Every server gets its own shared-memory folder (``--shm-dir``), so tests can see which
segments exist, and is stopped with SIGTERM at the end; a server that does not exit
cleanly (status 0 within 20 s) fails the test that owns it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

import pytest

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent
REPO = PACKAGE.parent.parent
VIDEO_DIR = REPO / "tests" / "data" / "video"
TINY_MODEL = REPO / "tests" / "data" / "tiny-qwen2.5-vl"
# The video most tests use: 320x240, 90 frames at 30 fps -> 6 frames at 2 fps.
VIDEO = "h264_main_bframes.mp4"

sys.path.insert(0, str(PACKAGE))  # run from a checkout without installing, too

from reel_client import Client, ReelError  # noqa: E402


def reel_bin() -> Path:
    path = Path(os.environ.get("REEL_BIN") or REPO / "target" / "release" / "reel")
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(
            f"reel binary not found at {path}: build it with `cargo build --release` in "
            f"{REPO}, or set REEL_BIN=/path/to/reel",
            pytrace=False,
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ReelServer:
    """One ``reel serve`` process."""

    def __init__(self, workdir: Path, device: str = "cpu", extra: Optional[list] = None, env=None):
        self.workdir = workdir
        self.port = free_port()
        self.metrics_port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.shm_dir = workdir / "shm"
        self.shm_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "server.log"
        self.args = [
            str(reel_bin()),
            "serve",
            "--listen",
            self.target,
            "--metrics-listen",
            f"127.0.0.1:{self.metrics_port}",
            "--media-root",
            str(VIDEO_DIR),
            "--model",
            str(TINY_MODEL),
            "--device",
            device,
            "--shm-dir",
            str(self.shm_dir),
            *(extra or []),
        ]
        self.token: Optional[str] = None
        if "--token" in self.args:
            self.token = self.args[self.args.index("--token") + 1]
        self._log = open(self.log_path, "wb")
        server_env = dict(os.environ)
        server_env.pop("REEL_TOKEN", None)
        server_env.update(env or {})
        self.proc = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, env=server_env
        )
        self._wait_ready()

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def _wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        last: Optional[Exception] = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"reel serve exited with {self.proc.returncode} at start-up:\n{self.log()}",
                    pytrace=False,
                )
            try:
                with Client(self.target, token=self.token, timeout=2) as c:
                    c.info()
                return
            except ReelError as e:
                last = e
                time.sleep(0.1)
        self.proc.kill()
        pytest.fail(f"reel serve did not answer Info within {timeout}s ({last}):\n{self.log()}")

    def client(self, **kw) -> Client:
        kw.setdefault("shm_dir", str(self.shm_dir))
        kw.setdefault("token", self.token)
        return Client(self.target, **kw)

    def segments(self) -> list:
        return sorted(p.name for p in self.shm_dir.iterdir())

    def metrics(self) -> dict:
        """The Prometheus gauges/counters as {line name with labels: value}."""
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                self._log.close()
                pytest.fail(f"reel serve ignored SIGTERM for {timeout}s:\n{self.log()}")
        self._log.close()
        return self.proc.returncode


def _stop_and_check(server: ReelServer) -> None:
    code = server.stop()
    assert code == 0, f"reel serve exited with {code} after SIGTERM:\n{server.log()}"


@contextlib.contextmanager
def reel_server(tmp_path_factory, *extra, device="cpu", env=None) -> Iterator[ReelServer]:
    """A ``reel serve`` with the flags ``extra`` in a fresh folder for the ``with`` block;
    stopped at its end, which fails unless the server exits cleanly."""
    s = ReelServer(tmp_path_factory.mktemp("reel-server"), device=device, extra=list(extra), env=env)
    try:
        yield s
    finally:
        _stop_and_check(s)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The shared server: CPU, defaults, the tiny model, the fixture videos."""
    with reel_server(tmp_path_factory) as s:
        yield s


@pytest.fixture
def make_server(tmp_path_factory):
    """Starts extra servers with more flags for one test: make_server("--token", "x")."""
    with contextlib.ExitStack() as started:

        def make(*extra, device="cpu", env=None):
            return started.enter_context(reel_server(tmp_path_factory, *extra, device=device, env=env))

        yield make


@pytest.fixture
def client(server):
    c = server.client()
    yield c
    c.close()


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
