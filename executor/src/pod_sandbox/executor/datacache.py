"""Staged datasets loaded once in the zygote, so every spare forked after inherits them warm.

Each load, reload or drop bumps ``generation``: spares forked before it hold the old data and are
discarded by the fork-server (it only hands jobs to spares of the current generation).

User code can write the data directory (same uid), so a file is never trusted: it is read only
if it is a regular, singly linked file within a quarter of the budget left
(:func:`files.read_regular`: no link followed, nothing that blocks), into memory, once. Those
bytes are first parsed by a **vetting** process forked for the purpose, under rlimits (a job's
address-space allowance, CPU seconds, no files, nothing else open) and a wall-clock deadline,
first in line for the OOM killer; only when it reports a frame that fits the budget does the
zygote parse the same bytes itself. A file that expands past the limits (a small Parquet file
of 250M rows), takes too long or does not parse is left uncached: the child reads it itself,
under its own limits.
"""

from __future__ import annotations

import io
import json
import logging
import os
import select
import signal
import stat
import time
from dataclasses import dataclass
from typing import Any

from . import child, files, isolation

log = logging.getLogger("pod_sandbox.datacache")

Signature = tuple[int, int, int, int]
#: A vetting parse (and so the zygote's own, of the same bytes) must finish within this; the
#: fork-server fails a job that waits 10 s for the zygote.
VET_TIMEOUT_S = 4.0
VET_REPORT_MAX = 4096


def signature(path: str) -> Signature | None:
    """What identifies one version of a regular file: inode, size, mtime and ctime (user code can
    reset mtime, not ctime); None when it is missing or not a regular file (never followed)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return stat_signature(st)


def stat_signature(st: os.stat_result) -> Signature | None:
    """:func:`signature` of a ``stat`` result."""
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def parse(name: str, data: bytes) -> Any:
    """The DataFrame in ``data`` (the content of the file ``name``), as the child would read it."""
    return child.read_data_file(io.BytesIO(data), use_threads=False, name=name)


@dataclass(frozen=True)
class VetLimits:
    """What a vetting parse may use."""

    memory_bytes: int
    max_processes: int
    timeout_s: float = VET_TIMEOUT_S


def vet(name: str, data: bytes, limits: VetLimits) -> int | str:
    """Parse ``data`` in a forked, confined process; the frame's size in bytes, or why not."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the vetting process: this package's parse, nothing else
        code = 1
        try:
            child.close_fds_except({2, write_fd})
            isolation.die_with_parent()
            import pandas  # noqa: F401, PLC0415 - imported (in the zygote: already) before the limits
            import pyarrow.parquet  # noqa: F401, PLC0415
            _first_for_the_oom_killer()
            isolation.apply_rlimits(isolation.ChildLimits(
                cpu_seconds=max(1, int(limits.timeout_s) + 1),
                address_space_bytes=isolation.address_space_bytes() + limits.memory_bytes,
                max_processes=limits.max_processes, max_file_bytes=0, max_open_files=32))
            frame = parse(name, data)
            report: dict[str, Any] = {"nbytes": int(frame.memory_usage(deep=False).sum())}
            code = 0
        except BaseException as exc:  # noqa: BLE001 - the report says what failed
            report = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        try:
            os.write(write_fd, json.dumps(report).encode()[:VET_REPORT_MAX])
        finally:
            os._exit(code)
    os.close(write_fd)
    try:
        raw = _read_until(read_fd, time.monotonic() + limits.timeout_s)
    finally:
        os.close(read_fd)
        if raw is None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _, status = os.waitpid(pid, 0)
    if raw is None:
        return f"not parsed within {limits.timeout_s:.0f} s"
    try:
        report = json.loads(raw)
    except ValueError:
        report = {}
    if isinstance(report.get("nbytes"), int) and os.waitstatus_to_exitcode(status) == 0:
        return int(report["nbytes"])
    if isinstance(report.get("error"), str):
        return report["error"]
    return f"the vetting process ended with wait status {status} (killed by a limit)"


def _read_until(fd: int, deadline: float) -> bytes | None:
    """Read ``fd`` to EOF (at most VET_REPORT_MAX bytes); None when the deadline passes first."""
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, VET_REPORT_MAX)
        if not chunk or len(data) >= VET_REPORT_MAX:
            return data
        data += chunk


