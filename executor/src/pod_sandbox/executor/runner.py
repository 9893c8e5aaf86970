"""HTTP-side runner: execution slots, talking to the fork-server, turning facts into a response."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from typing import Any

from .. import wire
from . import framing
from .forkserver import ForkServerHandle

log = logging.getLogger("pod_sandbox.runner")
ANSWER_GRACE_S = 20.0
MISSING_DATASET_ERROR = "MissingDatasetError"


class SlotsBusy(Exception):
    """Every execution slot is in use (HTTP 429)."""


class SandboxUnavailable(Exception):
    """The fork-server is gone or a slot's channel broke (HTTP 503)."""


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def decide(header: dict[str, Any], result_bytes: bytes, timeout_s: float, max_result_bytes: int
           ) -> tuple[str, dict[str, Any], dict[str, str] | None]:
    """Status, result and error from the fork-server's facts and the child's result frame."""
    none = {"type": "none", "value": None}
    if header.get("start_error"):
        return "error", none, {"type": "SandboxError", "message": header["start_error"], "traceback": ""}
    sig = header.get("signal")
    if header.get("timed_out"):
        return "timeout", none, {"type": "TimeoutError", "traceback": "",
                                 "message": f"execution exceeded timeout_s={timeout_s:g} and was killed"}
    if sig == signal.SIGXCPU:
        return "timeout", none, {"type": "TimeoutError", "traceback": "",
                                 "message": "execution used up its CPU-time limit and was killed"}
    if header.get("result_too_large"):
        return "error", none, {"type": "ResultTooLarge", "traceback": "",
                               "message": f"the encoded result exceeds max_result_bytes={max_result_bytes}"}
    if result_bytes:
        try:
            reported = json.loads(result_bytes)
            status = reported["status"]
            if status not in ("ok", "error", "memory"):
                raise ValueError(f"status {status!r}")
            result = wire.validate_result(reported["result"]) if status == "ok" else none
            error = reported.get("error")
            if status != "ok":
                if not (isinstance(error, dict) and all(isinstance(error.get(k), str)
                                                        for k in ("type", "message", "traceback"))):
                    raise ValueError("error object")
                query = error.get("query")
                error = {k: error[k] for k in ("type", "message", "traceback")}
                if isinstance(query, str) and error["type"] == MISSING_DATASET_ERROR:
                    error["query"] = query  # the full text of an unstaged SQL query
            else:
                error = None
            rss = reported.get("peak_rss_bytes")  # written by the child: user code can forge it
            if rss is not None and not (isinstance(rss, int) and not isinstance(rss, bool)
                                        and 0 <= rss <= wire.DEFAULT_LIMITS.max_peak_rss_bytes):
                raise ValueError(f"peak_rss_bytes {rss!r:.40}")
            if not header.get("peak_rss_bytes") and rss:
                header["peak_rss_bytes"] = rss  # answered before the reap
            return status, result, error
        except (ValueError, KeyError, TypeError, RecursionError, wire.WireError) as exc:
            return "error", none, {"type": "ResultError", "traceback": "",
                                   "message": f"the result channel carried an invalid message ({exc})"}
    if sig is not None:
        hint = " (the memory or process limit, or the kernel's OOM killer)" if sig == signal.SIGKILL else ""
        return "killed", none, {"type": "Killed", "traceback": "",
                                "message": f"the execution process was killed by {_signal_name(sig)}{hint}"}
    code = header.get("exit_code")
    return "error", none, {"type": "ExitedWithoutResult", "traceback": "",
                           "message": f"the execution process exited with code {code} before returning a result"}


def response_body(header: dict[str, Any], stdout: bytes | None, stderr: bytes | None,
                  result_raw: bytes | None, request: wire.ExecuteRequest, max_result_bytes: int
                  ) -> dict[str, Any]:
    """The final execute response from the fork-server's answer frames."""
    status, result, error = decide(header, result_raw or b"", request.timeout_s, max_result_bytes)
    return {
        "status": status,
        "result": result,
        "stdout": (stdout or b"").decode("utf-8", "replace"),
        "stderr": (stderr or b"").decode("utf-8", "replace"),
        "stdout_truncated": bool(header.get("stdout_truncated")),
        "stderr_truncated": bool(header.get("stderr_truncated")),
        "error": error,
        "duration_ms": header.get("duration_ms", 0),
        "peak_rss_bytes": int(header.get("peak_rss_bytes") or 0),
        "request_id": request.request_id,
    }


