"""cleanslate: a spare's scratch directory made fresh, and what executions added to the shared
directories swept (the hostile suite plants the same things from user code on a pod-like
server: test_hostile.py::test_an_execution_leaves_nothing_for_the_next)."""

from __future__ import annotations

import os

from pod_sandbox.executor import cleanslate


def test_fresh_scratch_removes_what_was_planted_without_following_links(tmp_path, monkeypatch):
    victim = tmp_path / "victim.csv"
    victim.write_text("a\n1\n")
    scratch = tmp_path / "x-0"
    (scratch / "exports" / "charts").mkdir(parents=True)
    monkeypatch.chdir(scratch)
    assert cleanslate.fresh_scratch(str(scratch)) is False  # as made: nothing to do
    os.symlink(victim, scratch / "out.csv")
    os.symlink(tmp_path, scratch / "exports" / "charts" / "up")
    os.mkfifo(scratch / "fifo")
    (scratch / "deep" / "er").mkdir(parents=True)
    os.chmod(scratch, 0)
    assert cleanslate.fresh_scratch(str(scratch)) is True
    assert sorted(os.listdir(scratch)) == ["exports"] and os.listdir(scratch / "exports") == ["charts"]
    assert os.listdir(scratch / "exports" / "charts") == []
    assert victim.read_text() == "a\n1\n" and sorted(os.listdir(tmp_path)) == ["victim.csv", "x-0"]


def test_sweep_removes_only_what_came_after_the_snapshot(tmp_path):
    shared = tmp_path / "tmp"
    root = tmp_path / "scratch"
    shared.mkdir()
    root.mkdir()
    (shared / "mpl").mkdir()
    before = {str(shared): set(os.listdir(shared))}
    live = root / ("x-" + "a" * 32)
    gone = root / ("x-" + "b" * 32)
    live.mkdir()
    gone.mkdir()
    (shared / "planted").write_text("x")
    os.symlink(tmp_path, shared / "link")
    (root / "planted").write_text("x")
    os.symlink(live, root / ("x-" + "c" * 32))  # named like a scratch directory, but a link
    assert cleanslate.sweep_shared(before, str(root)) == 4
    assert sorted(os.listdir(shared)) == ["mpl"]
    assert sorted(os.listdir(root)) == sorted([live.name, gone.name])
    assert cleanslate.sweep(before, str(root), {str(live)}) == 1  # the zygote knows which live
    assert os.listdir(root) == [live.name]
    assert cleanslate.sweep({}, str(root), set()) == 0  # no snapshot: not the pod's own dirs
    assert cleanslate.snapshot(os.getpid(), str(root)) == {}  # not PID 1: the host's /tmp
