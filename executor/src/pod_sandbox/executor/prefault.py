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

The probe also reports the pages of the memfd-backed warm stack (:mod:`.heapfile`) its work
only read: it first drops its own entries for the heap pages nobody wrote (:func:`heapfile.trim`),
so what its work maps shows up in its pagemap. The zygote (:func:`map_in`) keeps mapped those
pages and drops the rest of what it mapped while loading datasets; spares inherit just those.

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
from functools import partial
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

from . import heapfile, isolation, prewarm

MADV_POPULATE_READ = 22  # Linux 5.14
MADV_POPULATE_WRITE = 23  # Linux 5.14
PAGE = mmap.PAGESIZE
#: Mappings larger than this (allocator reservations) are not scanned.
MAX_SCAN_PAGES = 1 << 20
#: A gap of at most this many pages between two learned pages is populated too (one call, not two).
GAP_PAGES = 1
#: At most this many pages are learned (a bound on what one spare copies: 64 MiB).
MAX_PAGES = 16384
#: A probe's report is at most this long (two lists of MAX_PAGES single-page ranges fit in ~1.2 MB).
MAX_REPORT_BYTES = 2 << 20
#: The probe's CPU rlimit (its work takes ~30-100 ms).
PROBE_CPU_S = 5
#: The probe's filter, reductions and group-by run on up to this many rows of each staged frame:
#: large arrays take other code paths (and pages) than the few rows a spare's warm-up uses.
PROBE_ROWS = 100_000
#: Ranges populated between two looks at the job pipe (~0.1 ms of work).
BATCH = 16
#: A spare populates only once it has waited this long for a job: a busy server hands spares
#: their jobs at once and spends nothing on them; an idle one has the CPU to spare.
IDLE_S = 0.02

Range = tuple[int, int]  # (start address, length in bytes)


class Learned(NamedTuple):
    """What a probe learned: the inherited pages an execution writes (spares copy them while
    idle) and the pages of the memfd-backed warm stack it only reads (the zygote maps them in
    itself, so every spare inherits their page-table entries instead of faulting them in)."""

    written: list[Range]
    read: list[Range]

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