class Runner:
    """Hands validated requests to free slots of the fork-server."""

    def __init__(self, handle: ForkServerHandle, max_result_bytes: int) -> None:
        self.handle = handle
        self.max_result_bytes = max_result_bytes
        self._free = list(range(len(handle.channels)))
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.inflight = 0
        self.alive = True
        self.warm = threading.Event()
        self.baseline_vm = 0
        self._watcher = threading.Thread(target=self._watch, name="forkserver-watch", daemon=True)
        self._watcher.start()
        threading.Thread(target=self._warm_up, name="forkserver-warm", daemon=True).start()

    def _warm_up(self) -> None:
        """Ping the fork-server once: it answers after it has imported and exercised the stack."""
        try:
            slot = self._acquire()
        except (SlotsBusy, SandboxUnavailable):
            return
        healthy = False
        try:
            chan = self.handle.channels[slot]
            chan.settimeout(300)
            framing.send_frame(chan, framing.dumps({"op": "ping"}))
            answer = framing.recv_frame(chan)
            if answer is not None:
                self.baseline_vm = int(json.loads(answer).get("baseline_vm", 0))
                healthy = True
                self.warm.set()
        except (OSError, framing.FrameError, ValueError) as exc:
            log.error("fork-server did not warm up: %s", exc)
        finally:
            self._release(slot, healthy)

    @property
    def slots(self) -> int:
        """Configured number of slots."""
        return len(self.handle.channels)

    def _watch(self) -> None:
        try:
            _pid, status = os.waitpid(self.handle.pid, 0)
            log.error("fork-server exited (status %s): executions are unavailable", status)
        except ChildProcessError:
            pass
        self.alive = False

    def _acquire(self) -> int:
        with self._lock:
            if not self.alive:
                raise SandboxUnavailable("the fork-server is not running")
            if not self._free:
                raise SlotsBusy()
            self.inflight += 1
            return self._free.pop()

    def _release(self, slot: int, healthy: bool) -> None:
        with self._lock:
            self.inflight -= 1
            if healthy:
                self._free.append(slot)
            self._idle.notify_all()

    def _recover(self, slot: int) -> None:
        """A slot whose answer did not come in time (a fork-server that was stopped or stuck):
        read and drop that answer whenever it comes, then the slot is free again. A slot whose
        channel breaks (the fork-server is gone) stays out; ``alive`` tells that anyway."""
        chan = self.handle.channels[slot]
        try:
            chan.settimeout(None)
            frames = [framing.recv_frame(chan) for _ in range(4)]
        except (OSError, framing.FrameError) as exc:
            log.error("slot %d is lost: %s", slot, exc)
            return
        if any(f is None for f in frames):
            return
        log.warning("slot %d: a late answer arrived and was dropped; the slot is free again", slot)
        with self._lock:
            self._free.append(slot)
            self._idle.notify_all()

    def problems(self) -> list[str]:
        """Why executions cannot run now, from the fork-server's heartbeat (``/ready``)."""
        beat = self.handle.heartbeat
        return beat.problems() if beat is not None else []

    @property
    def responsive(self) -> bool:
        """False once the fork-server has not turned for :data:`.liveness.DEAD_S` (``/health``)."""
        beat = self.handle.heartbeat
        return self.alive and (beat is None or not beat.dead())

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no execution runs (draining); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self.inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
            return True

    def execute(self, request: wire.ExecuteRequest) -> dict[str, Any]:
        """Run one request in a fresh child; raise SlotsBusy or SandboxUnavailable."""
        slot = self._acquire()
        chan = self.handle.channels[slot]
        healthy = False
        try:
            chan.settimeout(request.timeout_s + ANSWER_GRACE_S)
            framing.send_frame(chan, framing.dumps({
                "code": request.code,
                "timeout_s": request.timeout_s,
                "max_output_bytes": request.max_output_bytes,
                "datasets": request.datasets,
            }))
            frames = [framing.recv_frame(chan) for _ in range(4)]
            if any(f is None for f in frames):
                raise SandboxUnavailable("the fork-server closed the channel")
            header_raw, stdout, stderr, result_raw = frames  # type: ignore[misc]
            header = json.loads(header_raw)  # type: ignore[arg-type]
            healthy = True
        except (OSError, framing.FrameError) as exc:
            if isinstance(exc, TimeoutError):  # the answer may still come: take the slot back then
                threading.Thread(target=self._recover, args=(slot,), name=f"slot-{slot}-recover",
                                 daemon=True).start()
            raise SandboxUnavailable(f"slot {slot}: {exc}") from exc
        finally:
            self._release(slot, healthy)
        return response_body(header, stdout, stderr, result_raw, request, self.max_result_bytes)

    def stop(self, timeout_s: float = 3.0) -> None:
        """SIGTERM the fork-server (it kills running children) and wait for it briefly."""
        try:
            os.kill(self.handle.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        self._watcher.join(timeout_s)
        if self._watcher.is_alive():
            try:
                os.kill(self.handle.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._watcher.join(1.0)
