"""Staged datasets loaded once in the zygote, so every spare forked after inherits them warm.

Each load, reload or drop bumps ``generation``: spares forked before it hold the old data and are
discarded by the fork-server (it only hands jobs to spares of the current generation).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from . import child

log = logging.getLogger("pod_sandbox.datacache")

Signature = tuple[int, int, int]


def signature(path: str) -> Signature | None:
    """What identifies one version of a file: inode, size, mtime; None when it is not there."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass
class CachedFrame:
    """One loaded dataset and the file version it came from."""

    signature: Signature
    frame: Any
    nbytes: int


class DatasetCache:
    """Datasets by file name, within a byte budget; ``view`` is what children read from."""

    def __init__(self, data_dir: str, budget_bytes: int) -> None:
        self.data_dir = data_dir
        self.budget_bytes = budget_bytes
        self.entries: dict[str, CachedFrame] = {}
        self.view: dict[str, Any] = {}
        self.generation = 0

    def _drop(self, name: str) -> None:
        del self.entries[name]
        del self.view[name]
        self.generation += 1

    def refresh(self, names: list[str]) -> dict[str, Signature | None]:
        """Bring these names up to date with the files; return the signature each was checked at.

        A file that changed is dropped before it is reloaded, so a version that no longer fits
        the budget (or no longer parses) is never served stale. Files that are missing, too
        large or unreadable stay uncached: the child reads them itself and fails with a clear
        error where they are broken.
        """
        checked: dict[str, Signature | None] = {}
        for name in sorted(set(names)):
            path = os.path.join(self.data_dir, name)
            sig = signature(path)
            checked[name] = sig
            cached = self.entries.get(name)
            if cached is not None and cached.signature == sig:
                continue
            if cached is not None:
                self._drop(name)
            if sig is None:
                continue
            used = sum(c.nbytes for c in self.entries.values())
            if sig[1] * 4 > self.budget_bytes - used:
                continue
            try:
                frame = child.read_data_file(path, use_threads=False)
                nbytes = int(frame.memory_usage(deep=False).sum())
            except Exception as exc:  # noqa: BLE001 - bad files fail in the child, with a traceback
                log.info("dataset %s not cached: %s", name, exc)
                continue
            if nbytes > self.budget_bytes - used:
                continue
            self.entries[name] = CachedFrame(sig, frame, nbytes)
            self.view[name] = frame
            self.generation += 1
        return checked
