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
* dies with the fork-server (``PR_SET_PDEATHSIG``), and its spares die with it in turn; user code
  cannot signal it (its pid is in the seccomp filter's protected set) nor read it (non-dumpable).
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
import uuid
from typing import Any

from . import child, handoff, isolation
from .config import Config
from .datacache import DatasetCache

log = logging.getLogger("pod_sandbox.zygote")
STOP_GRACE_S = 2.0


def kill_group(pid: int) -> None:
    """SIGKILL a child's whole process group (each spare is its own session leader)."""
    for fn, target in ((os.killpg, pid), (os.kill, pid)):
        try:
            fn(target, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Zygote:
    """The zygote's event loop: requests from the fork-server, SIGCHLD, spare forking."""

    def __init__(self, config: Config, sock: socket.socket, protected_pids: tuple[int, ...]) -> None:
        self.config = config
        self.sock = sock
        self.protected_pids = protected_pids
        self.cache = DatasetCache(config.data_dir, config.dataset_cache_bytes)
        self.children: dict[int, str] = {}      # pid -> scratch directory
        self.to_remove: list[str] = []
        self.pending_forks = 0
        self.stopping = False
        self.seccomp_program = b""
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()

    def setup(self, parent_pid: int) -> None:
        """Confine the zygote, compile the children's seccomp filter, install signal handling."""
        isolation.make_undumpable()
        isolation.become_subreaper()  # orphans of user code come here to be reaped
        isolation.die_with_parent()
        if os.getppid() != parent_pid:  # the fork-server died before PDEATHSIG was armed
            raise OSError(f"zygote: parent {parent_pid} is gone")
        # Its own pid joins the protected set: user code may not signal its parent either.
        self.seccomp_program = isolation.compile_seccomp((*self.protected_pids, os.getpid()))
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
        job_r, job_w = os.pipe()
        result_r, result_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        scratch = os.path.join(self.config.scratch_root, f"x-{uuid.uuid4().hex}")
        generation = self.cache.generation
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            for fd in (job_r, job_w, result_r, result_w, out_r, out_w, err_r, err_w):
                os.close(fd)
            raise
        if pid == 0:  # the spare
            try:
                child.spare_main(job_r, result_w, out_w, err_w, self.seccomp_program,
                                 self.cache.view, self.config.data_dir, scratch, parent_pid=parent,
                                 prewarm=self.config.prewarm)
            finally:
                os._exit(child.EXIT_CRASHED)
        for fd in (job_r, result_w, out_w, err_w):
            os.close(fd)
        for fd in (result_r, out_r, err_r):
            os.set_blocking(fd, False)  # on the shared open file: the fork-server reads them so
        self.children[pid] = scratch
        parent_ends = [job_w, result_r, out_r, err_r]
        try:
            self.send({"op": "spare", "pid": pid, "generation": generation, "scratch": scratch}, parent_ends)
        finally:
            for fd in parent_ends:
                os.close(fd)

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
            if op == "spawn":
                self.pending_forks += max(0, int(message.get("n", 0)))
            elif op == "cache":
                names = [n for n in message.get("names", []) if isinstance(n, str)]
                checked = self.cache.refresh(names)
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
            scratch = self.children.pop(pid, None)
            if scratch is None:
                continue  # a re-parented grandchild of user code
            kill_group(pid)  # nothing the code started may outlive it
            self.to_remove.append(scratch)
            self.send({"op": "exit", "pid": pid, "status": status, "maxrss_kb": rusage.ru_maxrss})

    def remove_scratch(self) -> None:
        """Remove the scratch directories of children that are gone."""
        for path in self.to_remove:
            shutil.rmtree(path, ignore_errors=True)
        self.to_remove.clear()

    # -- loop --------------------------------------------------------------------------------
    def serve(self) -> None:
        """Run until the fork-server closes the channel (or SIGTERM); kill every child on the way out."""
        while not self.stopping:
            # Requests and exits first, one fork at a time in between: an exit report or a
            # cache request never waits behind a batch of forks.
            busy = self.pending_forks > 0 or bool(self.to_remove)
            for key, _mask in self.sel.select(0 if busy else None):
                if key.data == "wake":
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
            if self.pending_forks > 0:
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


def start_zygote(config: Config, protected_pids: tuple[int, ...], inherited: list[socket.socket]
                 ) -> tuple[int, socket.socket]:
    """Fork the zygote from the (warm, single-threaded) fork-server; return its pid and channel.

    ``inherited`` are the fork-server's sockets: the zygote detaches and closes them (and every
    other fd but stdio), so it never holds the HTTP process's channels.
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
            zygote = Zygote(config, theirs, protected_pids)
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
