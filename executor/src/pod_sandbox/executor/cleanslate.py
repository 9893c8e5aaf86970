"""Each execution starts from a clean slate: what one left outside the uploaded datasets is gone
before the next runs.

User code shares the pod's uid, so it can write wherever the server can: its own scratch
directory (removed after it), the other spares' scratch directories, the scratch root, ``/tmp``
and ``/dev/shm``. Two steps undo that, neither on a request's critical path but the first:

* :func:`fresh_scratch` and :func:`sweep_shared`: a spare, when its job arrives and before the
  job's code runs, empties its working directory of anything but an empty ``exports/charts``
  (another execution may have planted files or symlinks there while it waited) and removes
  what was added to the shared directories below (a few ``listdir`` calls when nothing was);
* :func:`sweep`: the zygote, after each child's exit, removes from ``/tmp``, ``/dev/shm`` and
  ``/var/tmp`` every entry that was not there when the fork-server started
  (:func:`snapshot`), and from the scratch root every entry that is not a live child's
  directory. Only when those directories are the pod's own: a server that is PID 1 of its
  namespace, as in a container (elsewhere ``/tmp`` is the host's, shared with others).

System V IPC and POSIX message queues are refused to user code (:mod:`.isolation`), and it
starts no process, so nothing it made lives on in memory either.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from typing import Mapping

#: Directories every process of the pod may write, besides the workspace and scratch.
SHARED_DIRS = ("/tmp", "/dev/shm", "/var/tmp")
#: The scratch directories the zygote makes: ``x-`` and 32 hex digits.
SCRATCH_NAME = re.compile(r"x-[0-9a-f]{32}\Z")
EXPORTS = "exports"
CHARTS = "charts"


def _names(path: str) -> set[str] | None:
    try:
        return set(os.listdir(path))
    except OSError:
        return None


def snapshot(http_pid: int, scratch_root: str) -> dict[str, set[str]]:
    """The names in each shared directory now (at the fork-server's start, before any user code),
    or nothing when the directories are not the pod's own (the HTTP process is not PID 1)."""
    if http_pid != 1:
        return {}
    out = {}
    for path in SHARED_DIRS:
        names = _names(path)
        if names is not None and not os.path.samefile(path, scratch_root):
            out[path] = names
    return out


def _remove(path: str) -> None:
    """Remove ``path`` without following it: a symlink is unlinked, a directory removed."""
    try:
        st = os.lstat(path)
    except OSError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass


def sweep_shared(before: Mapping[str, set[str]], scratch_root: str) -> int:
    """Remove what was added to the shared directories since ``before``, and every entry of
    ``scratch_root`` that cannot be a spare's directory (a directory named like those the zygote
    makes); how many entries went. Nothing without a snapshot (not the pod's own directories)."""
    if not before:
        return 0
    removed = 0
    for path, names in before.items():
        for name in (_names(path) or set()) - names:
            _remove(os.path.join(path, name))
            removed += 1
    for name in _names(scratch_root) or set():
        path = os.path.join(scratch_root, name)
        if not (SCRATCH_NAME.match(name) and os.path.isdir(path) and not os.path.islink(path)):
            _remove(path)
            removed += 1
    return removed


def sweep(before: Mapping[str, set[str]], scratch_root: str, live: set[str]) -> int:
    """:func:`sweep_shared`, and every entry of ``scratch_root`` that is not in ``live`` (the
    directories of the zygote's children) removed. Returns how many entries went. Does nothing
    without a snapshot (the directories are not the pod's own)."""
    if not before:
        return 0
    removed = sweep_shared(before, scratch_root)
    keep = {os.path.basename(p) for p in live}
    for name in (_names(scratch_root) or set()) - keep:
        _remove(os.path.join(scratch_root, name))
        removed += 1
    return removed


def fresh_scratch(scratch: str) -> bool:
    """Make the working directory (the spare's scratch, ``scratch``) hold exactly an empty
    ``exports/charts`` again, whatever was planted there, without following a link. Returns
    whether it had to."""
    # Another execution (same uid) may have taken its permissions away; by its path, since a
    # directory without search permission cannot be named as ".".
    os.chmod(scratch, 0o700)
    with os.scandir(".") as it:
        entries = list(it)
    if (len(entries) == 1 and entries[0].name == EXPORTS and entries[0].is_dir(follow_symlinks=False)):
        with os.scandir(EXPORTS) as it:
            inner = list(it)
        if (len(inner) == 1 and inner[0].name == CHARTS and inner[0].is_dir(follow_symlinks=False)
                and not os.listdir(os.path.join(EXPORTS, CHARTS))):
            return False
    for entry in entries:
        _remove(entry.name)
    os.mkdir(EXPORTS)
    os.mkdir(os.path.join(EXPORTS, CHARTS))
    return True
