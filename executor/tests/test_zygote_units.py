"""Unit tests of the zygote's parts: the fd handoff messages, the dataset cache, and when the
fork-server asks the zygote for spares."""

from __future__ import annotations

import os
import socket

import pytest

from pod_sandbox.executor import datacache, handoff


def test_a_spare_message_carries_its_four_fds():
    left, right = handoff.channel_pair()
    pipes = [os.pipe() for _ in range(4)]
    try:
        handoff.send(left, {"op": "spare", "pid": 7, "generation": 2, "scratch": "/s/x-1"}, [w for _r, w in pipes])
        message, fds = handoff.receive(right)  # type: ignore[misc]
        assert message == {"op": "spare", "pid": 7, "generation": 2, "scratch": "/s/x-1"}
        assert len(fds) == 4 and all(fd not in [w for _r, w in pipes] for fd in fds)
        for (r, _w), fd in zip(pipes, fds):  # each received fd is the same pipe
            os.write(fd, b"x")
            assert os.read(r, 1) == b"x"
            os.close(fd)
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)
        left.close()
        right.close()


def test_handoff_refuses_wrong_fd_counts_and_garbage_and_closes_what_came():
    left, right = handoff.channel_pair()
    r, w = os.pipe()
    try:
        handoff.send(left, {"op": "exit", "pid": 1, "status": 0, "maxrss_kb": 1}, [w])
        before = len(os.listdir("/proc/self/fd"))
        with pytest.raises(handoff.HandoffError, match="carried 1 fds, expected 0"):
            handoff.receive(right)
        assert len(os.listdir("/proc/self/fd")) == before  # the stray fd was closed
        left.send(b"not json")
        with pytest.raises(handoff.HandoffError, match="not JSON"):
            handoff.receive(right)
        left.send(b'["op"]')
        with pytest.raises(handoff.HandoffError, match="not a message"):
            handoff.receive(right)
        with pytest.raises(handoff.HandoffError, match="exceeds"):
            handoff.send(left, {"op": "cache", "names": ["x" * handoff.MAX_MESSAGE]})
        right.setblocking(False)
        with pytest.raises(BlockingIOError):
            handoff.receive(right)
        left.close()
        right.setblocking(True)
        assert handoff.receive(right) is None  # EOF
    finally:
        os.close(r)
        os.close(w)
        right.close()
        if left.fileno() != -1:
            left.close()


def test_channel_pair_keeps_message_boundaries():
    left, right = handoff.channel_pair()
    try:
        assert left.type == socket.SOCK_SEQPACKET
        handoff.send(left, {"op": "spawn", "n": 1})
        handoff.send(left, {"op": "spawn", "n": 2})
        assert handoff.receive(right) == ({"op": "spawn", "n": 1}, [])
        assert handoff.receive(right) == ({"op": "spawn", "n": 2}, [])
    finally:
        left.close()
        right.close()


def test_dataset_cache_loads_reloads_drops_and_counts_generations(tmp_path):
    cache = datacache.DatasetCache(str(tmp_path), budget_bytes=1 << 20)
    (tmp_path / "a.csv").write_text("x\n1\n2\n")
    checked = cache.refresh(["a.csv", "missing.csv"])
    assert checked["missing.csv"] is None and checked["a.csv"] == datacache.signature(str(tmp_path / "a.csv"))
    assert list(cache.view) == ["a.csv"] and int(cache.view["a.csv"]["x"].sum()) == 3
    assert cache.generation == 1
    cache.refresh(["a.csv"])
    assert cache.generation == 1  # unchanged file: nothing reloaded, spares stay valid
    (tmp_path / "a.csv").write_text("x\n10\n20\n30\n")
    cache.refresh(["a.csv"])
    assert int(cache.view["a.csv"]["x"].sum()) == 60 and cache.generation == 3  # dropped, reloaded
    (tmp_path / "a.csv").write_text("x\n" + "1\n" * 400_000)  # now over the budget
    cache.refresh(["a.csv"])
    assert "a.csv" not in cache.view and cache.generation == 4  # never served stale
    (tmp_path / "a.csv").unlink()
    (tmp_path / "b.parquet").write_bytes(b"not parquet")
    cache.refresh(["a.csv", "b.parquet"])
    assert cache.view == {} and cache.generation == 4  # a broken file is left to the child


def test_warm_tolerates_odd_frames():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame([[1, 2]], columns=["a", "a"])  # duplicate labels
    datacache.warm(frame)
    datacache.warm(pd.DataFrame())


def _spawn_requests(right: socket.socket) -> list[int]:
    """The ``n`` of every spawn request queued on the zygote's end."""
    asked = []
    while True:
        try:
            message, _fds = handoff.receive(right)  # type: ignore[misc]
        except BlockingIOError:
            return asked
        assert message["op"] == "spawn"
        asked.append(message["n"])