def page_states(pagemap_fd: int, ranges: Sequence[Range]) -> list[tuple[Any, Any]]:
    """Per range, two boolean arrays from this process's pagemap: pages private to it (present,
    mapped by it alone, not a file's: copied or filled) and pages of a file mapped in it (present,
    a file's: in the memfd-backed warm stack, a page that was only read)."""
    import numpy as np  # noqa: PLC0415 - preloaded in the zygote

    present, exclusive, file = np.uint64(1 << 63), np.uint64(1 << 56), np.uint64(1 << 61)
    out = []
    for start, length in ranges:
        raw = os.pread(pagemap_fd, (length // PAGE) * 8, (start // PAGE) * 8)
        entries = np.frombuffer(raw, dtype="<u8")
        mapped = (entries & present) != 0
        of_file = (entries & file) != 0
        out.append((mapped & ((entries & exclusive) != 0) & ~of_file, mapped & of_file))
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


def learn(work: Callable[[], object], *, max_pages: int = MAX_PAGES,
          forget: Callable[[int], object] | None = None) -> Learned:
    """Run ``work`` and return the pages it made private (inherited pages it copied, untouched
    pages of existing mappings it filled) and the file pages mapped after it that it did not
    write (read from the memfd-backed warm stack), each as ranges. Call it in a fresh fork (a
    probe). ``forget(pagemap_fd)``, called first, drops the inherited entries of pages never
    written (:func:`heapfile.trim`), so the pages ``work`` reads show up as mapped by it."""
    import numpy as np  # noqa: PLC0415

    with open("/proc/self/maps", encoding="ascii") as maps:
        ranges = writable_ranges(maps.read())
    fd = open_pagemap()
    try:
        if forget is not None:
            forget(fd)
        before = page_states(fd, ranges)
        work()
        after = page_states(fd, ranges)
    finally:
        os.close(fd)
    written: list[int] = []
    read: list[int] = []
    for (start, _length), (was_private, _was_file), (private, of_file) in zip(ranges, before, after):
        if len(written) < max_pages:
            written.extend(start + int(i) * PAGE for i in np.flatnonzero(private & ~was_private))
        if len(read) < max_pages:
            read.extend(start + int(i) * PAGE for i in np.flatnonzero(of_file))
    return Learned(to_ranges(written[:max_pages]), to_ranges(read[:max_pages], gap_pages=0))


def typical_execution(datasets: Mapping[str, Any], data_dir: str) -> Callable[[], None]:
    """The probe's work: what every execution does around the user's code (the job message,
    the namespace, ``execute_sql_query`` of each staged frame, compile and exec, the result's
    encoding and frame) and the prewarm steps (a filter, ``.loc``, reductions and a group-by) on
    up to ``PROBE_ROWS`` rows of each staged frame and on a tiny one. Only this package's code;
    nothing is written outside the process."""

    queries = {f"SELECT * FROM {name}": name for name in list(datasets)[:prewarm.MAX_DATASETS]}

    def work() -> None:
        from .. import wire  # noqa: PLC0415
        from . import child, framing  # noqa: PLC0415

        code = "".join(f"execute_sql_query({query!r})\n" for query in queries)
        code += "result = {'type': 'number', 'value': 1}\n"
        job = json.loads(framing.dumps({"code": code, "datasets": queries, "limits": {}}))
        namespace = child.build_namespace(job["datasets"], datasets, data_dir)
        exec(compile(job["code"], child.CODE_FILENAME, "exec"), namespace)  # noqa: S102 - our own constant
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for step in prewarm.steps(datasets, rows=PROBE_ROWS):
                step()
        result = wire.encode_result(namespace["result"], cwd=data_dir)
        framing.dumps({"status": "ok", "result": result, "error": None, "peak_rss_bytes": 0})

    return work


def encode(learned: Learned) -> bytes:
    """The probe's report on its pipe."""
    return json.dumps({"written": [[start, length] for start, length in learned.written],
                       "read": [[start, length] for start, length in learned.read]}).encode()


def _valid_ranges(items: object) -> list[Range] | None:
    """``items`` as page-aligned ranges of at most ``MAX_PAGES`` pages in all, or None."""
    if not isinstance(items, list):
        return None
    try:
        ranges = [(int(start), int(length)) for start, length in items]
    except (ValueError, TypeError):
        return None
    if any(start <= 0 or length <= 0 or start % PAGE or length % PAGE for start, length in ranges):
        return None
    if sum(length for _, length in ranges) > MAX_PAGES * PAGE:
        return None
    return ranges


def decode(data: bytes) -> Learned | None:
    """The zygote's reading of a probe's report; None when it is malformed (a probe that died),
    too long, or either list names more than ``MAX_PAGES`` pages or pages that are not
    page-aligned."""
    if len(data) > MAX_REPORT_BYTES:
        return None
    try:
        report = json.loads(data)
    except ValueError:
        return None
    if not isinstance(report, dict):
        return None
    written = _valid_ranges(report.get("written"))
    read = _valid_ranges(report.get("read"))
    if written is None or read is None:
        return None
    return Learned(written, read)


def map_in(ranges: Sequence[Range]) -> int:
    """Read-fault ``ranges`` in this process (the zygote: every later fork copies their
    page-table entries); return the bytes mapped. Ranges no longer mapped are skipped; an
    unsupporting kernel stops it at the first call."""
    done = 0
    for start, length in ranges:
        if _madvise(start, length, MADV_POPULATE_READ) == 0:
            done += length
        elif ctypes.get_errno() in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
            break
    return done


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
               seccomp_layer: bytes, limits: isolation.ChildLimits, heapfile_in_use: bool = False) -> None:
    """The probe, right after the zygote forked it: confine, learn, report on ``report_fd``.

    Confined like a spare before anything else (own session, stdio on /dev/null, no fd but its
    report pipe, the children's seccomp filter, the rlimits ``limits``), it dies with the zygote
    and runs only :func:`typical_execution`. ``seccomp_layer`` is attached after ``setsid()``:
    the zygote passes the session layer (its own filter is inherited), a test the whole filter.
    ``heapfile_in_use``: the warm stack is on the memfd, so the probe drops its inherited entries
    of it first and reports the heap pages its work reads. The caller ``_exit``s."""
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
    forget = partial(heapfile.trim, keep=()) if heapfile_in_use else None
    learned = learn(typical_execution(datasets, data_dir), forget=forget) if supported() else Learned([], [])
    framing.write_all_fd(report_fd, encode(learned))
