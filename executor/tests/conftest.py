"""Shared fixtures: real executor processes started on free loopback ports."""

from __future__ import annotations

import os
import sys
from typing import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from podlike import podlike_supported, start_podlike  # noqa: E402
from server_process import ExecutorProcess, start_executor  # noqa: E402

MIB = 1024 * 1024


@pytest.fixture(scope="session")
def server() -> Iterator[ExecutorProcess]:
    """A token-protected executor with default limits."""
    proc = start_executor("--slots", "2", "--max-output-bytes", str(64 * 1024))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def hostile_server() -> Iterator[ExecutorProcess]:
    """The executor as a sandbox pod runs it, for the hostile-code suite: the pod template's
    arguments and the shipped defaults, inside the pod's memory, CPU, pids and volume limits,
    read-only root, its uid (:mod:`podlike`). ``limits`` is what ``GET /v1/info`` reports."""
    why = podlike_supported()
    if why:
        pytest.skip(f"pod-like executor: {why}")
    proc = start_podlike()
    proc.limits_info = proc.request("GET", "/v1/info").json()["limits"]
    yield proc
    proc.stop()
