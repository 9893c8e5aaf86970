"""Move the warm stack's memory onto a sealed memfd before the zygote is forked (fork/exit cost).

``fork()`` copies the page table entry of every resident page of private *anonymous* memory,
and each child's exit tears them all down again: ~74 MB (19k pages) of imported pandas, numpy,
matplotlib and pyarrow objects, though a child touches only 450 (trivial code) to 2,300 (a
query) of them. For a private *file* mapping the kernel copies no entries at fork for pages the
parent has not written since (the child faults the pages it uses in from the page cache, 16 at
a time). So the fork-server, once the stack is imported, exercised and ``gc.freeze()``d, moves
its private anonymous memory into a memfd and maps that MAP_PRIVATE over the same addresses:
the same bytes at the same places, each later write copy-on-write as before. The memfd is sealed
(no write, grow or shrink) and its descriptor closed, so nothing can change the shared pages.

The zygote then maps many of those pages again, and writes some, while it loads and warms
datasets: fork() copies the entries of every page it maps in a mapping where it wrote one. After
a load it moves its heap mappings again (``again``), its written pages with them, onto a new
memfd whose mappings start empty, and maps in only the pages a typical execution reads (learned
by the prefault probe). Where that cannot be done (a second thread), :func:`trim` drops the
entries of the pages it never wrote but for those: ~4,900 fewer entries per fork and exit with a
staged 100k-row frame.

The copy must not race with a write, so it runs in C (``heapfile.c``, built by
``executor/scripts/build-native.sh`` into ``_heapfile.so``, called with the GIL held) and only
while this process has a single thread; otherwise, without the built helper, or with
``--heapfile off``, memory stays anonymous and everything works as before, only slower.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from dataclasses import dataclass
from typing import Sequence

LIBRARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_heapfile.so")
#: Regions smaller than this stay anonymous: too few pages to be worth a mapping of their own.
MIN_REGION_BYTES = 64 * 1024


@dataclass(frozen=True)
class Moved:
    """What :func:`move_anonymous_memory` did: regions moved, resident bytes copied, time."""

    regions: int
    bytes: int
    seconds: float


def thread_count() -> int:
    """This process's threads (from /proc/self/task)."""
    return len(os.listdir("/proc/self/task"))


def move_anonymous_memory(library: str = LIBRARY, *, again: bool = False) -> Moved | str:
    """Move this process's private anonymous memory onto a sealed memfd; or say why not.

    ``again`` (the zygote, after a dataset load): move the earlier memfd's mappings instead, with
    the pages written since, onto a new memfd whose mappings start empty, so that ``fork()``
    copies no entry of them until this process touches them again. The frames' own arrays stay
    where they are (children read them whole). The old memfd lives on while a child maps it."""
    if not os.path.exists(library):
        return f"{os.path.basename(library)} is not built (executor/scripts/build-native.sh)"
    threads = thread_count()
    if threads != 1:
        return f"{threads} threads: another thread could write while memory is copied"
    try:
        lib = ctypes.PyDLL(library)  # PyDLL: the GIL stays held, no Python runs meanwhile
    except OSError as exc:
        return f"cannot load {library}: {exc}"
    lib.heapfile_move.restype = ctypes.c_long
    lib.heapfile_move.argtypes = [ctypes.c_ulong, ctypes.c_int, ctypes.POINTER(ctypes.c_ulong)]
    copied = ctypes.c_ulong(0)
    started = time.monotonic()
    regions = lib.heapfile_move(MIN_REGION_BYTES, int(again), ctypes.byref(copied))
    if regions < 0:
        return f"memfd copy failed: {os.strerror(-regions) if -regions in errno.errorcode else regions}"
    return Moved(regions=int(regions), bytes=int(copied.value), seconds=time.monotonic() - started)


def anonymous_bytes(pid: int | str = "self") -> int:
    """A process's private anonymous memory in bytes (``Anonymous:`` of smaps_rollup)."""
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) * 1024
    return 0


def trim(pagemap_fd: int, keep: Sequence[tuple[int, int]], library: str = LIBRARY) -> int | str:
    """Drop this process's page-table entries for pages of the memfd heap it maps but never
    wrote, except the ``keep`` ranges (start, length); return how many, or say why not.

    Each such entry is copied by every ``fork()`` and torn down by every child's exit, though a
    child touches few of them: the zygote maps many while it loads and warms datasets. The data
    stays in the memfd; a page touched again is faulted back in. ``pagemap_fd`` is this process's
    ``/proc/self/pagemap`` (the caller opens it: a non-dumpable process must turn dumpable for
    that). Pages this process wrote (copied, now anonymous) are never dropped."""
    if not os.path.exists(library):
        return f"{os.path.basename(library)} is not built"
    merged: list[list[int]] = []
    for start, length in sorted(keep):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], start + length - merged[-1][0])
        else:
            merged.append([start, length])
    pairs = (ctypes.c_ulong * (2 * len(merged) or 1))(*(value for pair in merged for value in pair))
    lib = ctypes.PyDLL(library)
    lib.heapfile_trim.restype = ctypes.c_long
    lib.heapfile_trim.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_ulong), ctypes.c_long]
    dropped = lib.heapfile_trim(pagemap_fd, pairs, len(merged))
    if dropped < 0:
        return f"trim failed: {os.strerror(-dropped)}"
    return int(dropped)
