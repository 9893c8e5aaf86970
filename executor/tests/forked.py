"""Run a test body in a forked child (single-threaded, its changes die with it); its return value is the exit code."""

from __future__ import annotations

import os
from typing import Callable


def in_child(fn: Callable[[], int]) -> int:
    """Fork, run ``fn`` in the child and exit with its result (99 if it raised); return that code."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = fn()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)
