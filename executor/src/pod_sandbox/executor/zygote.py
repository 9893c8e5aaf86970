"""The zygote: the warm process that forks every spare child, so the fork-server's loop never forks.

It is forked from the fork-server after the scientific stack is imported and ``gc.freeze()``d
(before the token exists anywhere), holds the staged-dataset cache, and is single-threaded (no
Python thread; pyarrow's native pools are fork-aware). It

* forks confined spares when the fork-server asks for them (``spawn``) and hands each spare's
  pipe ends (job_w, result_r, out_r, err_r) over ``SCM_RIGHTS`` with its pid, generation and
  scratch directory, keeping none of them itself;
* (re)loads staged datasets when asked (``cache``) and bumps the generation, so spares forked
  before are discarded by the fork-server;
* reaps its children with ``wait4``, kills each finished child's process group, reports the exit
  facts (pid, wait status, ru_maxrss) and removes the scratch directory;
* forks a probe (:mod:`.prefault`, confined like a spare, running only this package's code) at
  start, when the staged data changes and every ``PROBE_EVERY_FORKS`` spares, to learn which
  inherited pages an execution writes and which heap pages it reads; spares forked after its
  report copy the written ones while they wait for their job, and the zygote keeps mapped of
  its memfd heap only the read ones (and those it wrote itself): fewer entries for every fork
  to copy and every exit to drop;
* dies with the fork-server (``PR_SET_PDEATHSIG``), and its spares die with it in turn; user code
  cannot signal it (its pid is in the seccomp filter's protected set) nor read it (non-dumpable);
* runs under the children's seccomp filter itself (all but the session rules, which each spare
  adds after its ``setsid()``), so the spares inherit it instead of attaching it one by one.
"""

from __future__ import annotations

import logging
import os
import selectors
import shutil
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from . import cleanslate, child, fastfork, handoff, heapfile, isolation, prefault, seeding, spawn
from .config import Config
from .datacache import DatasetCache, VetLimits

log = logging.getLogger("pod_sandbox.zygote")
STOP_GRACE_S = 2.0
#: A probe that has not reported by then is killed (it takes ~50-100 ms).
PROBE_TIMEOUT_S = 10.0
#: The zygote's heap drifts as it works: learn again after this many spares.
PROBE_EVERY_FORKS = 1000
#: At start, the first spares wait this long at most for the first probe's report (~30-60 ms),
#: so that the first executions of a fresh pod find their pages copied too.
FIRST_PROBE_WAIT_S = 2.0


