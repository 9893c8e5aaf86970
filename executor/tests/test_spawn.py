"""spawn: a spare forked and set up in C, exactly as the Python set-up leaves it; and its failures."""

from __future__ import annotations

import ctypes
import json
import os
import resource
import select
import signal
import stat
import tempfile

import pytest
from forked import in_child

from pod_sandbox.executor import isolation, spawn

pytestmark = pytest.mark.skipif(not os.path.exists(spawn.LIBRARY),
                                reason="_spawn.so not built (executor/scripts/build-native.sh)")
FAILED = 120
PR_GET_PDEATHSIG = 2


def _read_until_eof(fd: int, timeout: float = 10.0) -> bytes:
    """Everything a non-blocking read end gets until EOF."""
    data = b""
    while True:
        if not select.select([fd], [], [], timeout)[0]:
            raise AssertionError("no EOF in time")
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            continue
        if not chunk:
            return data
        data += chunk


def _open_fds() -> set[int]:
    names = os.listdir("/proc/self/fd")  # the listing's own fd is gone once it returns
    return {int(name) for name in names if os.path.exists(f"/proc/self/fd/{name}")}


def _report_in_spare() -> dict[str, object]:
    """What the spare's set-up left, seen from inside it (runs in the spawned child)."""
    libc = ctypes.CDLL(None, use_errno=True)
    deathsig = ctypes.c_int(0)
    libc.prctl(PR_GET_PDEATHSIG, ctypes.byref(deathsig), 0, 0, 0)
    caught = 0
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("SigCgt:"):
                caught = int(line.split()[1], 16)
    fds = sorted(fd for fd in range(64) if _fd_open(fd))
    try:
        os.setsid()
        setsid = "allowed"
    except PermissionError:
        setsid = "EPERM"
    return {
        "session_leader": os.getsid(0) == os.getpid(),
        "deathsig": deathsig.value,
        "fds": fds,
        "inheritable": [os.get_inheritable(fd) for fd in fds],
        "stdin": os.readlink("/proc/self/fd/0"),
        "cwd": os.getcwd(),
        "cwd_mode": stat.S_IMODE(os.stat(".").st_mode),
        "charts": os.path.isdir("exports/charts"),
        "term_or_chld_caught": bool(caught & (1 << (signal.SIGTERM - 1) | 1 << (signal.SIGCHLD - 1))),
        "setsid": setsid,
        "job": os.read(spawn.JOB_FD, 100).decode(),
    }


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_the_spare_is_confined_and_wired_before_it_runs_python_again() -> None:
    """Session leader with PDEATHSIG, fds 0-4 only (job and result close-on-exec), the seccomp
    layer attached, in its new 0700 scratch directory with exports/charts, none of the parent's
    signal handlers; the parent gets its four ends and nothing else stays open."""
    def body() -> int:
        signal.signal(signal.SIGTERM, lambda *_: None)  # as the zygote has handlers
        signal.signal(signal.SIGCHLD, lambda *_: None)
        layer = isolation.compile_seccomp_layers((os.getpid(),)).sessions
        spawner = spawn.Spawner(layer, FAILED)
        scratch = os.path.join(tempfile.mkdtemp(), "x-1")
        before = _open_fds()
        pid, ends = spawner.spawn(scratch, os.getpid())
        if pid == 0:
            code = 50
            try:
                report = _report_in_spare()
                os.write(1, json.dumps(report).encode())
                os.write(spawn.RESULT_FD, b"result")
                code = 0
            finally:
                os._exit(code)
        job_w, result_r, out_r, err_r = ends
        if _open_fds() != before | set(ends) or len(set(ends)) != 4:
            return 1
        if not os.get_blocking(job_w) or any(os.get_blocking(fd) for fd in (result_r, out_r, err_r)):
            return 2
        os.write(job_w, b"the job")
        os.close(job_w)
        report = json.loads(_read_until_eof(out_r))
        if _read_until_eof(result_r) != b"result" or _read_until_eof(err_r) != b"":
            return 3
        _, status = os.waitpid(pid, 0)
        expected = {
            "session_leader": True, "deathsig": signal.SIGKILL, "fds": [0, 1, 2, 3, 4],
            "inheritable": [True, True, True, False, False], "stdin": "/dev/null", "cwd": scratch,
            "cwd_mode": 0o700, "charts": True, "term_or_chld_caught": False, "setsid": "EPERM",
            "job": "the job",
        }
        if report != expected:
            print(report)
            return 4
        return 0 if os.waitstatus_to_exitcode(status) == 0 else 5

    assert in_child(body) == 0


def _spawn_failing(scratch: str, parent_pid: int | None = None) -> tuple[int, bytes]:
    """Spawn a spare whose set-up is expected to fail; its exit code and what it wrote on fd 2."""
    spawner = spawn.Spawner(b"", FAILED)
    pid, ends = spawner.spawn(scratch, os.getpid() if parent_pid is None else parent_pid)
    if pid == 0:
        os._exit(0)  # set-up passed: the caller sees 0 instead of FAILED
    os.close(ends[0])
    err = _read_until_eof(ends[3])
    for fd in ends[1:]:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


def test_a_failed_set_up_says_which_step_and_exits_with_the_set_up_code(tmp_path) -> None:
    existing = tmp_path / "taken"
    existing.mkdir()
    code, err = _spawn_failing(str(existing))
    assert code == FAILED
    assert err.decode().startswith("spare set-up failed: scratch directory: ")
    assert "exists" in err.decode()


def test_a_spare_whose_parent_is_not_the_one_named_exits_at_once(tmp_path) -> None:
    """As after the parent died before PDEATHSIG was armed: no set-up, no scratch directory."""
    code, err = _spawn_failing(str(tmp_path / "x-2"), parent_pid=1)
    assert (code, err) == (FAILED, b"")
    assert not (tmp_path / "x-2").exists()


def test_no_child_and_no_fd_left_when_the_pipes_cannot_be_made() -> None:
    def body() -> int:
        spawner = spawn.Spawner(b"", FAILED)
        before = _open_fds()
        limit, free = 0, 0
        while free < 3:  # room for one pipe and a half: the second pipe2() fails
            free += limit not in before
            limit += 1
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        try:
            spawner.spawn(tempfile.mkdtemp() + "/x-3", os.getpid())
        except OSError as exc:
            if exc.errno != 24:  # EMFILE
                return 1
        else:
            return 2
        if _open_fds() != before:
            return 3
        try:
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return 0
        return 4

    assert in_child(body) == 0


def test_without_the_library_it_says_so(tmp_path) -> None:
    reason = spawn.load(b"", FAILED, str(tmp_path / "_spawn.so"))
    assert isinstance(reason, str) and "build-native.sh" in reason
