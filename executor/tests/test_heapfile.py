"""heapfile: the warm stack's memory moved onto a sealed memfd, same bytes at the same addresses."""

from __future__ import annotations

import errno
import hashlib
import os
import threading

import pytest
from forked import in_child

from pod_sandbox.executor import heapfile
from pod_sandbox.executor.config import load_config

pytestmark = pytest.mark.skipif(not os.path.exists(heapfile.LIBRARY),
                                reason="_heapfile.so not built (executor/scripts/build-native.sh)")
MEMFD = "memfd:pod-sandbox-zygote-heap"


def _memfd_ranges() -> list[str]:
    """The memfd's mappings as /proc/self/map_files names them (hex without leading zeros)."""
    with open("/proc/self/maps", encoding="ascii") as fh:
        return ["-".join(f"{int(a, 16):x}" for a in line.split()[0].split("-")) for line in fh if MEMFD in line]


def test_moved_memory_keeps_its_bytes_and_stops_being_anonymous():
    def body() -> int:
        blob = bytearray(os.urandom(1 << 20)) * 8          # 8 MiB of resident anonymous memory
        words = [f"w{i}" * 3 for i in range(50_000)]        # and plenty of small Python objects
        digest, total = hashlib.sha256(blob).hexdigest(), sum(map(len, words))
        before = heapfile.anonymous_bytes()
        moved = heapfile.move_anonymous_memory()
        if not isinstance(moved, heapfile.Moved) or moved.bytes < (8 << 20):
            return 1
        if heapfile.anonymous_bytes() > before - (6 << 20):
            return 2
        if hashlib.sha256(blob).hexdigest() != digest or sum(map(len, words)) != total:
            return 3
        if not _memfd_ranges():
            return 4
        blob[0] ^= 0xFF                                     # writes stay private (copy-on-write)
        words.append("new")
        pid = os.fork()
        if pid == 0:
            blob[1] ^= 0xFF
            os._exit(0)
        os.waitpid(pid, 0)
        blob[0] ^= 0xFF
        return 0 if hashlib.sha256(blob).hexdigest() == digest else 5

    assert in_child(body) == 0


def test_the_memfd_is_sealed_against_writes():
    """Whoever gets a handle on the shared pages (root may, through map_files) cannot change them."""
    def body() -> int:
        blob = bytearray(b"x" * (1 << 20))
        if not isinstance(heapfile.move_anonymous_memory(), heapfile.Moved):
            return 1
        path = f"/proc/self/map_files/{_memfd_ranges()[0]}"
        try:
            fd = os.open(path, os.O_RDWR)
        except PermissionError:
            return 0 if os.geteuid() != 0 else 2           # only root may open it at all
        except OSError as exc:
            return 0 if exc.errno in (errno.EACCES, errno.EPERM) else 3
        try:
            os.pwrite(fd, b"evil", 0)
            return 4
        except PermissionError:
            return 0 if blob[:1] == b"x" else 5
        finally:
            os.close(fd)

    assert in_child(body) == 0


def test_refused_while_another_thread_runs():
    def body() -> int:
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        try:
            reason = heapfile.move_anonymous_memory()
        finally:
            stop.set()
            thread.join()
        if not isinstance(reason, str) or "threads" not in reason or _memfd_ranges():
            return 1
        return 0

    assert in_child(body) == 0


def test_without_the_built_helper_it_says_so(tmp_path):
    reason = heapfile.move_anonymous_memory(str(tmp_path / "_heapfile.so"))
    assert isinstance(reason, str) and "not built" in reason


def test_the_switch_defaults_on_and_names_itself_when_wrong():
    assert load_config([], {}).heapfile is True
    assert load_config(["--heapfile", "off"], {}).heapfile is False
    assert load_config([], {"SANDBOX_HEAPFILE": "off"}).heapfile is False
    with pytest.raises(SystemExit, match="heapfile"):
        load_config([], {"SANDBOX_HEAPFILE": "maybe"})
