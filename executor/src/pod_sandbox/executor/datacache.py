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
            warm(frame)
            self.entries[name] = CachedFrame(sig, frame, nbytes)
            self.view[name] = frame
            self.generation += 1
        return checked
