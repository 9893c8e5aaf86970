"""A spare forked and set up in one call into C, so neither the zygote nor the spare runs the
Python of that set-up between the fork and the spare's wait for its job.

After every ``fork()`` each page the zygote and its children share is copy-on-write again, so
each first write to one costs a fault and a 4 KiB copy. In Python, making a spare's pipes,
forking, closing its fds, loading its seccomp layer and making its scratch directory ran
``os``, ``ctypes`` and ``posixpath`` code in the zygote and in every spare. ``spawn.c`` (built
by ``executor/scripts/build-native.sh`` into ``_spawn.so``) does it with libc calls: see
:meth:`Spawner.spawn`. Measured (executor README): 15-25 fewer faults per fork in the zygote and
~45 per spare (most pages the Python touched, the job touches anyway), 0.4-0.5 ms less CPU per
execution at concurrency 8. Without the built helper, or while the zygote runs another Python
thread, the zygote does it in Python as before (:meth:`.zygote.Zygote.fork_spare`); user code
sees the same process either way.
"""

from __future__ import annotations

import ctypes
import os

LIBRARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_spawn.so")
#: The spare's job and result pipes (stdin, stdout and stderr are 0-2).
JOB_FD = 3
RESULT_FD = 4


class Spawner:
    """``spawn_spare`` of ``_spawn.so``, loaded once, with the spare's fixed arguments bound."""

    def __init__(self, session_filter: bytes, failed_code: int, library: str = LIBRARY) -> None:
        """``session_filter``: the raw BPF layer each spare attaches after its ``setsid()``;
        ``failed_code``: its exit status when its set-up fails. ``OSError`` if the library
        cannot be loaded."""
        lib = ctypes.PyDLL(library)  # PyDLL: the GIL stays held across fork(), as os.fork() holds it
        self._spawn = lib.spawn_spare
        self._spawn.restype = ctypes.c_long
        self._spawn.argtypes = [ctypes.POINTER(ctypes.c_int), ctypes.c_char_p, ctypes.c_char_p,
                                ctypes.c_char_p, ctypes.c_char_p, ctypes.c_long, ctypes.c_int,
                                ctypes.c_int]
        self._filter = ctypes.create_string_buffer(session_filter, len(session_filter) or 1)
        self._filter_len = len(session_filter)
        self._failed_code = failed_code
        self._ends = (ctypes.c_int * 4)()

    def spawn(self, scratch: str, parent_pid: int) -> tuple[int, list[int]]:
        """Fork a spare. In the parent: its pid and the parent's pipe ends (job write end, then
        the result, stdout and stderr read ends, those three non-blocking). In the child: 0 and
        its ends (job read, result, stdout and stderr write: ``[JOB_FD, RESULT_FD, 1, 2]``),
        already a session leader with ``PDEATHSIG``, fds 0-4 only, the seccomp layer attached,
        in its new ``scratch`` directory (with ``exports/charts``). ``OSError`` when no child
        was made."""
        path = os.fsencode(scratch)
        pid = self._spawn(self._ends, path, path + b"/exports", path + b"/exports/charts",
                          self._filter, self._filter_len, parent_pid, self._failed_code)
        if pid < 0:
            raise OSError(-pid, os.strerror(-pid))
        if pid == 0:
            return 0, [JOB_FD, RESULT_FD, 1, 2]
        return int(pid), list(self._ends)


def load(session_filter: bytes, failed_code: int, library: str = LIBRARY) -> Spawner | str:
    """A :class:`Spawner`, or why there is none (not built, cannot be loaded)."""
    if not os.path.exists(library):
        return f"{os.path.basename(library)} is not built (executor/scripts/build-native.sh)"
    try:
        return Spawner(session_filter, failed_code, library)
    except (OSError, AttributeError) as exc:
        return f"cannot load {library}: {exc}"
