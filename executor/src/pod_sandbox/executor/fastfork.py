"""fork() for the single-threaded zygote, without CPython's after-fork machinery (~1 ms per spare).

``os.fork()`` runs ``PyOS_AfterFork_Child`` in every child: it re-initialises the runtime's
locks and runs each ``os.register_at_fork`` callback (``threading``, ``logging``, ``random``,
``concurrent.futures``). Those are code the zygote itself never runs, so in each fresh child
they take the interpreter's first, cold steps and write to pages it shares with the zygote:
~0.9 ms of CPU and ~380 copy-on-write faults before the spare's first line, against ~0.2 ms and
85 faults for the ``fork()`` underneath (measured with the warm stack loaded, 60 forks each).

They exist for locks another thread may hold at the moment of the fork. The zygote has one
Python thread, and forks from its own loop, outside any of those locks, so in its children they
would only re-initialise unlocked locks to unlocked, and ``threading`` would find the same main
thread under the same ident. The one callback with an effect, ``random``'s reseed, the zygote
does itself before each fork (:mod:`.seeding`). The fork goes through
``ctypes.PyDLL``, so the GIL stays held across it, as ``os.fork()`` holds it. C libraries'
``pthread_atfork`` handlers (pyarrow's allocator, OpenBLAS) still run: that is libc's ``fork()``.
While another Python thread is alive it falls back to ``os.fork()``.
"""

from __future__ import annotations

import _thread
import ctypes
import os
import threading

_libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held, as os.fork() holds it
_libc.fork.restype = ctypes.c_int
_libc.fork.argtypes = []


def single_threaded() -> bool:
    """True when this process runs no Python thread but the calling one."""
    return threading.active_count() == 1 and _thread._count() == 0  # noqa: SLF001 - the C-level count


def fork() -> int:
    """Like ``os.fork()`` (0 in the child, the child's pid in the parent, ``OSError`` on failure),
    minus CPython's after-fork work when this process is single-threaded."""
    if not single_threaded():
        return os.fork()
    pid = int(_libc.fork())
    if pid < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return pid
