"""How the HTTP process knows, within a second, that executions can run: the fork-server's
heartbeat and what it knows of the zygote, on one shared page.

The HTTP process maps the page (shared, anonymous) before it forks the fork-server. Each turn of
the fork-server's loop (at least every :data:`BEAT_S`) writes the time and the zygote's state
there; ``/ready`` reads it (:meth:`Heartbeat.problems`). A fork-server that is stopped (SIGSTOP,
a debugger) or stuck shows as a stale beat, a zygote that is stopped, silent or being replaced
as its state. The zygote unmaps the page at once, so no spare and no user code has it.
"""

from __future__ import annotations

import mmap
import struct
import time

#: The fork-server's loop turns at least this often (seconds).
BEAT_S = 0.2
#: A beat older than this: ``/ready`` answers 503 (the fork-server is stopped or stuck).
STALE_S = 1.0
#: A beat older than this: ``/health`` answers 503 too, so the liveness probe ends the pod (a
#: pod near its memory limit can stall every process for seconds: that is no reason to end it).
DEAD_S = 30.0

#: The zygote's states, as the fork-server sees them.
ZYGOTE_OK, ZYGOTE_STARTING, ZYGOTE_SILENT, ZYGOTE_GONE = 0, 1, 2, 3
_ZYGOTE_REASONS = {ZYGOTE_STARTING: "zygote starting (a new one after a death, or the first)",
                   ZYGOTE_SILENT: "zygote not answering",
                   ZYGOTE_GONE: "zygote gone (too many deaths)"}
_FORMAT = "=qi"  # beat (CLOCK_MONOTONIC ns), zygote state


class Heartbeat:
    """The shared page. Made by the HTTP process before ``fork()``; written by the fork-server."""

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, mmap.PAGESIZE, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self.beat(ZYGOTE_STARTING)

    def beat(self, zygote_state: int) -> None:
        """The fork-server's loop: "I am turning now; the zygote is in ``zygote_state``"."""
        struct.pack_into(_FORMAT, self._page, 0, time.monotonic_ns(), zygote_state)

    def read(self) -> tuple[float, int]:
        """Seconds since the last beat, and the zygote's state then."""
        beat_ns, state = struct.unpack_from(_FORMAT, self._page, 0)
        return (time.monotonic_ns() - beat_ns) / 1e9, state

    def problems(self) -> list[str]:
        """Why executions cannot run now (``/ready``'s reasons), or nothing."""
        age, state = self.read()
        if age > STALE_S:
            return [f"fork-server not responding for {age:.1f} s"]
        reason = _ZYGOTE_REASONS.get(state)
        return [reason] if reason else []

    def dead(self) -> bool:
        """The fork-server has not turned for :data:`DEAD_S` (``/health``: the pod is useless)."""
        return self.read()[0] > DEAD_S

    def close(self) -> None:
        """Unmap the page (the zygote does, before any child of its own exists)."""
        self._page.close()


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` (``R``, ``S``, ``D``, ``T`` stopped, ``t`` traced, ``Z``...),
    or None when it is gone. ``/proc/<pid>/stat`` is readable even for a non-dumpable process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None


def stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped (by a signal or a tracer): it runs nothing until continued."""
    return process_state(pid) in ("T", "t")
