"""Prefaulting idle spares: the probe learns the pages an execution writes, spares copy them early."""

from __future__ import annotations

import io
import mmap
import os
import resource
import time

import pytest

from pod_sandbox.executor import prefault
from server_process import SANDBOX_UID, start_executor

PAGE = mmap.PAGESIZE

needs_populate = pytest.mark.skipif(not prefault.supported(), reason="kernel without MADV_POPULATE_WRITE (< 5.14)")


def _in_fork(fn) -> bytes:
    """Run ``fn(report_fd)`` in a forked child; return what it wrote there plus what it returned
    (bytes or None). The child never returns; an exception in it fails the test here."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            data = fn(w)
            while data:
                data = data[os.write(w, data):]
        except BaseException:  # noqa: BLE001 - report by exit code
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 1 << 16):
        chunks.append(chunk)
    os.close(r)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0, "the forked child failed"
    return b"".join(chunks)


def _area(pages: int) -> tuple[mmap.mmap, int]:
    """An anonymous private mapping, every page present (written), and its address."""
    import ctypes

    area = mmap.mmap(-1, pages * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(pages):
        area[i * PAGE] = 1
    view = ctypes.c_char.from_buffer(area)
    address = ctypes.addressof(view)
    del view
    return area, address


def test_writable_ranges_keep_private_writable_mappings_only():
    maps = (
        "55d0a0000000-55d0a0021000 rw-p 00000000 00:00 0                          [heap]\n"
        "7f0000000000-7f0000001000 r--p 00000000 08:01 42                         /usr/lib/x.so\n"
        "7f0000001000-7f0000003000 rw-p 00001000 08:01 42                         /usr/lib/x.so\n"
        "7f0000003000-7f0000004000 rw-s 00000000 00:01 7                          /dev/shm/shared\n"
        "7f1000000000-7f2000000000 rw-p 00000000 00:00 0 \n"  # a 64 GiB reservation: not scanned
        "7ffd00000000-7ffd00001000 ---p 00000000 00:00 0 \n"
    )
    assert prefault.writable_ranges(maps) == [(0x55D0A0000000, 0x21000), (0x7F0000001000, 0x2000)]


def test_to_ranges_joins_pages_across_small_gaps():
    pages = [0x10000, 0x11000, 0x13000, 0x20000, 0x1F000]
    assert prefault.to_ranges(pages, gap_pages=1) == [(0x10000, 0x4000), (0x1F000, 0x2000)]
    assert prefault.to_ranges(pages, gap_pages=0) == [(0x10000, 0x2000), (0x13000, 0x1000), (0x1F000, 0x2000)]
    assert prefault.to_ranges([]) == []


def _report(written: object, read: object = ()) -> bytes:
    import json

    return json.dumps({"written": written, "read": list(read) if isinstance(read, tuple) else read}).encode()


@pytest.mark.parametrize("report", [
    b"", b"{", b"[]", b"[[4096, 4096]]", b"{}", b'{"written": []}', b'{"read": []}',
    *(_report(bad) for bad in ([[1, 4096]], [[4096, 100]], [[-4096, 4096]], [[4096]], [["a", 4096]],
                               [[4096, 0]], {"a": 1}, "x")),
    *(_report([], bad) for bad in ([[1, 4096]], [[4096, 100]], [[4096, 0]], None)),
])
def test_a_malformed_probe_report_is_no_report(report):
    assert prefault.decode(report) is None


def test_a_report_round_trips():
    learned = prefault.Learned([(0x7F0000000000, 3 * PAGE), (0x7F0000010000, PAGE)], [(0x7F0000020000, PAGE)])
    assert prefault.decode(prefault.encode(learned)) == learned
    assert prefault.decode(prefault.encode(prefault.Learned([], []))) == prefault.Learned([], [])


def _learn_in_fork(work) -> prefault.Learned:
    """What :func:`prefault.learn` reports for ``work`` run in a fresh fork, through the report."""
    report = prefault.decode(_in_fork(lambda _fd: prefault.encode(prefault.learn(work))))
    assert report is not None
    return report


def _pages(ranges, address: int, pages: int) -> set[int]:
    """The indexes of the pages of ``ranges`` within ``pages`` pages from ``address``."""
    return {(start + offset - address) // PAGE for start, length in ranges
            for offset in range(0, length, PAGE) if address <= start + offset < address + pages * PAGE}


def test_learn_finds_the_inherited_pages_a_fork_wrote_and_no_others():
    area, address = _area(64)
    written = [3, 10, 11, 12, 40]

    def work() -> None:
        for i in written:
            area[i * PAGE] = 2

    try:
        report = _learn_in_fork(work)
        learned = {start + offset for start, length in report.written for offset in range(0, length, PAGE)}
        ours = {address + i * PAGE for i in range(64)}
        assert {address + i * PAGE for i in written} <= learned
        # Gaps of one page are joined (page 4 is not written but lies in no gap): nothing else of ours.
        assert learned & ours == {address + i * PAGE for i in written}
    finally:
        area.close()


@needs_populate
def test_populated_pages_take_no_fault_when_the_work_writes_them():
    pages = 256
    area, address = _area(pages)

    def write_all_and_count(populate: bool) -> bytes:
        def run(_fd: int) -> bytes:
            if populate:
                assert prefault.populate([(address, pages * PAGE)], None) == pages * PAGE
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for i in range(pages):
                area[i * PAGE] = 3
            return str(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before).encode()

        return run

    try:
        cold = int(_in_fork(write_all_and_count(False)))
        warm = int(_in_fork(write_all_and_count(True)))
        assert cold >= pages, cold  # each first write copies the page shared with the parent
        assert warm < 16, warm
        assert area[0] == 1  # populating changed nothing the parent sees
    finally:
        area.close()


@needs_populate
def test_populate_waits_for_an_idle_spare_and_stops_for_the_job():
    area, address = _area(64)
    ranges = [(address + i * PAGE, PAGE) for i in range(0, 64, 2)]  # 32 ranges, 2 batches
    r, w = os.pipe()
    try:
        started = time.monotonic()
        assert prefault.populate(ranges, r, idle_s=0.05) == 32 * PAGE  # no job: all of it
        assert time.monotonic() - started >= 0.045  # but only after the idle wait
        os.write(w, b"job")
        assert prefault.populate(ranges, r, idle_s=0.05) == 0  # the job is there: nothing
        assert prefault.populate(ranges, r, idle_s=0) == 0
    finally:
        for fd in (r, w):
            os.close(fd)
        area.close()


@needs_populate
def test_populate_skips_ranges_that_are_gone():
    area, address = _area(4)
    gone = mmap.mmap(-1, PAGE)
    import ctypes

    view = ctypes.c_char.from_buffer(gone)
    gone_address = ctypes.addressof(view)
    del view
    gone.close()
    try:
        done = prefault.populate([(gone_address, PAGE), (address, 4 * PAGE)], None)
        assert done == 4 * PAGE
    finally:
        area.close()


def test_a_non_dumpable_probe_confines_itself_then_reports_what_it_learned(tmp_path):
    """probe_main as the zygote runs it: forked from a non-dumpable process, so it must turn
    dumpable for a moment to open its pagemap; confined (seccomp: no network) before it learns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401 - preloaded, as in the zygote (the sandbox uid may not read this venv)
    import pandas  # noqa: F401

    from pod_sandbox import wire  # noqa: F401
    from pod_sandbox.executor import child, framing, isolation, prewarm  # noqa: F401

    layers = isolation.compile_seccomp_layers(())
    limits = isolation.ChildLimits(cpu_seconds=5, address_space_bytes=isolation.address_space_bytes() + (1 << 30),
                                   max_processes=1024, max_file_bytes=0, max_open_files=64)
    parent = os.getpid()

    def probe(report_fd: int) -> None:
        if os.geteuid() == 0:  # as the pod runs it: no capability opens a root-owned file
            os.setgroups([])
            os.setgid(SANDBOX_UID)
            os.setuid(SANDBOX_UID)
        isolation.make_undumpable()
        isolation.load_seccomp(layers.base)  # the zygote's layer, which a probe inherits
        prefault.probe_main(report_fd, parent, {}, str(tmp_path), layers.sessions, limits)
        import socket

        with pytest.raises(PermissionError):  # the seccomp filter is loaded
            socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        assert not isolation.is_dumpable()  # dumpable only for the pagemap's open
        assert os.getsid(0) == os.getpid()

    report = prefault.decode(_in_fork(probe))
    assert report is not None
    if prefault.supported():
        # a typical execution writes hundreds of inherited pages
        assert sum(length for _, length in report.written) >= 100 * PAGE, report