def test_no_spare_is_forked_while_an_answered_child_is_still_exiting():
    """The pool (two spares by default) is refilled only once the answered child's exit is
    reported: its teardown and the fork then run one after the other, not on both cores at
    once. A job that waits for a spare still gets one asked for at once."""
    from pod_sandbox.executor.config import load_config  # noqa: PLC0415
    from pod_sandbox.executor.forkserver import ForkServer, Job, PendingJob, Spare  # noqa: PLC0415

    server = ForkServer(load_config([], environ={}), [], (os.getpid(),))
    left, right = handoff.channel_pair()
    right.setblocking(False)
    server.zygote_sock = left
    try:
        spare = Spare(pid=10, job_w=-1, result_r=-1, out_r=-1, err_r=-1, generation=0, scratch="/s/x-1")
        job = Job(slot=0, spare=spare, scratch=spare.scratch, started=0.0, deadline=9.0, out_cap=1, result_cap=1)
        server.jobs[10] = job
        server.top_up(1.0)
        assert _spawn_requests(right) == [1]  # a job runs: one spare kept ready
        job.answered = True  # answered; its child is tearing its memory down
        server.top_up(1.0)
        assert _spawn_requests(right) == []
        server.pending.append(PendingJob(slot=1, payload=b"{}", timeout_s=1.0, out_cap=1, datasets=[],
                                         needs_seq=0, queued=1.0))
        server.top_up(1.0)
        assert _spawn_requests(right) == []  # the spare already asked for is this job's
        server.pending.append(PendingJob(slot=2, payload=b"{}", timeout_s=1.0, out_cap=1, datasets=[],
                                         needs_seq=0, queued=1.0))
        server.top_up(1.0)
        assert _spawn_requests(right) == [1]  # a second waiting job: asked for at once
        server.pending.clear()
        job.exited_at = 2.0  # the zygote reported the exit
        server.top_up(2.0)
        assert sum(_spawn_requests(right)) == 0  # 2 asked, none delivered yet: the pool is full
        server.requested = 0
        server.top_up(2.0)
        assert _spawn_requests(right) == [2]  # nothing runs: the whole pool
    finally:
        left.close()
        right.close()


def test_the_heap_moves_again_once_per_dataset_load_and_is_trimmed_otherwise(tmp_path, monkeypatch):
    """refresh_heap: after a load the heap moves (once); refused (a second thread) or with
    nothing on a memfd, the zygote trims instead; with --heapfile off it tries neither."""
    from pod_sandbox.executor import heapfile, zygote  # noqa: PLC0415
    from pod_sandbox.executor.config import load_config  # noqa: PLC0415

    calls: list[str] = []
    answers: list[heapfile.Moved | str] = []

    def move(*, again: bool) -> heapfile.Moved | str:
        calls.append(f"move again={again}")
        return answers.pop(0)

    def trim(fd: int, keep: list) -> int:
        calls.append(f"trim fd={fd} keep={keep}")
        return 7

    monkeypatch.setattr(heapfile, "move_anonymous_memory", move)
    monkeypatch.setattr(heapfile, "trim", trim)
    left, right = socket.socketpair()
    try:
        z = zygote.Zygote(load_config(["--workspace", str(tmp_path)], environ={}), left, (os.getpid(),))
        z.pagemap_fd = 99
        keep = [(4096, 4096)]
        assert z.refresh_heap(keep) == "trimmed: 7 other pages dropped"       # no load yet
        z.move_heap_due = True
        answers.append(heapfile.Moved(regions=3, bytes=70 << 20, seconds=0.04))
        assert z.refresh_heap(keep) == "moved again: 70 MB in 3 regions, 40 ms"
        assert z.refresh_heap(keep).startswith("trimmed")                       # only once per load
        z.move_heap_due = True
        answers.append("3 threads: another thread could write while memory is copied")
        assert z.refresh_heap(keep).startswith("trimmed") and not z.move_heap_due
        z.move_heap_due = True
        answers.append(heapfile.Moved(regions=0, bytes=0, seconds=0.0))       # no memfd heap
        assert z.refresh_heap(keep).startswith("trimmed")
        assert calls == ["trim fd=99 keep=[(4096, 4096)]", "move again=True", "trim fd=99 keep=[(4096, 4096)]",
                         "move again=True", "trim fd=99 keep=[(4096, 4096)]",
                         "move again=True", "trim fd=99 keep=[(4096, 4096)]"]
        off = zygote.Zygote(load_config(["--workspace", str(tmp_path), "--heapfile", "off"], environ={}),
                            left, (os.getpid(),))
        off.move_heap_due = True
        calls.clear()
        assert off.refresh_heap(keep) == "kept" and calls == []
    finally:
        left.close()
        right.close()
