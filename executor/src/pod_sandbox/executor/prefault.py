"""Idle spares copy the pages an execution will write: learned in a probe, populated in the spare.

A spare shares the zygote's memory copy-on-write. A small query then takes ~1,150 page faults on
its critical path, nearly all first writes to inherited pages (reference counts, allocator
pools), each copying 4 KiB. Those pages are much the same for every execution, so:

* :func:`learn` runs in a *probe*, a child the zygote forks for this alone. It runs only this
  package's own steps (:func:`typical_execution`), never user code, and reports which inherited
  pages they wrote, read from its own ``/proc/self/pagemap`` (a page that was shared before and
  is private after was copied). The probe is confined exactly like a spare first (own session,
  the children's seccomp filter, rlimits) because it must turn dumpable for the moment it opens
  its pagemap (a non-dumpable process's ``/proc/self`` belongs to root): a process of the same
  uid that got hold of it then would hold no more than a spare. For the same reason the zygote
  treats its report as untrusted input (:func:`decode`: bounded, validated).
* :func:`populate` runs in every spare once it is confined and has waited ``IDLE_S`` for its
  job in vain: ``madvise(MADV_POPULATE_WRITE)`` on those ranges takes the copies there and then.
  It checks the job pipe between small batches and stops as soon as the job is there. A spare
  that gets its job at once (a busy server) does no extra work; an idle server spends idle CPU.
  Populating never changes memory contents; it only ends the sharing early.

Kernels before 5.14 (and sandboxes such as gVisor) answer ``EINVAL``: :func:`supported` says so
in the probe, which then learns nothing, and spares do no more than before.
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import select
import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import isolation

MADV_POPULATE_WRITE = 23  # Linux 5.14
PAGE = mmap.PAGESIZE
#: Mappings larger than this (allocator reservations) are not scanned.
MAX_SCAN_PAGES = 1 << 20
#: A gap of at most this many pages between two learned pages is populated too (one call, not two).
GAP_PAGES = 1
#: At most this many pages are learned (a bound on what one spare copies: 64 MiB).
MAX_PAGES = 16384
#: A probe's report is at most this long (MAX_PAGES single-page ranges fit in ~0.6 MB).
MAX_REPORT_BYTES = 1 << 20
#: The probe's CPU rlimit (its work takes ~30-100 ms).
PROBE_CPU_S = 5
#: Ranges populated between two looks at the job pipe (~0.1 ms of work).
BATCH = 16
#: A spare populates only once it has waited this long for a job: a busy server hands spares
#: their jobs at once and spends nothing on them; an idle one has the CPU to spare.
IDLE_S = 0.02

Range = tuple[int, int]  # (start address, length in bytes)

_libc = ctypes.CDLL(None, use_errno=True)
_madvise = _libc.madvise
_madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_madvise.restype = ctypes.c_int


def supported() -> bool:
    """True when this kernel populates writable page tables on request (MADV_POPULATE_WRITE)."""
    buffer = ctypes.create_string_buffer(2 * PAGE)
    page = (ctypes.addressof(buffer) + PAGE - 1) & ~(PAGE - 1)
    return _madvise(page, PAGE, MADV_POPULATE_WRITE) == 0


def writable_ranges(maps: str) -> list[Range]:
    """The private writable mappings in a ``/proc/<pid>/maps`` text, as (start, length)."""
    ranges = []
    for line in maps.splitlines():
        fields = line.split()
        if len(fields) < 2 or not fields[1].startswith("rw") or fields[1][3:4] != "p":
            continue
        low, high = (int(part, 16) for part in fields[0].split("-"))
        if 0 < high - low <= MAX_SCAN_PAGES * PAGE:
            ranges.append((low, high - low))
    return ranges


def private_pages(pagemap_fd: int, ranges: Sequence[Range]) -> list[Any]:
    """Per range, a boolean array: a private page (not a file's), present, mapped by this process alone."""
    import numpy as np  # noqa: PLC0415 - preloaded in the zygote

    present, exclusive, file = np.uint64(1 << 63), np.uint64(1 << 56), np.uint64(1 << 61)
    out = []
    for start, length in ranges:
        raw = os.pread(pagemap_fd, (length // PAGE) * 8, (start // PAGE) * 8)
        entries = np.frombuffer(raw, dtype="<u8")
        # not a page of a file: a page of the zygote's memfd-backed heap that was only read
        # is present and may be mapped here alone, but it was not copied
        out.append(((entries & present) != 0) & ((entries & exclusive) != 0) & ((entries & file) == 0))
    return out


def to_ranges(pages: Iterable[int], gap_pages: int = GAP_PAGES) -> list[Range]:
    """Sorted page addresses as ranges, joining runs separated by at most ``gap_pages``."""
    runs: list[list[int]] = []
    for page in sorted(pages):
        if runs and page - runs[-1][1] <= gap_pages * PAGE:
            runs[-1][1] = page + PAGE
        else:
            runs.append([page, page + PAGE])
    return [(low, high - low) for low, high in runs]


def open_pagemap() -> int:
    """This process's ``/proc/self/pagemap``, opened read-only.

    A non-dumpable process (the zygote and its forks are) cannot open it: its ``/proc/self``
    files belong to root. It turns dumpable for the open and back at once; the fd stays valid."""
    if isolation.is_dumpable():
        return os.open("/proc/self/pagemap", os.O_RDONLY)
    isolation.prctl(isolation.PR_SET_DUMPABLE, 1)
    try:
        return os.open("/proc/self/pagemap", os.O_RDONLY)
    finally:
        isolation.make_undumpable()


def learn(work: Callable[[], object], *, max_pages: int = MAX_PAGES) -> list[Range]:
    """Run ``work`` and return the ranges of pages it made private: inherited pages it copied
    and untouched pages of existing mappings it filled. Call it in a fresh fork (a probe)."""
    import numpy as np  # noqa: PLC0415

    with open("/proc/self/maps", encoding="ascii") as maps:
        ranges = writable_ranges(maps.read())
    fd = open_pagemap()
    try:
        before = private_pages(fd, ranges)
        work()
        after = private_pages(fd, ranges)
    finally:
        os.close(fd)
    pages: list[int] = []
    for (start, _length), was, now in zip(ranges, before, after):
        fresh = np.flatnonzero(now & ~was)
        pages.extend(start + int(i) * PAGE for i in fresh)
        if len(pages) >= max_pages:
            break
    return to_ranges(pages[:max_pages])


def typical_execution(datasets: Mapping[str, Any], data_dir: str) -> Callable[[], None]:
    """The probe's work: what every execution does around the user's code (the job message,
    the namespace, compile and exec, the result's encoding and frame) and the prewarm steps (a
    filter, ``.loc``, reductions and a group-by on a few rows of each staged frame and of a tiny
    one). Only this package's code; nothing is written outside the process."""

    def work() -> None:
        from .. import wire  # noqa: PLC0415
        from . import child, framing, prewarm  # noqa: PLC0415

        code = "result = {'type': 'number', 'value': 1}\n"
        job = json.loads(framing.dumps({"code": code, "datasets": {}, "limits": {}}))
        namespace = child.build_namespace(job["datasets"], datasets, data_dir)
        exec(compile(job["code"], "<sandbox>", "exec"), namespace)  # noqa: S102 - our own constant
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for step in prewarm.steps(datasets):
                step()
        result = wire.encode_result(namespace["result"], cwd=data_dir)
        framing.dumps({"status": "ok", "result": result, "error": None, "peak_rss_bytes": 0})

    return work


def encode(ranges: Sequence[Range]) -> bytes:
    """The probe's report on its pipe."""
    return json.dumps([[start, length] for start, length in ranges]).encode()


def decode(data: bytes) -> list[Range] | None:
    """The zygote's reading of a probe's report; None when it is malformed (a probe that died),
    too long, or names more than ``MAX_PAGES`` pages or pages that are not page-aligned."""
    if len(data) > MAX_REPORT_BYTES:
        return None
    try:
        items = json.loads(data)
        if not isinstance(items, list):
            return None
        ranges = [(int(start), int(length)) for start, length in items]
    except (ValueError, TypeError):
        return None
    if any(start <= 0 or length <= 0 or start % PAGE or length % PAGE for start, length in ranges):
        return None
    if sum(length for _, length in ranges) > MAX_PAGES * PAGE:
        return None
    return ranges


def populate(ranges: Sequence[Range], job_fd: int | None = None, idle_s: float = IDLE_S) -> int:
    """Write-fault ``ranges`` in this process, once ``job_fd`` has stayed quiet for ``idle_s``,
    until done or ``job_fd`` is readable (or closed); return the bytes populated. Ranges no longer
    mapped are skipped; an unsupporting kernel stops it at the first call."""
    poller = None
    if job_fd is not None:
        poller = select.poll()
        poller.register(job_fd, select.POLLIN)
        if poller.poll(int(idle_s * 1000)):
            return 0
    done = 0
    for index, (start, length) in enumerate(ranges):
        if poller is not None and index % BATCH == 0 and poller.poll(0):
            break
        if _madvise(start, length, MADV_POPULATE_WRITE) == 0:
            done += length
        elif ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
            break
    return done


def probe_main(report_fd: int, parent_pid: int, datasets: Mapping[str, Any], data_dir: str,
               seccomp_layer: bytes, limits: isolation.ChildLimits) -> None:
    """The probe, right after the zygote forked it: confine, learn, report on ``report_fd``.

    Confined like a spare before anything else (own session, stdio on /dev/null, no fd but its
    report pipe, the children's seccomp filter, the rlimits ``limits``), it dies with the zygote
    and runs only :func:`typical_execution`. ``seccomp_layer`` is attached after ``setsid()``:
    the zygote passes the session layer (its own filter is inherited), a test the whole filter.
    The caller ``_exit``s."""
    from . import child, framing  # noqa: PLC0415 - child imports this module

    os.setsid()
    isolation.die_with_parent()
    if os.getppid() != parent_pid:
        return
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    child.close_fds_except({0, 1, 2, report_fd})
    child.default_signals()
    isolation.load_seccomp(seccomp_layer)
    isolation.apply_rlimits(limits)
    ranges = learn(typical_execution(datasets, data_dir)) if supported() else []
    framing.write_all_fd(report_fd, encode(ranges))
