"""The single-threaded fork-server: keeps a warm interpreter and runs each job in a fresh child.

It is forked from the HTTP process before any WSGI thread exists and before the token is read,
so its memory (and every child's) holds no secret, and fork() never happens in a threaded
process. It talks to the HTTP process over one socketpair per execution slot:

* request frame (JSON): ``{"code", "timeout_s", "max_output_bytes", "datasets"}``
* answer: a header frame (JSON, process facts) then a frame with the child's raw result bytes.

It only reports facts (exit code, signal, timeout, truncation, rusage); the HTTP side
(:mod:`.runner`) turns them into the response status.
"""

from __future__ import annotations

import errno
import gc
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from . import child, framing, isolation
from .config import Config

log = logging.getLogger("pod_sandbox.forkserver")
EXIT_GRACE_S = 1.0
READ_CHUNK = 65536
#: After answering, wait this long for the next request before doing housekeeping (forking a
#: replacement spare, removing scratch dirs): a sequential client's next request then finds a
#: ready spare and an idle fork-server; with a job running, housekeeping overlaps it instead.
HOUSEKEEPING_DELAY_S = 0.004


@dataclass
class Spare:
    """A child forked in advance, confined, blocked reading its job pipe."""

    pid: int
    job_w: int
    result_r: int
    out_r: int
    err_r: int
    generation: int
    scratch: str


@dataclass
class Job:
    """One running execution and what has been read from it so far."""

    slot: int
    spare: Spare
    scratch: str
    started: float
    deadline: float
    out_cap: int
    result_cap: int
    buffers: dict[int, bytearray] = field(default_factory=dict)
    truncated: dict[int, bool] = field(default_factory=dict)
    open_fds: set[int] = field(default_factory=set)
    exited_at: float | None = None
    wait_status: int | None = None
    rusage_maxrss_kb: int = 0
    timed_out: bool = False
    result_too_large: bool = False
    answered: bool = False


@dataclass
class CachedFrame:
    """A dataset loaded in the fork-server so children inherit it copy-on-write."""

    signature: tuple[int, int, int]
    frame: Any
    nbytes: int