def test_an_oversized_report_is_no_report():
    many = [(PAGE * (2 * i + 1), PAGE) for i in range(prefault.MAX_PAGES + 1)]
    assert prefault.decode(prefault.encode(prefault.Learned(many, []))) is None
    assert prefault.decode(prefault.encode(prefault.Learned([], many))) is None
    assert prefault.decode(b" " * (prefault.MAX_REPORT_BYTES + 1) + b"{}") is None


def _file_area(pages: int) -> tuple[mmap.mmap, int]:
    """A private mapping of a memfd (like the zygote's warm stack), no page mapped yet, and its
    address."""
    import ctypes

    fd = os.memfd_create("prefault-test")
    try:
        os.write(fd, bytes(range(256)) * (pages * PAGE // 256))
        area = mmap.mmap(fd, pages * PAGE, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
    finally:
        os.close(fd)
    view = ctypes.c_char.from_buffer(area)
    address = ctypes.addressof(view)
    del view
    return area, address


def test_learn_finds_the_file_pages_a_fork_read_apart_from_those_it_wrote():
    """A read maps its page and (fault-around) up to 15 neighbours already in the page cache:
    they are learned too, but nothing far from a read, and no page the work wrote."""
    area, address = _file_area(128)
    read, written = [2, 40], [41]

    def work() -> None:
        sum(area[i * PAGE] for i in read)
        for i in written:
            area[i * PAGE] = 7

    try:
        report = _learn_in_fork(work)
        mapped = _pages(report.read, address, 128)
        assert set(read) <= mapped
        assert not mapped & set(written)
        assert not mapped & set(range(64, 128))  # never near a read
        assert _pages(report.written, address, 128) == set(written)
    finally:
        area.close()


@needs_populate
def test_map_in_maps_file_pages_without_changing_them():
    area, address = _file_area(128)
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        assert not any(_present(fd, address, 128))  # a fresh private mapping: nothing mapped yet
        assert prefault.map_in([(address + 32 * PAGE, 64 * PAGE)]) == 64 * PAGE
        present = {i for i, mapped in enumerate(_present(fd, address, 128)) if mapped}
        assert set(range(32, 96)) <= present  # and (fault-around) up to 15 neighbours each side
        assert not present & (set(range(0, 16)) | set(range(112, 128)))
        assert area[40 * PAGE] == 0 and area[40 * PAGE + 1] == 1  # the file's bytes, unchanged
    finally:
        os.close(fd)
        area.close()


def _present(pagemap_fd: int, address: int, pages: int) -> list[bool]:
    """Which of ``pages`` pages from ``address`` this process maps (pagemap bit 63)."""
    raw = os.pread(pagemap_fd, pages * 8, address // PAGE * 8)
    return [bool(int.from_bytes(raw[i * 8:i * 8 + 8], "little") >> 63) for i in range(pages)]

def test_config_prefault_flag_and_environment():
    from pod_sandbox.executor.config import load_config

    assert load_config([], {}).prefault is True
    assert load_config(["--prefault", "off"], {}).prefault is False
    assert load_config(["--prefault", "on"], {"SANDBOX_PREFAULT": "0"}).prefault is True
    assert load_config([], {"SANDBOX_PREFAULT": "no"}).prefault is False
    with pytest.raises(SystemExit, match="prefault"):
        load_config([], {"SANDBOX_PREFAULT": "sometimes"})


# User code counting the page faults of its own query: the copies an idle, prefaulted spare has
# already taken are not among them.
FAULTS = """
import resource
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
df = execute_sql_query('SELECT 1')
value = float(df.loc[df['amount'] > 50, 'amount'].mean())
result = {'type': 'string', 'value': f"{resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before} {value}"}
"""


SO_FAR = "import resource\nresult = {'type': 'number', 'value': resource.getrusage(resource.RUSAGE_SELF).ru_minflt}"


def _staged(proc) -> dict[str, str]:
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame({"region": ["n", "s", "e", "w"] * 2500, "amount": np.arange(10_000, dtype="float64")})
    buf = io.BytesIO()
    frame.to_parquet(buf)
    r = proc.request("PUT", "/v1/files/sales.parquet", buf.getvalue(), {"Content-Type": "application/octet-stream"})
    assert r.status == 201, r.body
    datasets = {"SELECT 1": "sales.parquet"}
    proc.run("result = {'type': 'number', 'value': 1}", datasets=datasets)  # loads the cache
    return datasets


def _populated(on, off, timeout_s: float = 20.0) -> bool:
    """Wait until every idle spare of ``on`` holds ~1,400 more copied pages than any of ``off``."""
    deadline = time.monotonic() + timeout_s
    while True:
        warm, cold = on.spare_minor_faults(), off.spare_minor_faults()
        if (len(warm) >= on.idle_spares() and len(cold) >= off.idle_spares()
                and min(warm) > max(cold) + 500):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


@needs_populate
def test_over_http_idle_prefaulted_spares_spare_the_query_its_copies():
    on = start_executor("--slots", "2")  # on by default
    off = start_executor("--slots", "2", "--prefault", "off")
    try:
        # A fresh server's first spares waited for the first report and, idle, populated it.
        assert _populated(on, off), (on.spare_minor_faults(), off.spare_minor_faults())
        faults, so_far = {}, {}
        for name, proc in (("on", on), ("off", off)):
            # The very first execution finds ~1,400 more pages copied before user code starts.
            so_far[name] = proc.run(SO_FAR)["result"]["value"]
        datasets = {name: _staged(proc) for name, proc in (("on", on), ("off", off))}
        for name, proc in (("on", on), ("off", off)):
            counts = []
            for _ in range(5):
                # Idle: the new spares have learned ranges and have populated them.
                assert _populated(on, off), (on.spare_minor_faults(), off.spare_minor_faults())
                body = proc.run(FAULTS, datasets=datasets[name])
                assert body["status"] == "ok", body
                count, value = body["result"]["value"].split()
                assert float(value) == 5025.0  # mean of 51..9999
                counts.append(int(count))
            faults[name] = sorted(counts)[2]
        assert faults["on"] < 0.75 * faults["off"], faults
        assert so_far["on"] > so_far["off"] + 500, so_far
        assert "prefault probe learned" in on.log()
        assert "prefault probe" not in off.log()
        assert on.wait_no_leftovers() == [] and off.wait_no_leftovers() == []
    finally:
        on.stop()
        off.stop()
