"""The process tree: HTTP -> fork-server -> zygote -> spares; who dies with whom, what restarts."""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from typing import Any, Iterator

import psutil
import pytest

from server_process import ExecutorProcess, start_executor

from pod_sandbox.executor import heapfile, spawn

pytestmark = pytest.mark.timeout(120)


@pytest.fixture()
def fresh_server() -> Iterator[ExecutorProcess]:
    """A server of its own: these tests kill parts of it."""
    proc = start_executor("--slots", "2")
    yield proc
    proc.stop()


def _wait_for(predicate: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def _gone(processes: list[psutil.Process]) -> bool:
    for p in processes:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def _settled(server: ExecutorProcess) -> dict[str, list[psutil.Process]]:
    assert _wait_for(lambda: len(server.roles()["spare"]) == server.idle_spares()
                     and len(server.roles()["zygote"]) == 1), server.roles()
    return server.roles()


def _running_jobs(server: ExecutorProcess) -> list[psutil.Process]:
    """Children running a job: a spare gets its CPU rlimit only once its job arrives."""
    out = []
    for p in server.roles()["spare"]:
        try:
            with open(f"/proc/{p.pid}/limits", encoding="ascii") as fh:
                cpu = next(line for line in fh if line.startswith("Max cpu time"))
        except (OSError, StopIteration):
            continue
        if cpu.split()[3] != "unlimited":
            out.append(p)
    return out


#: User code reporting the set-up it finds: the same whether spawn.c or Python did it.
SET_UP_SEEN = """
import os, signal, stat
try:
    os.setsid()
    setsid = "allowed"
except PermissionError:
    setsid = "EPERM"
fds = [fd for fd in range(256) if os.path.exists(f"/proc/self/fd/{fd}")]
seen = (len(fds), fds[:3], [os.get_inheritable(fd) for fd in fds], setsid, os.getsid(0) == os.getpid(),
        sorted(os.listdir(".")), os.listdir("exports"), oct(stat.S_IMODE(os.stat(".").st_mode)),
        os.readlink("/proc/self/fd/0"), signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
        os.environ["HOME"] == os.getcwd() == os.environ["TMPDIR"])
print("out")
result = {"type": "string", "value": repr(seen)}
"""


def _python_set_up_tree() -> str:
    """A copy of the package without ``_spawn.so``, readable by the sandbox uid."""
    source = os.path.dirname(os.path.dirname(os.path.dirname(spawn.__file__)))
    root = tempfile.mkdtemp(prefix="pod-sandbox-nospawn-")
    os.chmod(root, 0o755)
    shutil.copytree(os.path.join(source, "pod_sandbox"), os.path.join(root, "pod_sandbox"),
                    ignore=shutil.ignore_patterns("_spawn.so", "__pycache__"))
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            os.chmod(os.path.join(dirpath, name), 0o755 if name in dirs else 0o644)
    return root


@pytest.mark.skipif(not os.path.exists(spawn.LIBRARY), reason="_spawn.so not built")
def test_spares_set_up_in_c_and_in_python_look_the_same_to_user_code(fresh_server: ExecutorProcess) -> None:
    """Without ``_spawn.so`` the zygote makes the pipes and the spare sets itself up in Python:
    user code sees the same process either way (fds 0-2 and its result pipe, the job pipe being
    closed once read; the seccomp session layer; a session of its own; its 0700 scratch
    directory with exports/charts; default signals; HOME and TMPDIR there), and a failing,
    printing and timing-out execution are answered alike."""
    tree = _python_set_up_tree()
    plain = start_executor("--slots", "2", env={"PYTHONPATH": tree})
    try:
        seen = {}
        for name, server in (("c", fresh_server), ("python", plain)):
            out = server.run(SET_UP_SEEN)
            assert (out["status"], out["stdout"]) == ("ok", "out\n"), out
            seen[name] = out["result"]["value"]
            assert server.run("1/0")["error"]["type"] == "ZeroDivisionError"
            assert server.run("while True: pass", timeout_s=0.5)["status"] == "timeout"
        assert seen["c"] == seen["python"]
        assert "(4, [0, 1, 2], [True, True, True, False], 'EPERM', True, ['exports'], ['charts'], '0o700'" in seen["c"]
        assert "spares are set up in Python (_spawn.so is not built" in plain.log()
        assert "spares are set up in Python" not in fresh_server.log()
    finally:
        plain.stop()
        shutil.rmtree(tree, ignore_errors=True)


def _memory_contains(pid: int, needle: bytes) -> bool:
    """Whether ``needle`` is anywhere in the process's private writable memory (root only)."""
    with open(f"/proc/{pid}/maps", encoding="ascii") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if len(fields) < 2 or not fields[1].startswith("rw"):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                if needle in mem.read(end - start):
                    return True
            except (OSError, OverflowError, ValueError):
                continue
    return False


def test_tree_shape_and_the_zygote_is_confined(fresh_server: ExecutorProcess) -> None:
    roles = _settled(fresh_server)
    assert len(roles["forkserver"]) == 1 and not roles["other"], roles
    zygote = roles["zygote"][0]
    assert zygote.ppid() == roles["forkserver"][0].pid
    assert all(p.ppid() == zygote.pid for p in roles["spare"])
    assert zygote.num_threads() <= 2, zygote.threads()  # at most pyarrow's jemalloc thread
    # Forking, reaping and user code run below the request path's CPU priority (--child-nice 5).
    base = psutil.Process(fresh_server.pid).nice()
    assert roles["forkserver"][0].nice() == base
    assert zygote.nice() == min(19, base + 5)
    assert all(p.nice() == zygote.nice() for p in roles["spare"])
    if os.geteuid() == 0:
        # non-dumpable: /proc/<pid>/environ belongs to root, not to the process's uid
        assert os.stat(f"/proc/{zygote.pid}/environ").st_uid == 0
        assert zygote.uids().real != 0
        token = (fresh_server.token or "").encode()
        assert token and _memory_contains(fresh_server.pid, token)  # the scan can find it
        assert not _memory_contains(zygote.pid, token)
        assert not _memory_contains(roles["forkserver"][0].pid, token)


def test_the_zygote_forks_from_a_sealed_memfd_not_from_anonymous_memory(fresh_server: ExecutorProcess) -> None:
    """--heapfile (on by default): the warm stack lives in a sealed memfd mapped privately, so
    fork() and each child's exit skip its page tables; the zygote keeps little anonymous memory."""
    if os.geteuid() != 0:
        pytest.skip("the zygote is non-dumpable: only root reads its smaps")
    zygote = _settled(fresh_server)["zygote"][0]
    assert "moved onto a sealed memfd" in fresh_server.log()
    with open(f"/proc/{zygote.pid}/maps", encoding="ascii") as fh:
        assert "memfd:pod-sandbox-zygote-heap" in fh.read()
    assert heapfile.anonymous_bytes(zygote.pid) < 40 << 20
    assert fresh_server.run("result = {'type': 'number', 'value': float(np.arange(4).sum())}")["result"]["value"] == 6
    plain = start_executor("--slots", "2", "--heapfile", "off")
    try:
        assert heapfile.anonymous_bytes(_settled(plain)["zygote"][0].pid) > 50 << 20  # the test can tell
        assert "--heapfile off" in plain.log()
    finally:
        plain.stop()


def _heap_pages(pid: int) -> tuple[int, int]:
    """Pages of the memfd heap a process maps (Rss) and, of those, its own copies (Anonymous)."""
    mapped = written = 0
    in_heap = False
    with open(f"/proc/{pid}/smaps", encoding="ascii") as fh:
        for line in fh:
            if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
                in_heap = "memfd:pod-sandbox-zygote-heap" in line
            elif in_heap and line.startswith("Rss:"):
                mapped += int(line.split()[1]) // 4
            elif in_heap and line.startswith("Anonymous:"):
                written += int(line.split()[1]) // 4
    return mapped, written


def test_the_zygote_keeps_mapped_only_the_heap_pages_an_execution_reads(fresh_server: ExecutorProcess) -> None:
    """Every fork copies the zygote's page-table entries and every exit drops them: after a
    dataset load and the probe that follows, the zygote's heap moves again (the pages it wrote
    loading the data join the memfd) and it maps little more than the pages the probe's
    execution read, with few copies of its own."""
    if os.geteuid() != 0:
        pytest.skip("the zygote is non-dumpable: only root reads its smaps")
    learned = re.compile(r"prefault probe learned \d+ written pages in \d+ ranges and (\d+) read pages "
                         r"\(\d+ mapped here; heap (?:moved again: (\d+) MB|trimmed)")
    # The start's probe first (a load during it would move the heap at its end, not at the next)
    assert _wait_for(lambda: len(learned.findall(fresh_server.log())) == 1), fresh_server.log()[-2000:]
    rows = "".join(f"{i},{'nsew'[i % 4]}\n" for i in range(5000))
    assert fresh_server.request("PUT", "/v1/files/d.csv", ("n,k\n" + rows).encode()).status == 201
    code = ("df = execute_sql_query('SELECT * FROM d')\n"
            "result = {'type': 'number', 'value': int(df[df['k'] == 'n']['n'].sum())}")
    assert fresh_server.run(code, datasets={"SELECT * FROM d": "d.csv"})["result"]["value"] == sum(range(0, 5000, 4))
    assert _wait_for(lambda: len(learned.findall(fresh_server.log())) >= 2), fresh_server.log()[-2000:]
    read, moved_mb = (int(x or 0) for x in learned.findall(fresh_server.log())[1])
    assert read > 500 and moved_mb > 20, fresh_server.log()[-2000:]
    zygote = _settled(fresh_server)["zygote"][0].pid
    mapped, written = _heap_pages(zygote)
    assert mapped < read + 4000 and written < 1500, (mapped, written, read)
    plain = start_executor("--slots", "2", "--prefault", "off")
    try:
        assert plain.request("PUT", "/v1/files/d.csv", ("n,k\n" + rows).encode()).status == 201
        plain.run(code, datasets={"SELECT * FROM d": "d.csv"})
        zygote = _settled(plain)["zygote"][0].pid  # the test can tell:
        mapped, written = _heap_pages(zygote)
        assert mapped > read + 4000 and written > 1500, (mapped, written, read)
    finally:
        plain.stop()


def test_with_pyarrow_threads_in_the_zygote_the_heap_is_trimmed_not_moved(fresh_server: ExecutorProcess) -> None:
    """A Feather load starts pyarrow's pools in the zygote: with another thread it must not copy
    its memory, so it only drops the entries of heap pages it never wrote, and serves as well."""
    import pandas as pd  # noqa: PLC0415 - the test environment's own

    frame = pd.DataFrame({"n": range(3000), "k": ["nsew"[i % 4] for i in range(3000)]})
    buf = io.BytesIO()
    frame.to_feather(buf)
    assert fresh_server.request("PUT", "/v1/files/d.feather", buf.getvalue()).status == 201
    code = ("df = execute_sql_query('SELECT * FROM d')\n"
            "result = {'type': 'number', 'value': int(df[df['k'] == 'n']['n'].sum())}")
    assert fresh_server.run(code, datasets={"SELECT * FROM d": "d.feather"})["result"]["value"] == sum(range(0, 3000, 4))
    trimmed = re.compile(r"heap trimmed: (\d+) other pages dropped")
    assert _wait_for(lambda: trimmed.search(fresh_server.log()) is not None), fresh_server.log()[-2000:]
    assert "the heap stays on its memfd (" in fresh_server.log()
    assert fresh_server.run(code, datasets={"SELECT * FROM d": "d.feather"})["result"]["value"] == sum(range(0, 3000, 4))


def test_a_killed_zygote_is_replaced_and_its_running_job_answered(fresh_server: ExecutorProcess) -> None:
    old = _settled(fresh_server)
    answers: list[dict[str, Any]] = []
    runner = threading.Thread(target=lambda: answers.append(fresh_server.run("import time\ntime.sleep(30)")))
    runner.start()
    assert _wait_for(lambda: len(_running_jobs(fresh_server)) == 1)
    os.kill(old["zygote"][0].pid, signal.SIGKILL)
    runner.join(20)
    assert answers and answers[0]["status"] == "killed", answers
    # The spares get their SIGKILL (PDEATHSIG) as the zygote's exit ends, after the fork-server
    # saw its channel close: they may still be exiting for a few ms.
    assert _wait_for(lambda: _gone(old["spare"] + old["zygote"]))
    new = _settled(fresh_server)
    assert new["zygote"][0].pid != old["zygote"][0].pid
    assert fresh_server.run("result = {'type': 'number', 'value': 41 + 1}")["result"]["value"] == 42
    assert fresh_server.wait_no_leftovers() == []
    assert _wait_for(lambda: len(fresh_server.scratch_dirs()) == fresh_server.idle_spares())
    assert fresh_server.request("GET", "/health").status == 200


def test_everything_dies_with_the_fork_server(fresh_server: ExecutorProcess) -> None:
    roles = _settled(fresh_server)
    os.kill(roles["forkserver"][0].pid, signal.SIGKILL)
    assert _wait_for(lambda: _gone(roles["forkserver"] + roles["zygote"] + roles["spare"]))
    assert _wait_for(lambda: fresh_server.request("GET", "/health").status == 503)


def test_everything_dies_with_the_http_process(fresh_server: ExecutorProcess) -> None:
    _settled(fresh_server)
    started = threading.Event()

    def run() -> None:
        started.set()
        try:
            fresh_server.run("import time\ntime.sleep(60)")
        except Exception:  # noqa: BLE001,S110 - the server is killed under it
            pass

    threading.Thread(target=run, daemon=True).start()
    started.wait()
    assert _wait_for(lambda: len(_running_jobs(fresh_server)) == 1)
    tree = fresh_server.tree()
    os.kill(fresh_server.pid, signal.SIGKILL)
    assert _wait_for(lambda: _gone(tree)), [(p.pid, p.status()) for p in tree if not _gone([p])]


def test_dataset_cache_follows_reuploads(fresh_server: ExecutorProcess) -> None:
    def total(staged: bool) -> Any:
        fields = {"datasets": {"SELECT * FROM t": "t.csv"}} if staged else {}
        code = ("df = execute_sql_query('SELECT * FROM t')" if staged else "df = load_dataset('t.csv')")
        body = fresh_server.run(code + "\nresult = {'type': 'number', 'value': int(df['a'].sum())}", **fields)
        assert body["status"] == "ok", body
        return body["result"]["value"]

    assert fresh_server.request("PUT", "/v1/files/t.csv", b"a\n1\n2\n").status == 201
    assert total(staged=True) == 3
    assert fresh_server.request("PUT", "/v1/files/t.csv", b"a\n10\n20\n30\n").status == 201
    assert total(staged=False) == 60  # a re-upload is seen even when no query names the file
    assert total(staged=True) == 60
    assert fresh_server.request("DELETE", "/v1/files/t.csv").status == 204
    body = fresh_server.run("load_dataset('t.csv')")
    assert body["status"] == "error" and re.search("FileNotFound|No such file", body["error"]["message"] +
                                                   body["error"]["type"]), body
