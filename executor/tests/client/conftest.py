"""Fixtures for the client tests: a fake executor, a real local executor, the real cluster."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakes import FakeExecutor  # noqa: E402

CACHE = Path("/var/cache/pandasai-pod-sandbox")


@pytest.fixture
def fake_executor() -> Iterator[FakeExecutor]:
    """A protocol double of the executor on a loopback port."""
    with FakeExecutor() as fake:
        yield fake


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def executor_command() -> list[str] | None:
    """How to start the real executor here, or None when it is not installed."""
    exe = shutil.which("pod-sandbox-executor") or str(Path(sys.executable).parent / "pod-sandbox-executor")
    if os.path.exists(exe):
        return [exe]
    try:
        import pod_sandbox.executor.cli  # noqa: F401, PLC0415
    except ImportError:
        return None
    return [sys.executable, "-m", "pod_sandbox.executor"]


@pytest.fixture(scope="module")
def local_executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``pod-sandbox-executor --claimable`` on 127.0.0.1, shared by a module's tests."""
    yield from _run_executor(tmp_path_factory.mktemp("executor"))


@pytest.fixture
def fresh_local_executor(tmp_path: Path) -> Iterator[str]:
    """A real executor of one's own (not yet claimed)."""
    yield from _run_executor(tmp_path)


def _run_executor(tmp_path: Path) -> Iterator[str]:
    cmd = executor_command()
    if cmd is None:
        pytest.skip("pod-sandbox-executor is not installed (executor server extra missing)")
    port = _free_port()
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    proc = subprocess.Popen(
        cmd + ["--claimable", "--host", "127.0.0.1", "--port", str(port),
               "--workspace", str(workspace), "--scratch-root", str(tmp_path / "scratch")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                pytest.fail(f"executor exited with {proc.returncode}:\n{out[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("executor not ready within 60 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