def _first_for_the_oom_killer() -> None:
    """oom_score_adj 1000: past the pod's memory limit the kernel kills this process first.
    Its /proc files belong to root while it is not dumpable: dumpable just for the write."""
    try:
        isolation.prctl(isolation.PR_SET_DUMPABLE, 1)
        try:
            with open("/proc/self/oom_score_adj", "w", encoding="ascii") as fh:
                fh.write("1000")
        finally:
            isolation.prctl(isolation.PR_SET_DUMPABLE, 0)
    except OSError:
        pass


def warm(frame: Any) -> None:
    """Build the parts of a frame pandas makes lazily on first use (column Series, block layout,
    index and column lookup engines) once, here, so children inherit them instead of each
    building and writing them again. Best effort: a frame it cannot warm is still cached."""
    try:
        for column in frame.columns:
            frame[column]  # noqa: B018 - fills pandas' column cache
        if len(frame.columns):
            frame.columns.get_loc(frame.columns[0])
        if len(frame.index):
            frame.index.get_loc(frame.index[0])
        manager = getattr(frame, "_mgr", None)
        if manager is not None:
            getattr(manager, "blknos", None)
            getattr(manager, "blklocs", None)
    except Exception as exc:  # noqa: BLE001 - odd labels (duplicates, unhashables) are fine uncached
        log.debug("frame not warmed: %s", exc)


@dataclass
class CachedFrame:
    """One loaded dataset and the file version it came from."""

    signature: Signature
    frame: Any
    nbytes: int


class DatasetCache:
    """Datasets by file name, within a byte budget; ``view`` is what children read from."""

    def __init__(self, data_dir: str, budget_bytes: int, vet_limits: VetLimits | None = None) -> None:
        self.data_dir = data_dir
        self.budget_bytes = budget_bytes
        self.vet_limits = vet_limits or VetLimits(memory_bytes=max(4 * budget_bytes, 1 << 30), max_processes=4096)
        self.entries: dict[str, CachedFrame] = {}
        self.view: dict[str, Any] = {}
        self.generation = 0
        self._dir_fd: int | None = None

    def _drop(self, name: str) -> None:
        del self.entries[name]
        del self.view[name]
        self.generation += 1

    def dir_fd(self) -> int:
        """The data directory, opened once (never through a symlink)."""
        if self._dir_fd is None:
            self._dir_fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        return self._dir_fd

    def refresh(self, names: list[str]) -> dict[str, Signature | None]:
        """Bring these names up to date with the files; return the signature each was checked at.

        A file that changed is dropped before it is reloaded, so a version that no longer fits
        the budget (or no longer parses) is never served stale. Files that are missing, not
        regular, too large, too costly to parse or unreadable stay uncached: the child reads
        them itself and fails with a clear error where they are broken.
        """
        checked: dict[str, Signature | None] = {}
        for name in sorted(set(names)):
            sig = signature(os.path.join(self.data_dir, name))
            cached = self.entries.get(name)
            if cached is not None and cached.signature == sig:
                checked[name] = sig
                continue
            if cached is not None:
                self._drop(name)
            checked[name] = sig
            if sig is None:
                continue
            used = sum(c.nbytes for c in self.entries.values())
            left = self.budget_bytes - used
            try:
                data, st = files.read_regular(self.dir_fd(), name, max(0, left // 4))
            except (OSError, files.UnsafeFile) as exc:
                log.info("dataset %s not cached: %s", name, exc)
                continue
            sig = checked[name] = stat_signature(st)
            if sig is None:
                continue
            vetted = vet(name, data, self.vet_limits)
            if isinstance(vetted, str) or vetted > left:
                log.info("dataset %s not cached: %s", name,
                         vetted if isinstance(vetted, str) else f"{vetted} bytes, over the budget left ({left})")
                continue
            try:
                frame = parse(name, data)
                nbytes = int(frame.memory_usage(deep=False).sum())
            except Exception as exc:  # noqa: BLE001 - bad files fail in the child, with a traceback
                log.info("dataset %s not cached: %s", name, exc)
                continue
            del data
            if nbytes > left:
                continue
            warm(frame)
            self.entries[name] = CachedFrame(sig, frame, nbytes)
            self.view[name] = frame
            self.generation += 1
        return checked
