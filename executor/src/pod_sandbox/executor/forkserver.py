"""The single-threaded fork-server: answers the HTTP process and watches each job's child.

It is forked from the HTTP process before any WSGI thread exists and before the token is read,
so its memory (and every child's) holds no secret, and fork() never happens in a threaded
process. It imports the scientific stack, ``gc.freeze()``s, and forks the **zygote**
(:mod:`.zygote`) once; the zygote forks every spare child and hands over its pipes, so this
loop never blocks in ``fork()``. It talks to the HTTP process over one socketpair per
execution slot:

* request frame (JSON): ``{"code", "timeout_s", "max_output_bytes", "datasets"}``
* answer: a header frame (JSON, process facts) then stdout, stderr and the child's raw result.

It only reports facts (exit code, signal, timeout, truncation, rusage); the HTTP side
(:mod:`.runner`) turns them into the response status.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import select
import selectors
import shutil
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from . import cleanslate, datacache, framing, handoff, heapfile, isolation, liveness, sqlchannel, zygote
from .config import Config
from .datacache import Signature

log = logging.getLogger("pod_sandbox.forkserver")
EXIT_GRACE_S = 1.0
READ_CHUNK = 65536
#: A job that finds no ready spare for this long is answered with an error (SandboxError).
PENDING_MAX_S = 10.0
#: After the zygote failed to fork, ask again only after this pause.
SPAWN_RETRY_S = 0.1
ZYGOTE_SEND_TIMEOUT_S = 5.0
#: More zygote deaths than this within the window and the fork-server gives up (HTTP -> 503).
ZYGOTE_MAX_DEATHS = 5
ZYGOTE_DEATH_WINDOW_S = 60.0
#: A zygote silent this long is asked for a sign of life (any message counts).
ZYGOTE_PING_S = 0.5
#: ... and reported as not answering (``/ready`` 503) after this long.
ZYGOTE_SILENT_S = 1.0
#: ... and replaced after this long: while it loads datasets, while it starts, otherwise.
ZYGOTE_LOAD_GRACE_S = 120.0
ZYGOTE_START_GRACE_S = 30.0
ZYGOTE_SILENT_KILL_S = 60.0
#: Never a file signature: marks a dataset the zygote has not checked yet.
UNCHECKED: Signature = (-1, -1, -1, -1)


@dataclass
class Spare:
    """A child the zygote forked in advance, confined, blocked reading its job pipe."""

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
    callback: sqlchannel.JobChannel | None = None  # SQL by call-back (sqlchannel.Relay)


@dataclass
class PendingJob:
    """A request waiting for a spare (and for its datasets to be loaded in the zygote)."""

    slot: int
    payload: bytes
    timeout_s: float
    out_cap: int
    datasets: list[str]
    needs_seq: int
    queued: float
    sql_callback: bool = False


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
    # The operations generated code uses most (boolean filters, .loc, reductions): their lazily
    # built internals are then made once here and inherited, not rebuilt (and COW-copied) per child.
    frame.loc[frame["a"] > 0, "a"].mean()
    frame[frame["b"] == "x"].groupby("b")["a"].agg(["sum", "mean", "count"])
    wire.encode_dataframe(frame)
    sqlchannel.warm()  # the SQL call-back's answer path (a Parquet read into pandas)
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
    """The event loop: channels from the HTTP process, the zygote's channel, child pipes, deadlines."""

    def __init__(self, config: Config, channels: list[socket.socket], protected_pids: tuple[int, ...],
                 heartbeat: liveness.Heartbeat | None = None,
                 answer_channels: list[socket.socket] | None = None) -> None:
        self.config = config
        self.limits = config.limits
        self.channels = channels
        self.protected_pids = protected_pids
        self.sel = selectors.DefaultSelector()
        self.spares: list[Spare] = []
        self.requested = 0                      # spares asked of the zygote, not yet received
        self.pending: deque[PendingJob] = deque()
        self.jobs: dict[int, Job] = {}          # pid -> job
        self.fd_owner: dict[int, Job] = {}      # pipe fd -> job
        self.generation = 0                     # the zygote's dataset generation, as last reported
        self.checked: dict[str, Signature | None] = {}  # dataset -> file version the zygote checked
        self.cached_names: set[str] = set()
        self.asking: dict[str, tuple[Signature | None, int]] = {}  # dataset -> (version, request seq)
        self.cache_seq = 0
        self.cache_done = 0
        self.zygote_pid = 0
        self.zygote_sock: socket.socket | None = None
        self.zygote_deaths: list[float] = []
        self.spawn_retry_at = 0.0
        self.stopping = False
        self.baseline_vm = 0
        self.memory_limit_bytes = config.limits.memory_limit_bytes
        self.heartbeat = heartbeat
        self.shared_before: dict[str, set[str]] = {}  # cleanslate.snapshot, before any user code
        self.zygote_heard = 0.0  # when the zygote last sent anything
        self.zygote_started = 0.0
        self.zygote_answered = False  # the current zygote has sent something since it started
        self.zygote_checked = 0.0
        self.ping_sent = 0.0
        self.gave_up = False
        self.wake_r, self.wake_w = socket.socketpair()
        self.relay = sqlchannel.Relay(self, answer_channels or [])

    # -- set-up ------------------------------------------------------------------------------
    def setup(self) -> None:
        """Confine the server process itself, warm the interpreter, start the zygote."""
        isolation.make_undumpable()
        isolation.become_subreaper()  # if the zygote dies, its orphans come here
        isolation.die_with_parent()
        if os.getppid() != self.protected_pids[0]:  # the HTTP process died before PDEATHSIG was armed
            raise OSError(f"fork-server: parent {self.protected_pids[0]} is gone")
        os.makedirs(self.config.scratch_root, mode=0o700, exist_ok=True)
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
            os.environ.setdefault(name, "1")  # before numpy loads BLAS: no BLAS threads in the parent
        # pyarrow's bundled jemalloc (not its default pool) would start a purging thread: this
        # process must stay single-threaded for heapfile below.
        conf = os.environ.get("JE_ARROW_MALLOC_CONF")
        os.environ["JE_ARROW_MALLOC_CONF"] = f"{conf},background_thread:false" if conf else "background_thread:false"
        preload()
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
        self.relay.register()
        gc.collect()
        gc.freeze()
        # After freeze (which writes to every tracked object) and before the zygote: fork() and
        # each child's exit then handle the pages a child uses, not all of the warm stack's.
        moved = heapfile.move_anonymous_memory() if self.config.heapfile else None
        if moved is None:
            log.info("fork-server: --heapfile off: the warm stack stays in anonymous memory")
        elif isinstance(moved, heapfile.Moved):
            log.info("fork-server: %d MB of the warm stack moved onto a sealed memfd (%d regions, %.0f ms)",
                     moved.bytes >> 20, moved.regions, moved.seconds * 1000)
        else:
            log.warning("fork-server: the warm stack stays in anonymous memory (%s); every fork "
                        "copies its page tables", moved)
        self.baseline_vm = isolation.address_space_bytes()
        self.memory_limit_bytes = isolation.execution_memory_bytes(self.limits.memory_limit_bytes)
        if self.memory_limit_bytes < self.limits.memory_limit_bytes:
            log.info("fork-server: an execution may allocate %d MB (--memory-mb %d; the pod's "
                     "memory cgroup leaves less)", self.memory_limit_bytes >> 20,
                     self.limits.memory_limit_bytes >> 20)
        self.shared_before = cleanslate.snapshot(self.protected_pids[0], self.config.scratch_root)
        self.start_zygote()

    def _on_term(self, *_: Any) -> None:
        self.stopping = True

    # -- the zygote --------------------------------------------------------------------------
    def start_zygote(self) -> None:
        """Fork the zygote (the only fork this process makes, at start and after a zygote death)."""
        inherited = [*self.channels, *self.relay.channels, self.wake_r, self.wake_w]
        self.zygote_pid, sock = zygote.start_zygote(self.config, self.protected_pids, inherited, self.heartbeat,
                                                        self.shared_before)
        self.zygote_started = self.zygote_heard = time.monotonic()
        self.zygote_answered = False
        self.ping_sent = 0.0
        sock.setblocking(False)
        self.zygote_sock = sock
        self.sel.register(sock, selectors.EVENT_READ, ("zygote", None))
        self.generation = 0
        self.checked.clear()
        self.cached_names.clear()
        self.asking.clear()
        self.cache_done = self.cache_seq
        self.requested = 0

    def to_zygote(self, message: dict[str, Any]) -> None:
        """Send the zygote a request; a zygote that stops reading for seconds is killed."""
        sock = self.zygote_sock
        if sock is None:
            return
        deadline = time.monotonic() + ZYGOTE_SEND_TIMEOUT_S
        while True:
            try:
                handoff.send(sock, message)
                return
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left > 0 and select.select([], [sock], [], left)[1]:
                    continue
                log.error("the zygote stopped reading its requests: killing it")
            except OSError as exc:
                log.error("the zygote's channel broke: %s", exc)
            self.kill_zygote()
            return

    def kill_zygote(self) -> None:
        """SIGKILL the zygote (its spares die with it) and treat it as lost."""
        if self.zygote_pid:
            try:
                os.kill(self.zygote_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.zygote_lost()

    def zygote_lost(self) -> None:
        """The zygote died: every child it had is dead or dying. Clean up, then start a new one."""
        if self.zygote_sock is None:
            return
        self.sel.unregister(self.zygote_sock)
        self.zygote_sock.close()
        self.zygote_sock = None
        now = time.monotonic()
        for pid, job in self.jobs.items():
            if job.exited_at is None:  # killed by PDEATHSIG; its group may still hold processes
                self.kill_group(pid)
                job.exited_at = now
                job.wait_status = int(signal.SIGKILL)  # the wait status of "killed by SIGKILL"
        for spare in self.spares:
            self.discard_spare(spare)
        self.spares.clear()
        self.requested = 0
        if self.stopping:
            return
        log.error("the zygote (pid %d) died", self.zygote_pid)
        self.zygote_deaths = [t for t in self.zygote_deaths if now - t < ZYGOTE_DEATH_WINDOW_S] + [now]
        if len(self.zygote_deaths) > ZYGOTE_MAX_DEATHS:
            log.error("the zygote died %d times in %.0f s: giving up", len(self.zygote_deaths),
                      ZYGOTE_DEATH_WINDOW_S)
            self.stopping = self.gave_up = True
            return
        self.sweep_scratch()
        self.start_zygote()
        for pending in self.pending:  # the new zygote has an empty dataset cache
            pending.needs_seq = self.check_datasets(pending.datasets)

    def sweep_scratch(self) -> None:
        """Remove every scratch directory (its owners died with the zygote; none is running)."""
        try:
            names = os.listdir(self.config.scratch_root)
        except OSError:
            return
        for name in names:
            if name.startswith("x-"):
                shutil.rmtree(os.path.join(self.config.scratch_root, name), ignore_errors=True)

    def on_zygote(self) -> None:
        """Handle everything the zygote sent: spares, exit facts, cache answers."""
        while self.zygote_sock is not None:
            try:
                received = handoff.receive(self.zygote_sock)
            except BlockingIOError:
                return
            except (OSError, handoff.HandoffError) as exc:
                log.error("the zygote's channel broke: %s", exc)
                self.kill_zygote()
                return
            if received is None:
                self.zygote_lost()
                return
            message, fds = received
            self.zygote_heard = time.monotonic()
            self.zygote_answered = True
            op = message["op"]
            if op == "pong":
                continue
            if op == "spare":
                self.requested = max(0, self.requested - 1)
                job_w, result_r, out_r, err_r = fds
                spare = Spare(int(message["pid"]), job_w, result_r, out_r, err_r,
                              generation=int(message["generation"]), scratch=str(message["scratch"]))
                if spare.generation == self.generation and not self.stopping:
                    self.spares.append(spare)
                else:
                    self.discard_spare(spare)
            elif op == "exit":
                self.on_exit(int(message["pid"]), int(message["status"]), int(message["maxrss_kb"]))
            elif op == "cached":
                self.on_cached(message)
            elif op == "spawn_failed":
                self.on_spawn_failed(str(message.get("error", "")))
            else:
                log.warning("unknown message from the zygote: %r", op)

    def on_exit(self, pid: int, status: int, maxrss_kb: int) -> None:
        """The zygote reaped one of its children (and killed its group)."""
        job = self.jobs.get(pid)
        if job is not None:
            if job.exited_at is None:
                job.exited_at = time.monotonic()
                job.wait_status = status
                job.rusage_maxrss_kb = maxrss_kb
            return
        for spare in self.spares:
            if spare.pid == pid:  # a spare died before it got a job
                self.spares.remove(spare)
                self.discard_spare(spare)
                return

    def on_cached(self, message: dict[str, Any]) -> None:
        """The zygote checked (and maybe reloaded) datasets; spares of older generations are stale."""
        seq = int(message["seq"])
        self.cache_done = max(self.cache_done, seq)
        self.generation = int(message["generation"])
        for name, sig in (message.get("checked") or {}).items():
            self.checked[name] = tuple(sig) if sig is not None else None  # type: ignore[assignment]
        self.cached_names = set(message.get("cached") or [])
        for name in [n for n, (_sig, s) in self.asking.items() if s <= seq]:
            del self.asking[name]
        for spare in [s for s in self.spares if s.generation != self.generation]:
            self.spares.remove(spare)
            self.discard_spare(spare)

    def on_spawn_failed(self, error: str) -> None:
        """The zygote could not fork (e.g. the uid's process limit): fail one waiting job, retry later."""
        log.warning("the zygote could not fork a spare: %s", error)
        self.requested = 0  # the zygote dropped every outstanding fork
        self.spawn_retry_at = time.monotonic() + SPAWN_RETRY_S
        if self.pending:
            pending = self.pending.popleft()
            self.answer_start_error(pending.slot, f"no sandbox child could be started: {error}")

    # -- datasets ----------------------------------------------------------------------------
    def check_datasets(self, names: list[str]) -> int:
        """Ask the zygote to (re)load staged datasets whose files changed; return the request seq
        a job must wait for (0: nothing to wait for). Cached datasets are checked too, so a
        re-uploaded file is never served from a stale cache."""
        needs = 0
        stale: list[str] = []
        for name in set(names) | self.cached_names:
            sig = datacache.signature(os.path.join(self.config.data_dir, name))
            if self.checked.get(name, UNCHECKED) == sig:
                continue
            asked = self.asking.get(name)
            if asked is not None and asked[0] == sig:
                needs = max(needs, asked[1])  # already asked about this version
                continue
            stale.append(name)
        if stale:
            self.cache_seq += 1
            for name in stale:
                self.asking[name] = (datacache.signature(os.path.join(self.config.data_dir, name)),
                                     self.cache_seq)
            self.to_zygote({"op": "cache", "seq": self.cache_seq, "names": sorted(stale)})
            needs = self.cache_seq
        return needs

    # -- spares ------------------------------------------------------------------------------
    def discard_spare(self, spare: Spare) -> None:
        """Close a spare's pipes; it exits on EOF (and is killed to be sure); the zygote reaps it."""
        for fd in (spare.job_w, spare.result_r, spare.out_r, spare.err_r):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.kill(spare.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def take_spare(self) -> Spare | None:
        """A spare of the current dataset generation that is not stopped, if one is ready (a
        stopped spare would cost its job the whole timeout: it is discarded instead)."""
        while self.spares:
            spare = self.spares.pop(0)
            if spare.generation == self.generation and not liveness.stopped(spare.pid):
                return spare
            self.discard_spare(spare)
        return None

    def top_up(self, now: float) -> None:
        """Ask the zygote for the spares missing: one per waiting job plus the pool, which is
        refilled beyond one ready spare only while no job runs (a fork and a spare's set-up
        would otherwise take CPU from the running job), and not at all while an answered
        child is still exiting.

        A child's exit and the zygote's fork each run ~2 ms in the kernel, where a kernel built
        with ``PREEMPT_NONE`` or ``PREEMPT_VOLUNTARY`` (the usual server models) lets nothing
        else take their core. Back to back on 2 cores, asking for the next spare as soon as a
        job started put both on the two cores at once, right when the next request's hand-offs
        (an HTTP thread, this loop, the spare reading its job) needed one: those then waited up
        to ~2 ms. Once the exit is reported, the fork runs after it, on the core it freed."""
        if self.stopping or self.zygote_sock is None or now < self.spawn_retry_at:
            return
        running = any(not job.answered for job in self.jobs.values())
        pool = min(self.config.spares, 1) if running else self.config.spares
        if any(job.answered and job.exited_at is None for job in self.jobs.values()):
            pool = 0  # waiting jobs still get theirs at once
        want = pool + len(self.pending) - len(self.spares) - self.requested
        if want > 0:
            self.requested += want
            self.to_zygote({"op": "spawn", "n": want})

    # -- jobs --------------------------------------------------------------------------------
    def dispatch(self) -> None:
        """Hand waiting jobs, oldest first, to ready spares once their datasets are loaded."""
        while self.pending and not self.stopping:
            pending = self.pending[0]
            if pending.needs_seq > self.cache_done:
                break
            spare = self.take_spare()
            if spare is None:
                break
            self.pending.popleft()
            if not self.start_job(pending, spare):
                self.pending.appendleft(pending)
        self.top_up(time.monotonic())

    def start_job(self, pending: PendingJob, spare: Spare) -> bool:
        """Give the job to a spare and start watching it; False if the spare turned out dead."""
        try:
            framing.write_frame_fd(spare.job_w, pending.payload)
        except OSError:  # the spare died (killed from outside): the caller uses another one
            self.discard_spare(spare)
            return False
        if not pending.sql_callback:  # else the job pipe carries the queries' answers
            os.close(spare.job_w)
        now = time.monotonic()
        job = Job(slot=pending.slot, spare=spare, scratch=spare.scratch, started=now,
                  deadline=now + pending.timeout_s, out_cap=pending.out_cap,
                  result_cap=self.limits.max_result_bytes + 4096)
        self.relay.attach(job, pending.sql_callback)
        for fd in (spare.result_r, spare.out_r, spare.err_r):
            job.buffers[fd] = bytearray()
            job.truncated[fd] = False
            job.open_fds.add(fd)
            self.fd_owner[fd] = job
            self.sel.register(fd, selectors.EVENT_READ, ("pipe", fd))
        self.jobs[spare.pid] = job
        return True

    def prepare(self, slot: int, request: dict[str, Any]) -> PendingJob:
        """Turn a request into the child's job frame and queue it."""
        timeout_s = float(request["timeout_s"])
        limits = isolation.ChildLimits.for_timeout(
            timeout_s,
            baseline_vm=self.baseline_vm,
            memory_limit_bytes=self.memory_limit_bytes,
            max_processes=self.limits.max_processes,
            max_file_bytes=self.limits.max_file_bytes,
            max_open_files=self.limits.max_open_files,
        )
        datasets = request.get("datasets") or {}
        payload = framing.dumps({"code": request["code"], "datasets": datasets, "limits": limits.__dict__,
                                 **sqlchannel.job_fields(request, self.limits.max_query_chars)})
        names = [str(n) for n in datasets.values()]
        return PendingJob(slot=slot, payload=payload, timeout_s=timeout_s,
                          out_cap=int(request["max_output_bytes"]), datasets=names,
                          needs_seq=self.check_datasets(names), queued=time.monotonic(),
                          sql_callback=bool(request.get("sql_callback")))

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
        if job.callback is not None and fd == job.spare.result_r:
            data = self.relay.on_result_bytes(job, data)  # queries out; the final result stays
            if not data:
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
            # kill its group (it is about to _exit anyway); the zygote reaps it and cleans up.
            self.answer(job, early=True)
            self.kill_group(job.spare.pid)

    def reap(self) -> None:
        """Collect this process's children: the zygote, and orphans re-parented here if it died."""
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.zygote_pid:
                self.zygote_lost()
                self.zygote_pid = 0 if self.zygote_sock is None else self.zygote_pid

    @staticmethod
    def kill_group(pid: int) -> None:
        """SIGKILL a job's whole process group (it is its own session leader)."""
        zygote.kill_group(pid)

    def check_deadlines(self, now: float) -> None:
        """Kill jobs past their wall-clock timeout; give up on pipes held open after exit and on
        jobs that found no spare in time."""
        for pid, job in self.jobs.items():
            if job.exited_at is None and now >= job.deadline and not job.timed_out:
                job.timed_out = True
                self.kill_group(pid)
            if job.exited_at is not None and job.open_fds and now - job.exited_at > EXIT_GRACE_S:
                self.kill_group(pid)
                for fd in list(job.open_fds):
                    self.close_pipe(job, fd)
        while self.pending and now - self.pending[0].queued > PENDING_MAX_S:
            pending = self.pending.popleft()
            self.answer_start_error(pending.slot, f"no sandbox child became ready within {PENDING_MAX_S:g} s")

    def finish_ready_jobs(self) -> None:
        """Answer (if not done early) every job whose child has exited and drained; forget it."""
        for pid in [p for p, j in self.jobs.items() if j.exited_at is not None and not j.open_fds]:
            job = self.jobs.pop(pid)
            if not job.answered:
                self.answer(job, early=False)

    def answer(self, job: Job, *, early: bool) -> None:
        """Send the HTTP process the facts of a finished job on its slot's channel."""
        job.answered = True
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
            **self.relay.finish(job),
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

    def answer_start_error(self, slot: int, message: str) -> None:
        """Answer a slot whose job never ran."""
        header = {"exit_code": None, "signal": None, "timed_out": False, "result_too_large": False,
                  "stdout_truncated": False, "stderr_truncated": False, "duration_ms": 0,
                  "peak_rss_bytes": 0, "start_error": message}
        try:
            framing.send_frames(self.channels[slot], [framing.dumps(header), b"", b"", b""])
        except OSError as exc:
            log.warning("slot %d: could not answer: %s", slot, exc)

    def on_channel(self, index: int) -> None:
        """Read one request from the HTTP process and queue it."""
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
            self.pending.append(self.prepare(index, request))
        except Exception as exc:  # noqa: BLE001 - answer the slot, keep serving
            log.exception("slot %d: job did not start", index)
            self.answer_start_error(index, f"{type(exc).__name__}: {exc}")

    # -- loop --------------------------------------------------------------------------------
    def next_timeout(self, now: float) -> float | None:
        """How long select() may sleep: until the next deadline the loop must act on."""
        waits = [j.deadline - now for j in self.jobs.values() if j.exited_at is None]
        waits += [EXIT_GRACE_S - (now - j.exited_at) for j in self.jobs.values() if j.exited_at is not None]
        if self.pending:
            waits.append(PENDING_MAX_S - (now - self.pending[0].queued))
        if self.spawn_retry_at > now:
            waits.append(self.spawn_retry_at - now)
        if self.stopping:
            waits.append(0.05)
        waits.append(liveness.BEAT_S)  # the heartbeat, and a look at the zygote
        return max(0.0, min(waits))

    def zygote_state(self, now: float) -> int:
        """What the heartbeat says of the zygote: replaced when it is stopped or silent too long
        (it was asked for a sign of life meanwhile)."""
        if self.gave_up:
            return liveness.ZYGOTE_GONE
        if self.zygote_sock is None:
            return liveness.ZYGOTE_STARTING
        if now - self.zygote_checked >= liveness.BEAT_S:
            self.zygote_checked = now
            if liveness.stopped(self.zygote_pid):
                log.error("the zygote (pid %d) is stopped: replacing it", self.zygote_pid)
                self.kill_zygote()
                return liveness.ZYGOTE_STARTING
        quiet = now - self.zygote_heard
        if quiet > ZYGOTE_PING_S and self.ping_sent <= self.zygote_heard:
            self.ping_sent = now
            self.to_zygote({"op": "ping"})
        if not self.zygote_answered:
            grace = ZYGOTE_START_GRACE_S
        else:
            grace = ZYGOTE_LOAD_GRACE_S if self.asking else ZYGOTE_SILENT_KILL_S
        if quiet > grace:
            log.error("the zygote (pid %d) sent nothing for %.0f s: replacing it", self.zygote_pid, quiet)
            self.kill_zygote()
            return liveness.ZYGOTE_STARTING
        if not self.zygote_answered:
            return liveness.ZYGOTE_STARTING
        return liveness.ZYGOTE_SILENT if quiet > ZYGOTE_SILENT_S else liveness.ZYGOTE_OK

    def tick(self, now: float) -> None:
        """Once per turn of the loop: the zygote's state, then the heartbeat the HTTP process reads."""
        state = self.zygote_state(now)
        if self.heartbeat is not None:
            self.heartbeat.beat(state)

    def serve(self) -> None:
        """Run until SIGTERM or the HTTP process goes away; kill everything on the way out."""
        self.top_up(time.monotonic())
        while True:
            if self.stopping:
                for pid, job in self.jobs.items():
                    if job.exited_at is None:
                        self.kill_group(pid)
                if not self.jobs:
                    break
            for key, _mask in self.sel.select(self.next_timeout(time.monotonic())):
                kind, arg = key.data
                if kind == "wake":
                    try:
                        while self.wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                elif kind == "chan":
                    self.on_channel(arg)
                elif kind == "zygote":
                    self.on_zygote()
                elif kind in sqlchannel.KINDS:
                    self.relay.on_ready(kind, arg)
                else:
                    self.on_pipe(arg)
            self.reap()
            self.check_deadlines(time.monotonic())
            self.finish_ready_jobs()
            self.dispatch()
            self.tick(time.monotonic())
        self.shutdown()

    def shutdown(self) -> None:
        """Close the spares and the zygote's channel (it kills and reaps its children), wait for it."""
        for spare in self.spares:
            self.discard_spare(spare)
        self.spares.clear()
        if self.zygote_sock is not None:
            self.sel.unregister(self.zygote_sock)
            self.zygote_sock.close()
            self.zygote_sock = None
        deadline = time.monotonic() + zygote.STOP_GRACE_S + 0.5
        while self.zygote_pid and time.monotonic() < deadline:
            try:
                pid, _status = os.waitpid(self.zygote_pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                break
            time.sleep(0.01)
        else:
            if self.zygote_pid:
                try:
                    os.kill(self.zygote_pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        while True:  # orphans of a dead zygote, if any
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break


@dataclass
class ForkServerHandle:
    """What the HTTP process keeps: the fork-server's pid, one channel per slot, its heartbeat."""

    pid: int
    channels: list[socket.socket]
    heartbeat: liveness.Heartbeat | None = None
    answer_channels: list[socket.socket] = field(default_factory=list)  # SQL by call-back


def start_fork_server(config: Config) -> ForkServerHandle:
    """Fork the fork-server. Call before starting any thread and before reading the token."""
    pairs = [socket.socketpair() for _ in range(config.limits.slots)]
    heartbeat = liveness.Heartbeat()
    answer_pairs = sqlchannel.channel_pairs(config.limits.slots)
    sys.stdout.flush()
    sys.stderr.flush()
    parent_pid = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            for ours, _theirs in (*pairs, *answer_pairs):
                ours.close()
            server = ForkServer(config, [theirs for _ours, theirs in pairs], (parent_pid, os.getpid()), heartbeat,
                                [theirs for _ours, theirs in answer_pairs])
            server.setup()
            server.serve()
        except BaseException:  # noqa: BLE001 - log and exit non-zero; the HTTP side notices
            log.exception("fork-server failed")
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)
    for _ours, theirs in (*pairs, *answer_pairs):
        theirs.close()
    return ForkServerHandle(pid=pid, channels=[ours for ours, _theirs in pairs], heartbeat=heartbeat,
                            answer_channels=[ours for ours, _theirs in answer_pairs])