def preload() -> dict[str, str]:
    """Import and exercise the scientific stack once so no child pays for it; return versions."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet  # noqa: F401,PLC0415
    import pyseccomp  # noqa: F401,PLC0415

    from .. import wire  # noqa: PLC0415

    frame = pd.DataFrame({"a": np.arange(3), "b": ["x", "y", "z"], "t": pd.date_range("2024-01-01", periods=3)})
    frame.groupby("b")["a"].sum()
    wire.encode_dataframe(frame)
    fig, ax = plt.subplots()
    ax.plot([1, 2, 3])
    wire.encode_plot(fig)
    plt.close("all")
    return {
        "python": sys.version.split()[0],
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "matplotlib": matplotlib.__version__,
        "pyarrow": pa.__version__,
    }


class ForkServer:
    """The event loop: channels from the HTTP process, child pipes, SIGCHLD, deadlines."""

    def __init__(self, config: Config, channels: list[socket.socket], protected_pids: tuple[int, ...]) -> None:
        self.config = config
        self.limits = config.limits
        self.channels = channels
        self.protected_pids = protected_pids
        self.sel = selectors.DefaultSelector()
        self.spares: list[Spare] = []
        self.jobs: dict[int, Job] = {}          # pid -> job
        self.fd_owner: dict[int, Job] = {}      # pipe fd -> job
        self.cache: dict[str, CachedFrame] = {}
        self.cache_view: dict[str, Any] = {}
        self.generation = 0
        self.stopping = False
        self.baseline_vm = 0
        self.seccomp_program = b""
        self.discarded_scratch: list[str] = []
        self.last_answer = 0.0
        self.wake_r, self.wake_w = socket.socketpair()

    # -- set-up ------------------------------------------------------------------------------
    def setup(self) -> None:
        """Confine the server process itself, warm the interpreter, install signal handling."""
        isolation.make_undumpable()
        isolation.become_subreaper()
        isolation.die_with_parent()
        os.makedirs(self.config.scratch_root, mode=0o700, exist_ok=True)
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
            os.environ.setdefault(name, "1")  # before numpy loads BLAS: no BLAS threads in the parent
        preload()
        self.seccomp_program = isolation.compile_seccomp(self.protected_pids)
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.sel.register(self.wake_r, selectors.EVENT_READ, ("wake", None))
        for index, chan in enumerate(self.channels):
            chan.setblocking(True)
            self.sel.register(chan, selectors.EVENT_READ, ("chan", index))
        gc.collect()
        gc.freeze()
        self.baseline_vm = isolation.address_space_bytes()

    def _on_term(self, *_: Any) -> None:
        self.stopping = True

    # -- spares ------------------------------------------------------------------------------
    def fork_spare(self) -> Spare:
        """Fork a confined child that waits for its job."""
        job_r, job_w = os.pipe()
        result_r, result_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        scratch = os.path.join(self.config.scratch_root, f"x-{uuid.uuid4().hex}")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child
            try:
                child.spare_main(job_r, result_w, out_w, err_w, self.seccomp_program,
                                 self.cache_view, self.config.data_dir, scratch)
            finally:
                os._exit(child.EXIT_CRASHED)
        for fd in (job_r, result_w, out_w, err_w):
            os.close(fd)
        for fd in (result_r, out_r, err_r):
            os.set_blocking(fd, False)
        return Spare(pid, job_w, result_r, out_r, err_r, self.generation, scratch)

    def discard_spare(self, spare: Spare) -> None:
        """Close a spare's pipes; it exits on EOF (and is killed to be sure)."""
        for fd in (spare.job_w, spare.result_r, spare.out_r, spare.err_r):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.kill(spare.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.discarded_scratch.append(spare.scratch)

    def top_up_spares(self) -> None:
        """Keep the configured number of fresh spares ready."""
        for spare in [s for s in self.spares if s.generation != self.generation]:
            self.spares.remove(spare)
            self.discard_spare(spare)
        while not self.stopping and len(self.spares) < self.config.spares:
            self.spares.append(self.fork_spare())

    # -- datasets ----------------------------------------------------------------------------
    def ensure_cached(self, names: list[str]) -> None:
        """Load staged datasets here (single-threaded pyarrow) so children inherit them warm."""
        budget = self.config.dataset_cache_bytes
        for name in sorted(set(names)):
            path = os.path.join(self.config.data_dir, name)
            try:
                st = os.stat(path)
            except OSError:
                continue  # the child raises a clear FileNotFoundError
            signature = (st.st_ino, st.st_size, st.st_mtime_ns)
            cached = self.cache.get(name)
            if cached is not None and cached.signature == signature:
                continue
            used = sum(c.nbytes for n, c in self.cache.items() if n != name)
            if st.st_size * 4 > budget - used:
                continue
            try:
                frame = child.read_data_file(path, use_threads=False)
                nbytes = int(frame.memory_usage(deep=False).sum())
            except Exception as exc:  # noqa: BLE001 - bad files fail in the child, with a traceback
                log.info("dataset %s not cached: %s", name, exc)
                continue
            if nbytes > budget - used:
                continue
            self.cache[name] = CachedFrame(signature, frame, nbytes)
            self.cache_view[name] = frame
            self.generation += 1
        for name in [n for n in self.cache if not os.path.exists(os.path.join(self.config.data_dir, n))]:
            del self.cache[name]
            del self.cache_view[name]
            self.generation += 1

    # -- jobs --------------------------------------------------------------------------------
    def start_job(self, slot: int, request: dict[str, Any]) -> None:
        """Hand a request to a spare (or a fresh child) and start watching it."""
        self.ensure_cached(list((request.get("datasets") or {}).values()))
        timeout_s = float(request["timeout_s"])
        limits = isolation.ChildLimits.for_timeout(
            timeout_s,
            baseline_vm=self.baseline_vm,
            memory_limit_bytes=self.limits.memory_limit_bytes,
            max_processes=self.limits.max_processes,
            max_file_bytes=self.limits.max_file_bytes,
            max_open_files=self.limits.max_open_files,
        )
        payload = framing.dumps({
            "code": request["code"],
            "datasets": request.get("datasets") or {},
            "limits": limits.__dict__,
        })
        for _attempt in range(2):
            spare = None
            while self.spares:
                candidate = self.spares.pop(0)
                if candidate.generation == self.generation:
                    spare = candidate
                    break
                self.discard_spare(candidate)
            if spare is None:
                spare = self.fork_spare()
            try:
                framing.write_frame_fd(spare.job_w, payload)
                break
            except OSError:  # the spare died (killed from outside): use another one
                self.discard_spare(spare)
        else:
            raise OSError(errno.ECHILD, "no sandbox child could take the job")
        os.close(spare.job_w)
        now = time.monotonic()
        job = Job(slot=slot, spare=spare, scratch=spare.scratch, started=now, deadline=now + timeout_s,
                  out_cap=int(request["max_output_bytes"]), result_cap=self.limits.max_result_bytes + 4096)
        for fd in (spare.result_r, spare.out_r, spare.err_r):
            job.buffers[fd] = bytearray()
            job.truncated[fd] = False
            job.open_fds.add(fd)
            self.fd_owner[fd] = job
            self.sel.register(fd, selectors.EVENT_READ, ("pipe", fd))
        self.jobs[spare.pid] = job

    def on_pipe(self, fd: int) -> None:
        """Read what a child wrote; keep at most the cap, drain (and count) the rest."""
        job = self.fd_owner.get(fd)
        if job is None:
            return
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close_pipe(job, fd)
            return
        buf = job.buffers[fd]
        cap = job.result_cap if fd == job.spare.result_r else job.out_cap
        room = cap - len(buf)
        if room > 0:
            buf += data[:room]
        if len(data) > max(room, 0):
            job.truncated[fd] = True
            if fd == job.spare.result_r:
                job.result_too_large = True

    def close_pipe(self, job: Job, fd: int) -> None:
        """Stop watching one of a job's pipes."""
        if fd in job.open_fds:
            job.open_fds.discard(fd)
            self.sel.unregister(fd)
            self.fd_owner.pop(fd, None)
            os.close(fd)
        if not job.open_fds and not job.answered and job.exited_at is None \
                and job.buffers[job.spare.result_r] and not job.result_too_large:
            # The child closed stdout, stderr and the result after writing it: answer now and
            # kill its group (it is about to _exit anyway); reaping and clean-up come later.
            self.answer(job, early=True)
            self.kill_group(job.spare.pid)

    def reap(self) -> None:
        """Collect every exited child: jobs, spares and re-parented grandchildren."""
        while True:
            try:
                pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            job = self.jobs.get(pid)
            if job is not None:
                job.exited_at = time.monotonic()
                job.wait_status = status
                job.rusage_maxrss_kb = rusage.ru_maxrss
                self.kill_group(pid)  # nothing the code started may outlive it
                continue
            for spare in list(self.spares):
                if spare.pid == pid:
                    self.spares.remove(spare)
                    self.discard_spare(spare)

    @staticmethod
    def kill_group(pid: int) -> None:
        """SIGKILL a job's whole process group (it is its own session leader)."""
        for fn, target in ((os.killpg, pid), (os.kill, pid)):
            try:
                fn(target, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def check_deadlines(self, now: float) -> None:
        """Kill jobs past their wall-clock timeout; give up on pipes held open after exit."""
        for pid, job in self.jobs.items():
            if job.exited_at is None and now >= job.deadline and not job.timed_out:
                job.timed_out = True
                self.kill_group(pid)
            if job.exited_at is not None and job.open_fds and now - job.exited_at > EXIT_GRACE_S:
                self.kill_group(pid)
                for fd in list(job.open_fds):
                    self.close_pipe(job, fd)

    def finish_ready_jobs(self) -> None:
        """Answer (if not done early) and clean up every job whose child has exited and drained."""
        for pid in [p for p, j in self.jobs.items() if j.exited_at is not None and not j.open_fds]:
            job = self.jobs.pop(pid)
            if not job.answered:
                self.answer(job, early=False)
            self.discarded_scratch.append(job.scratch)

    def answer(self, job: Job, *, early: bool) -> None:
        """Send the HTTP process the facts of a finished job on its slot's channel."""
        job.answered = True
        self.last_answer = time.monotonic()
        status = job.wait_status or 0
        spare = job.spare
        exited = job.exited_at is not None
        header = {
            "exit_code": os.WEXITSTATUS(status) if exited and os.WIFEXITED(status) else None,
            "signal": os.WTERMSIG(status) if exited and os.WIFSIGNALED(status) else None,
            "early": early,
            "timed_out": job.timed_out,
            "result_too_large": job.result_too_large,
            "stdout_truncated": job.truncated[spare.out_r],
            "stderr_truncated": job.truncated[spare.err_r],
            "duration_ms": round(((job.exited_at or time.monotonic()) - job.started) * 1000, 3),
            "peak_rss_bytes": job.rusage_maxrss_kb * 1024,
        }
        result = b"" if job.result_too_large else bytes(job.buffers[spare.result_r])
        chan = self.channels[job.slot]
        try:
            framing.send_frames(chan, [framing.dumps(header), bytes(job.buffers[spare.out_r]),
                                       bytes(job.buffers[spare.err_r]), result])
        except OSError as exc:
            log.warning("slot %d: could not answer: %s", job.slot, exc)
        for fd in job.buffers:
            job.buffers[fd] = bytearray()

    def on_channel(self, index: int) -> None:
        """Read one request from the HTTP process and start it."""
        chan = self.channels[index]
        try:
            frame = framing.recv_frame(chan)
        except (OSError, framing.FrameError):
            frame = None
        if frame is None:  # the HTTP process is gone
            self.stopping = True
            self.sel.unregister(chan)
            return
        request = json.loads(frame)
        if request.get("op") == "ping":
            framing.send_frame(chan, framing.dumps({"ok": True, "baseline_vm": self.baseline_vm}))
            return
        try:
            self.start_job(index, request)
        except Exception as exc:  # noqa: BLE001 - answer the slot, keep serving
            log.exception("slot %d: job did not start", index)
            header = {"exit_code": None, "signal": None, "timed_out": False, "result_too_large": False,
                      "stdout_truncated": False, "stderr_truncated": False, "duration_ms": 0,
                      "peak_rss_bytes": 0, "start_error": f"{type(exc).__name__}: {exc}"}
            for payload in (framing.dumps(header), b"", b"", b""):
                framing.send_frame(chan, payload)

    # -- loop --------------------------------------------------------------------------------
    def housekeeping_pending(self) -> bool:
        """Spares to fork or scratch directories to remove."""
        return len(self.spares) < self.config.spares or bool(self.discarded_scratch)

    def housekeeping(self, now: float) -> None:
        """Fork one missing spare or clean up, when it delays no request (see HOUSEKEEPING_DELAY_S)."""
        for spare in [s for s in self.spares if s.generation != self.generation]:
            self.spares.remove(spare)
            self.discard_spare(spare)
        if not self.housekeeping_pending():
            return
        running = any(not j.answered for j in self.jobs.values())
        if self.spares and not running and now - self.last_answer < HOUSEKEEPING_DELAY_S:
            return
        if len(self.spares) < self.config.spares:
            self.spares.append(self.fork_spare())
            return
        live = {j.scratch for j in self.jobs.values()}
        for path in [p for p in self.discarded_scratch if p not in live]:
            shutil.rmtree(path, ignore_errors=True)
            self.discarded_scratch.remove(path)

    def serve(self) -> None:
        """Run until SIGTERM or the HTTP process goes away; kill everything on the way out."""
        self.top_up_spares()
        while True:
            if self.stopping:
                for pid in list(self.jobs):
                    self.jobs[pid].timed_out = self.jobs[pid].timed_out or False
                    self.kill_group(pid)
                if not self.jobs:
                    break
            now = time.monotonic()
            waits = [j.deadline - now for j in self.jobs.values() if j.exited_at is None]
            waits += [EXIT_GRACE_S - (now - j.exited_at) for j in self.jobs.values() if j.exited_at is not None]
            timeout = max(0.0, min(waits)) if waits else None
            if self.stopping:
                timeout = 0.05 if timeout is None else min(timeout, 0.05)
            elif self.housekeeping_pending():
                delay = max(0.0, HOUSEKEEPING_DELAY_S - (now - self.last_answer))
                timeout = delay if timeout is None else min(timeout, delay)
            for key, _mask in self.sel.select(timeout):
                kind, arg = key.data
                if kind == "wake":
                    try:
                        while self.wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                elif kind == "chan":
                    self.on_channel(arg)
                else:
                    self.on_pipe(arg)
            self.reap()
            self.check_deadlines(time.monotonic())
            self.finish_ready_jobs()
            if not self.stopping:
                self.housekeeping(time.monotonic())
        for spare in self.spares:
            self.discard_spare(spare)
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.01)
        for path in self.discarded_scratch:
            shutil.rmtree(path, ignore_errors=True)


@dataclass
class ForkServerHandle:
    """What the HTTP process keeps: the fork-server's pid and one channel per slot."""

    pid: int
    channels: list[socket.socket]


def start_fork_server(config: Config) -> ForkServerHandle:
    """Fork the fork-server. Call before starting any thread and before reading the token."""
    pairs = [socket.socketpair() for _ in range(config.limits.slots)]
    sys.stdout.flush()
    sys.stderr.flush()
    parent_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            for ours, _theirs in pairs:
                ours.close()
            server = ForkServer(config, [theirs for _ours, theirs in pairs], (parent_pid, os.getpid()))
            server.setup()
            server.serve()
        except BaseException:  # noqa: BLE001 - log and exit non-zero; the HTTP side notices
            log.exception("fork-server failed")
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)
    for _ours, theirs in pairs:
        theirs.close()
    return ForkServerHandle(pid=pid, channels=[ours for ours, _theirs in pairs])
