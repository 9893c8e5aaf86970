"""Shared fixtures: real executor processes started on free loopback ports."""

from __future__ import annotations

import os
import sys
from typing import Iterator

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from server_process import ExecutorProcess, sandbox_uid_tasks, start_executor  # noqa: E402

MIB = 1024 * 1024


@pytest.fixture(scope="session")
def server() -> Iterator[ExecutorProcess]:
    """A token-protected executor with default limits."""
    proc = start_executor("--slots", "2", "--max-output-bytes", str(64 * 1024))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def hostile_server() -> Iterator[ExecutorProcess]:
    """An executor with tight limits for the hostile-code suite."""
    proc = start_executor(
        "--slots", "2", "--timeout", "5", "--max-timeout", "30", "--memory-mb", "512",
        "--max-output-bytes", str(64 * 1024), "--max-result-bytes", str(8 * MIB),
        # RLIMIT_NPROC counts the uid's tasks host-wide (e.g. sandbox pods of a running local
        # cluster): give user code 48 on top of what exists now.
        "--max-processes", str(sandbox_uid_tasks() + 48), "--max-code-bytes", str(256 * 1024), "--max-body-bytes", str(512 * 1024),
        "--max-upload-bytes", str(4 * MIB), "--max-file-bytes", str(64 * MIB), "--max-open-files", "128",
    )
    yield proc
    proc.stop()
