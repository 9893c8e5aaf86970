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
PAGE = os.sysconf("SC_PAGE_SIZE")


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


def _memfd_inodes() -> set[str]:
    with open("/proc/self/maps", encoding="ascii") as fh:
        return {line.split()[4] for line in fh if MEMFD in line}


def test_moved_again_the_heap_keeps_its_bytes_and_starts_unmapped():
    """The zygote's second move (after a dataset load): the earlier memfd's mappings, with the
    pages written since, onto a new memfd; no page of it mapped until touched, no anonymous copy
    left, every byte the same; anonymous regions made since stay anonymous."""
    def body() -> int:
        blob = bytearray(os.urandom(1 << 20)) * 4               # 4 MiB, moved by the first move
        if not isinstance(heapfile.move_anonymous_memory(), heapfile.Moved):
            return 1
        first_inodes = _memfd_inodes()
        for i in range(0, len(blob), 2 * PAGE):                  # half its pages written since
            blob[i] ^= 0x5A
        digest = hashlib.sha256(blob).hexdigest()
        later = bytearray(os.urandom(1 << 20)) * 2               # a new anonymous region
        later_digest = hashlib.sha256(later).hexdigest()
        anonymous = heapfile.anonymous_bytes()
        moved = heapfile.move_anonymous_memory(again=True)
        if not isinstance(moved, heapfile.Moved) or moved.regions < 1 or moved.bytes < (4 << 20):
            return 2
        if _memfd_inodes() & first_inodes or not _memfd_inodes():
            return 3                                             # all on the new memfd
        if heapfile.anonymous_bytes() > anonymous - (1 << 20):
            return 4                                             # the written pages went too
        import ctypes
        address = ctypes.addressof((ctypes.c_char * len(blob)).from_buffer(blob))
        first = (address + PAGE - 1) // PAGE * PAGE
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        try:
            # Well inside the blob: a read of its neighbours (its malloc header, objects beside it
            # on the heap) maps the pages of their 64 KiB fault-around window, up to 15 of ours.
            mapped = sum(_present(fd, first + 32 * PAGE, 512))
        finally:
            os.close(fd)
        if mapped:
            return 5
        if hashlib.sha256(blob).hexdigest() != digest or hashlib.sha256(later).hexdigest() != later_digest:
            return 6
        blob[0] ^= 0xFF                                          # still copy-on-write, still private
        return 0 if hashlib.sha256(blob).hexdigest() != digest else 7

    assert in_child(body) == 0


def test_moving_again_without_an_earlier_move_moves_nothing():
    def body() -> int:
        moved = heapfile.move_anonymous_memory(again=True)
        return 0 if isinstance(moved, heapfile.Moved) and moved.regions == 0 and not _memfd_ranges() else 1

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


def _present(pagemap_fd: int, address: int, pages: int) -> list[bool]:
    """Which of ``pages`` pages from ``address`` this process maps (pagemap bit 63)."""
    raw = os.pread(pagemap_fd, pages * 8, address // PAGE * 8)
    return [bool(int.from_bytes(raw[i * 8:i * 8 + 8], "little") >> 63) for i in range(pages)]



def test_trim_drops_only_unwritten_heap_pages_outside_keep_and_loses_nothing():
    """The zygote's trim: pages of the memfd heap it only read lose their entries (their bytes
    stay in the memfd), those it wrote (its own copies) and the kept ones stay mapped."""
    def body() -> int:
        import ctypes

        blob = bytearray(os.urandom(PAGE)) * 256              # 1 MiB, resident
        digest = hashlib.sha256(blob).hexdigest()
        if not isinstance(heapfile.move_anonymous_memory(), heapfile.Moved):
            return 1
        address = ctypes.addressof((ctypes.c_char * len(blob)).from_buffer(blob))
        first = (address + PAGE - 1) // PAGE * PAGE               # the blob's first whole page
        index = (first - address)
        blob[index + 10 * PAGE] ^= 0xFF                           # page 10: written, its own copy
        sum(blob[index + i * PAGE] for i in range(64))            # pages 0-63: read, mapped
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        try:
            if not all(_present(fd, first, 64)):
                return 2
            dropped = heapfile.trim(fd, [(first + 20 * PAGE, 4 * PAGE)])  # keep pages 20-23
            present = _present(fd, first, 64)
        finally:
            os.close(fd)
        if not isinstance(dropped, int) or dropped < 58:
            return 3
        if [i for i in range(64) if present[i]] != [10, 20, 21, 22, 23]:
            return 4
        blob[index + 10 * PAGE] ^= 0xFF
        return 0 if hashlib.sha256(blob).hexdigest() == digest else 5  # every byte still there

    assert in_child(body) == 0


def test_trim_without_a_heap_drops_nothing():
    def body() -> int:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
        try:
            return 0 if heapfile.trim(fd, []) == 0 else 1
        finally:
            os.close(fd)

    assert in_child(body) == 0


def test_trim_without_the_built_helper_says_so(tmp_path):
    reason = heapfile.trim(0, [], str(tmp_path / "_heapfile.so"))
    assert isinstance(reason, str) and "not built" in reason