def kill_group(pid: int) -> None:
    """SIGKILL a child's whole process group (each spare is its own session leader)."""
    for fn, target in ((os.killpg, pid), (os.kill, pid)):
        try:
            fn(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


@dataclass
class ProbeRun:
    """A prefault probe on its way: its pid, the read end of its report pipe, what came so far."""

    pid: int
    fd: int
    started: float
    data: bytearray = field(default_factory=bytearray)


class Zygote:
    """The zygote's event loop: requests from the fork-server, SIGCHLD, spare forking."""

    def __init__(self, config: Config, sock: socket.socket, protected_pids: tuple[int, ...],
                 shared_before: dict[str, set[str]] | None = None) -> None:
        self.config = config
        self.sock = sock
        self.protected_pids = protected_pids
        self.shared_before = shared_before or {}
        self.cache = DatasetCache(config.data_dir, config.dataset_cache_bytes, VetLimits(
            memory_bytes=config.limits.memory_limit_bytes, max_processes=config.limits.max_processes))
        self.children: dict[int, str] = {}      # pid -> scratch directory
        self.to_remove: list[str] = []
        self.pending_forks = 0
        self.stopping = False
        self.session_filter = b""
        self.spawner: spawn.Spawner | None = None
        self.seeds = seeding.GlobalSeeds()
        self.scratch_variables: tuple[tuple[str, str], ...] = ()
        self.prefault_ranges: list[prefault.Range] = []
        self.probe: ProbeRun | None = None
        self.probe_again = False
        self.probe_pids: set[int] = set()    # probes not reaped yet
        self.forks_since_probe = 0
        self.pagemap_fd: int | None = None    # its own, opened before any child exists
        self.move_heap_due = False            # a dataset load: move the heap again after the probe
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()

    def setup(self, parent_pid: int) -> None:
        """Confine the zygote, compile the children's seccomp filter, install signal handling."""
        try:  # before any child exists: it turns dumpable for the write
            isolation.raise_oom_score_adj()
        except OSError as exc:
            log.warning("zygote: cannot raise its oom_score_adj (%s)", exc)
        isolation.make_undumpable()
        isolation.become_subreaper()  # orphans of user code come here to be reaped
        isolation.die_with_parent()
        if os.getppid() != parent_pid:  # the fork-server died before PDEATHSIG was armed
            raise OSError(f"zygote: parent {parent_pid} is gone")
        if self.config.heapfile and self.config.prefault:
            # Opened now, before any child exists: a non-dumpable process must turn dumpable for
            # the open, and later a child of the same uid could open its /proc files meanwhile.
            # Spares and probes close it with every other inherited fd.
            try:
                self.pagemap_fd = prefault.open_pagemap()
            except OSError as exc:
                log.warning("zygote: cannot read its own pagemap (%s): the heap is not trimmed", exc.strerror)
        # Its own pid joins the protected set: user code may not signal its parent either.
        layers = isolation.compile_seccomp_layers((*self.protected_pids, os.getpid()))
        self.session_filter = layers.sessions
        spawner = spawn.load(self.session_filter, child.EXIT_SETUP_FAILED)
        if isinstance(spawner, str):
            log.warning("zygote: spares are set up in Python (%s)", spawner)
        else:
            self.spawner = spawner
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.sock.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.sel.register(self.sock, selectors.EVENT_READ, "ctl")
        # Below the fork-server and the HTTP process: forking, reaping and user code yield the
        # CPU to requests and answers (inherited by every spare; user code cannot raise it back).
        os.nice(self.config.limits.child_nice)
        # The children's filter but for its session rules, in the zygote itself: every spare and
        # probe inherits it through fork() and attaches only the small session layer after its
        # setsid(). The zygote needs none of what it denies (no network, no signals to the
        # server, no ptrace, ...), so it is confined the same way.
        isolation.load_seccomp(layers.base)
        self.scratch_variables = child.prepare_parent(self.config.scratch_root)

    def _on_term(self, *_: Any) -> None:
        self.stopping = True

    def send(self, message: dict[str, Any], fds: list[int] | None = None) -> None:
        """A message to the fork-server; it always drains its end, so blocking briefly is fine.

        A fork-server that closed its end is shutting down (or dead): stop, quietly."""
        if self.stopping:
            return
        self.sock.setblocking(True)
        try:
            handoff.send(self.sock, message, fds)
        except (BrokenPipeError, ConnectionError):
            self.stopping = True
        finally:
            self.sock.setblocking(False)

    # -- spares ------------------------------------------------------------------------------
    def fork_spare(self) -> None:
        """Fork one confined spare and hand its pipe ends to the fork-server."""
        scratch = os.path.join(self.config.scratch_root, "x-" + os.urandom(16).hex())
        generation = self.cache.generation
        self.seeds.reseed()  # each execution draws its own numbers
        child.drop_font_cache()
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        spawner = self.spawner if fastfork.single_threaded() else None
        set_up = spawner is not None
        if spawner is not None:  # pipes, fork and the spare's set-up in C (spawn.py)
            pid, ends = spawner.spawn(scratch, parent)
        else:
            pid, ends = self.fork_in_python()
        if pid == 0:  # the spare
            job_r, result_w, out_w, err_w = ends
            try:
                child.spare_main(job_r, result_w, out_w, err_w, self.session_filter,
                                 self.cache.view, self.config.data_dir, scratch, self.scratch_variables,
                                 parent_pid=parent, set_up=set_up,
                                 prewarm=self.config.prewarm, prefault_ranges=self.prefault_ranges,
                                 shared_before=self.shared_before)
            finally:
                os._exit(child.EXIT_CRASHED)
        self.children[pid] = scratch
        self.forks_since_probe += 1
        if self.forks_since_probe >= PROBE_EVERY_FORKS:
            self.start_probe()
        try:
            self.send({"op": "spare", "pid": pid, "generation": generation, "scratch": scratch}, ends)
        finally:
            for fd in ends:
                os.close(fd)

    @staticmethod
    def fork_in_python() -> tuple[int, list[int]]:
        """Pipes and fork without the C helper: in the child 0 and its ends (job read, result,
        stdout and stderr write); in the zygote the pid and its ends (job write, result, stdout
        and stderr read, those three non-blocking)."""
        job_r, job_w = os.pipe()
        result_r, result_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            pid = fastfork.fork()  # without CPython's after-fork hooks: ~1 ms less per spare
        except OSError:
            for fd in (job_r, job_w, result_r, result_w, out_r, out_w, err_r, err_w):
                os.close(fd)
            raise
        if pid == 0:
            return 0, [job_r, result_w, out_w, err_w]
        for fd in (job_r, result_w, out_w, err_w):
            os.close(fd)
        for fd in (result_r, out_r, err_r):
            os.set_blocking(fd, False)  # on the shared open file: the fork-server reads them so
        return pid, [job_w, result_r, out_r, err_r]

    # -- prefault probe ----------------------------------------------------------------------
    def start_probe(self) -> None:
        """Fork a probe that learns which inherited pages an execution writes (or ask for another
        once the running one is done). Best effort: without a report, spares keep the old ranges."""
        if not self.config.prefault or self.stopping:
            return
        if self.probe is not None:
            self.probe_again = True
            return
        self.probe_again = False
        self.forks_since_probe = 0
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            log.warning("zygote: could not fork a prefault probe: %s", exc)
            return
        if pid == 0:  # the probe
            code = 0
            try:
                prefault.probe_main(write_fd, parent, self.cache.view, self.config.data_dir,
                                    self.session_filter, self.probe_limits(),
                                    heapfile_in_use=self.config.heapfile)
            except BaseException:  # noqa: BLE001 - no report: the zygote keeps what it had
                code = 1
            finally:
                os._exit(code)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.probe_pids.add(pid)
        self.probe = ProbeRun(pid, read_fd, time.monotonic())
        self.sel.register(read_fd, selectors.EVENT_READ, "probe")

    def probe_limits(self) -> isolation.ChildLimits:
        """A job's rlimits for the probe: its memory and processes, a few CPU seconds, no files."""
        return isolation.ChildLimits(
            cpu_seconds=prefault.PROBE_CPU_S,
            address_space_bytes=isolation.address_space_bytes() + self.config.limits.memory_limit_bytes,
            max_processes=self.config.limits.max_processes,
            max_file_bytes=0,
            max_open_files=min(64, self.config.limits.max_open_files),
        )

    def on_probe(self) -> None:
        """Read what the probe reported so far; at EOF take its ranges."""
        probe = self.probe
        if probe is None:
            return
        try:
            while chunk := os.read(probe.fd, 1 << 16):
                probe.data += chunk
                if len(probe.data) > prefault.MAX_REPORT_BYTES:
                    kill_group(probe.pid)
                    self.end_probe(None)
                    return
        except BlockingIOError:
            return
        self.end_probe(prefault.decode(bytes(probe.data)))

    def end_probe(self, learned: prefault.Learned | None) -> None:
        """Close the probe's pipe; keep the pages it saw written for the spares and map in
        itself the pages it saw read (None: it failed, keep what was learned before)."""
        probe = self.probe
        if probe is None:
            return
        self.probe = None
        self.sel.unregister(probe.fd)
        os.close(probe.fd)
        if self.stopping:
            return
        if learned is None:
            log.warning("zygote: the prefault probe (pid %d) gave no report; spares keep the %d "
                        "ranges learned before", probe.pid, len(self.prefault_ranges))
        else:
            self.prefault_ranges = learned.written
            heap = self.refresh_heap(learned.read)
            mapped = prefault.map_in(learned.read)
            log.info("zygote: prefault probe learned %d written pages in %d ranges and %d read "
                     "pages (%d mapped here; heap %s) in %.0f ms",
                     sum(length for _, length in learned.written) // prefault.PAGE,
                     len(learned.written), sum(length for _, length in learned.read) // prefault.PAGE,
                     mapped // prefault.PAGE, heap, (time.monotonic() - probe.started) * 1000)
        if self.probe_again:
            self.start_probe()

    def refresh_heap(self, keep: list[prefault.Range]) -> str:
        """Leave mapped, of the memfd heap, little more than ``keep`` (what an execution reads;
        the caller maps it in): every fork copies the entries of the rest and every child's exit
        drops them. Says what it did, for the log.

        After a dataset load the heap moves again (:func:`heapfile.move_anonymous_memory` with
        ``again``): the pages this zygote wrote since it was forked (loading and warming the
        frames, its own loop) join a new memfd, and its mappings start empty. The new memfd
        duplicates the fork-server's pages this zygote never wrote (~50 MB), which is why that
        waits for a dataset: with one, what moves from anonymous memory makes up most of it.
        It needs a single thread. When it cannot be done (another thread runs: pyarrow starts
        its pools for a Feather file), and between loads, the entries of heap pages it never
        wrote are dropped instead, but for ``keep`` (:func:`heapfile.trim`)."""
        if self.move_heap_due and self.config.heapfile:
            self.move_heap_due = False
            moved = heapfile.move_anonymous_memory(again=True)
            if not isinstance(moved, heapfile.Moved):
                log.info("zygote: the heap stays on its memfd (%s)", moved)
            elif moved.regions:  # none: the fork-server could not move it in the first place
                return (f"moved again: {moved.bytes >> 20} MB in {moved.regions} regions, "
                        f"{moved.seconds * 1000:.0f} ms")
        if self.pagemap_fd is None:
            return "kept"
        dropped = heapfile.trim(self.pagemap_fd, keep)
        if isinstance(dropped, str):
            log.warning("zygote: the heap keeps all its pages mapped (%s)", dropped)
            return "kept"
        return f"trimmed: {dropped} other pages dropped"

    def check_probe(self) -> float | None:
        """Kill a probe past its deadline; return the seconds it has left (None: no probe)."""
        if self.probe is None:
            return None
        left = self.probe.started + PROBE_TIMEOUT_S - time.monotonic()
        if left > 0:
            return left
        kill_group(self.probe.pid)
        self.end_probe(None)
        return None

    # -- requests ----------------------------------------------------------------------------
    def on_control(self) -> None:
        """Handle every queued request from the fork-server; EOF means it is gone."""
        while True:
            try:
                received = handoff.receive(self.sock)
            except BlockingIOError:
                return
            except (ConnectionError, handoff.HandoffError) as exc:
                log.error("zygote: control channel broken: %s", exc)
                received = None
            if received is None:
                self.stopping = True
                return
            message, _fds = received
            op = message["op"]
            if op == "ping":  # the fork-server's check that this loop turns
                self.send({"op": "pong"})
            elif op == "spawn":
                self.pending_forks += max(0, int(message.get("n", 0)))
            elif op == "cache":
                names = [n for n in message.get("names", []) if isinstance(n, str)]
                generation = self.cache.generation
                checked = self.cache.refresh(names)
                if self.cache.generation != generation:
                    self.move_heap_due = True  # with what loading the new frames wrote
                    self.start_probe()  # the new frames are where the next executions read
                self.send({"op": "cached", "seq": message.get("seq", 0), "generation": self.cache.generation,
                           "checked": checked, "cached": sorted(self.cache.entries)})
            else:
                log.warning("zygote: unknown request %r", op)

    def reap(self) -> None:
        """Collect exited children: report spares/jobs, kill their groups, queue scratch removal."""
        while True:
            try:
                pid, status, rusage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.probe_pids:
                self.probe_pids.discard(pid)
                kill_group(pid)
                continue
            scratch = self.children.pop(pid, None)
            if scratch is None:
                continue  # a re-parented grandchild of user code
            kill_group(pid)  # nothing the code started may outlive it
            self.to_remove.append(scratch)
            self.send({"op": "exit", "pid": pid, "status": status, "maxrss_kb": rusage.ru_maxrss})

    def remove_scratch(self) -> None:
        """Remove the scratch directories of children that are gone, and whatever they left in
        the pod's shared directories (:func:`.cleanslate.sweep`)."""
        for path in self.to_remove:
            shutil.rmtree(path, ignore_errors=True)
        self.to_remove.clear()
        cleanslate.sweep(self.shared_before, self.config.scratch_root, set(self.children.values()))

    # -- loop --------------------------------------------------------------------------------
    def serve(self) -> None:
        """Run until the fork-server closes the channel (or SIGTERM); kill every child on the way out."""
        self.start_probe()
        hold_forks_until = time.monotonic() + FIRST_PROBE_WAIT_S
        while not self.stopping:
            # Requests and exits first, one fork at a time in between: an exit report or a
            # cache request never waits behind a batch of forks.
            probe_left = self.check_probe()
            hold_left = hold_forks_until - time.monotonic() if self.probe is not None else 0.0
            busy = (self.pending_forks > 0 and hold_left <= 0) or bool(self.to_remove)
            if probe_left is not None and hold_left > 0:
                probe_left = min(probe_left, hold_left)
            for key, _mask in self.sel.select(0 if busy else probe_left):
                if key.data == "probe":
                    self.on_probe()
                elif key.data == "wake":
                    try:
                        while self.wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                else:
                    self.on_control()
            self.reap()
            if self.stopping:
                break
            if self.pending_forks > 0 and (self.probe is None or time.monotonic() >= hold_forks_until):
                self.pending_forks -= 1
                try:
                    self.fork_spare()
                except OSError as exc:
                    log.warning("zygote: could not fork a spare: %s", exc)
                    self.pending_forks = 0
                    self.send({"op": "spawn_failed", "error": f"{type(exc).__name__}: {exc}"})
            elif self.to_remove:
                self.remove_scratch()
        self.shutdown()

    def shutdown(self) -> None:
        """Kill every child's group, reap them (briefly), remove their scratch directories."""
        if self.probe is not None:
            kill_group(self.probe.pid)
            self.end_probe(None)
        for pid in list(self.children):
            kill_group(pid)
        deadline = time.monotonic() + STOP_GRACE_S
        while self.children and time.monotonic() < deadline:
            self.reap()
            if self.children:
                self.sel.select(0.01)
        for scratch in self.children.values():
            self.to_remove.append(scratch)
        self.remove_scratch()


def start_zygote(config: Config, protected_pids: tuple[int, ...], inherited: list[socket.socket],
                 heartbeat: Any = None, shared_before: dict[str, set[str]] | None = None
                 ) -> tuple[int, socket.socket]:
    """Fork the zygote from the (warm, single-threaded) fork-server; return its pid and channel.

    ``inherited`` are the fork-server's sockets: the zygote detaches and closes them (and every
    other fd but stdio), so it never holds the HTTP process's channels; it unmaps the
    fork-server's ``heartbeat`` page (:class:`.liveness.Heartbeat`), so no spare has it.
    ``shared_before``: what :func:`.cleanslate.snapshot` saw before any user code ran.
    """
    ours, theirs = handoff.channel_pair()
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            signal.set_wakeup_fd(-1)  # the fork-server's wake-up fd number is about to be closed
            for sock in (*inherited, ours):
                sock.detach()  # the fd numbers are closed below; the objects must not close them later
            child.close_fds_except({0, 1, 2, theirs.fileno()})
            if heartbeat is not None:
                heartbeat.close()
            zygote = Zygote(config, theirs, protected_pids, shared_before or {})
            zygote.setup(parent)
            zygote.serve()
        except BaseException:  # noqa: BLE001 - log and exit non-zero; the fork-server notices
            log.exception("zygote failed")
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)
    theirs.close()
    return pid, ours
