"""SQL by call-back, the HTTP side (docs/sql-callback.md): executions that wait for the client.

``POST /v1/execute`` with ``sql_callback: true`` holds its slot for the execution's whole life.
Each ``execute_sql_query`` of the code that is not staged in ``datasets`` reaches this process as
a query event; the execute request (or the previous answer's request) is answered ``status:
"query"`` and the client answers with ``POST /v1/executions/{id}/queries/{seq}`` (Parquet, or a
JSON error), whose response is the execution's next event. The answer body goes into a sealed
memfd, handed to the fork-server (:mod:`.sqlchannel`) and never parsed here.

Bounds: ``max_queries`` per execution (beyond: ``pod_sandbox.TooManyQueries`` raised in the code
without asking the client), ``max_query_bytes`` per answer and ``max_query_total_bytes`` per
execution (``query.max_bytes`` is what is left; a larger body is refused with 413 and the query
stays pending), ``query_timeout_s`` per query (then the code gets ``TimeoutError``), and the
fork-server's absolute cap ``max_timeout_s``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import re
import secrets
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable

import bottle

from .. import wire
from . import framing
from .config import Limits
from .runner import ANSWER_GRACE_S, Runner, SandboxUnavailable, response_body

log = logging.getLogger("pod_sandbox.sqlcallback")
PARQUET_TYPE = "application/vnd.apache.parquet"
JSON_TYPE = "application/json"
ERROR_TYPE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
ERROR_TYPE_MAX = 200
ERROR_MESSAGE_MAX = 8192
COPY_CHUNK = 1 << 20
TOO_MANY_QUERIES = "pod_sandbox.TooManyQueries"
SEALS = ("F_SEAL_SEAL", "F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE")


class AnswerRefused(Exception):
    """An answer request the execution cannot take (HTTP status, field, message)."""

    def __init__(self, status: int, field_name: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.field = field_name
        self.message = message


@dataclass
class Pending:
    """The query the code waits for."""

    seq: int
    sql: str
    max_bytes: int
    timer: threading.Timer | None = None


class Execution:
    """One running call-back execution: its slot, its events, the query it waits for."""

    def __init__(self, registry: "Executions", slot: int, request: wire.ExecuteRequest) -> None:
        self.registry = registry
        self.id = "e-" + secrets.token_hex(16)
        self.slot = slot
        self.request = request
        self.chan = registry.runner.handle.channels[slot]
        self.answers = registry.runner.handle.answer_channels[slot]
        self.lock = threading.Lock()
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.pending: Pending | None = None
        self.asked = 0
        self.bytes_used = 0
        self.done = False

    # -- the fork-server's events, read by one thread per execution --------------------------
    def read_events(self) -> None:
        """Read the slot's channel until the final answer; queue each event (None: broken)."""
        healthy = False
        try:
            while True:
                frame = framing.recv_frame(self.chan)
                if frame is None:
                    raise SandboxUnavailable("the fork-server closed the channel")
                header = json.loads(frame)
                if header.get("event") == "query":
                    self.events.put({"event": "query", "seq": int(header["seq"]), "sql": str(header["sql"])})
                    continue
                stdout, stderr, result_raw = (framing.recv_frame(self.chan) for _ in range(3))
                if result_raw is None:
                    raise SandboxUnavailable("the fork-server closed the channel")
                response = response_body(header, stdout, stderr, result_raw, self.request,
                                         self.registry.runner.max_result_bytes)
                if header.get("sql_violation"):
                    response["status"], response["result"] = "error", {"type": "none", "value": None}
                    response["error"] = {"type": "ProtocolViolation", "traceback": "",
                                         "message": f"the execution broke the SQL channel's protocol "
                                                    f"and was killed: {header['sql_violation']}"}
                healthy = True
                self.events.put(response)
                return
        except (OSError, framing.FrameError, ValueError, KeyError, SandboxUnavailable) as exc:
            log.error("slot %d: %s", self.slot, exc)
            self.events.put(None)
        finally:
            self.registry.runner._release(self.slot, healthy)  # noqa: SLF001 - the slot was ours

    def next_event(self) -> dict[str, Any]:
        """The execution's next event as the client sees it (caller holds ``lock``)."""
        limits = self.registry.limits
        while True:
            event = self.events.get()  # the fork-server answers by max_timeout_s at the latest
            if event is None:
                self._forget()
                raise SandboxUnavailable(f"slot {self.slot}: the execution's channel broke")
            if event.get("event") != "query":
                self._forget()
                return event
            self.asked += 1
            if self.asked > limits.max_queries:
                self._send({"seq": event["seq"], "ok": False, "error": {
                    "type": TOO_MANY_QUERIES,
                    "message": f"the code asked more than max_queries={limits.max_queries} SQL queries"}})
                continue
            max_bytes = max(0, min(limits.max_query_bytes, limits.max_query_total_bytes - self.bytes_used))
            timeout_s = float(self.request.query_timeout_s or limits.default_query_timeout_s)
            self.pending = Pending(event["seq"], event["sql"], max_bytes)
            timer = threading.Timer(timeout_s, self._on_timeout, (event["seq"], timeout_s))
            timer.daemon = True
            self.pending.timer = timer
            timer.start()
            return {"status": wire.QUERY_STATUS, "execution": self.id,
                    "query": {"seq": event["seq"], "sql": event["sql"], "max_bytes": max_bytes,
                              "timeout_s": timeout_s},
                    "stdout": "", "stderr": "", "request_id": self.request.request_id}

    def _forget(self) -> None:
        self.done = True
        self.pending = None
        self.registry.forget(self.id)

    def _send(self, message: dict[str, Any], memfd: int = -1) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        try:
            if memfd >= 0:
                socket.send_fds(self.answers, [data], [memfd])
            else:
                self.answers.send(data)
        except OSError as exc:  # the fork-server is gone: the event reader reports it
            log.error("slot %d: could not pass an answer on: %s", self.slot, exc)

    def _on_timeout(self, seq: int, timeout_s: float) -> None:
        """The client did not answer in time: the code gets TimeoutError; the execution goes on."""
        with self.lock:
            if self.done or self.pending is None or self.pending.seq != seq:
                return
            self.pending = None
            self._send({"seq": seq, "ok": False, "error": {
                "type": "TimeoutError", "message": f"the host did not answer the query within {timeout_s:g} s"}})
            try:
                event = self.next_event()
            except SandboxUnavailable:
                return
            if event.get("status") != wire.QUERY_STATUS:
                log.warning("execution %s ended with no client waiting (status %s)", self.id, event.get("status"))

    # -- the client's answer -----------------------------------------------------------------
    def answer(self, seq: int, content_type: str, stream: Any, length: int | None) -> dict[str, Any]:
        """Pass the client's answer to query ``seq`` on; the execution's next event."""
        if self.done or self.pending is None or self.pending.seq != seq:  # without waiting for the lock
            raise AnswerRefused(409, "seq", f"execution {self.id} does not wait for query {seq}")
        with self.lock:
            pending = self.pending
            if self.done or pending is None or pending.seq != seq:
                raise AnswerRefused(409, "seq", f"execution {self.id} does not wait for query {seq}")
            if content_type == PARQUET_TYPE:
                if length is not None and length > pending.max_bytes:
                    raise AnswerRefused(413, "body", f"{length} bytes exceeds query.max_bytes={pending.max_bytes}")
                memfd, size = _body_memfd(stream, length, pending.max_bytes)
                message: dict[str, Any] = {"seq": seq, "ok": True, "bytes": size}
            elif content_type == JSON_TYPE:
                message = {"seq": seq, "ok": False, "error": _error_body(stream, length)}
                memfd, size = -1, 0
            else:
                raise AnswerRefused(415, "Content-Type", f"must be {PARQUET_TYPE} or {JSON_TYPE}")
            if pending.timer is not None:
                pending.timer.cancel()
            self.pending = None
            self.bytes_used += size
            try:
                self._send(message, memfd)
            finally:
                if memfd >= 0:
                    os.close(memfd)
            return self.next_event()


def _body_memfd(stream: Any, length: int | None, limit: int) -> tuple[int, int]:
    """Copy the request body into a sealed memfd (at most ``limit`` bytes, else 413)."""
    fd = os.memfd_create("sql-answer", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        size, left = 0, length if length is not None else limit + 1
        while left > 0:
            chunk = stream.read(min(COPY_CHUNK, left))
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise AnswerRefused(413, "body", f"exceeds query.max_bytes={limit}")
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
            left -= len(chunk)
        if length is not None and size != length:
            raise AnswerRefused(400, "body", f"ended after {size} of {length} bytes")
        seals = 0
        for name in SEALS:
            seals |= getattr(fcntl, name, 0)
        if seals and hasattr(fcntl, "F_ADD_SEALS"):
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        return fd, size
    except BaseException:
        os.close(fd)
        raise


def _error_body(stream: Any, length: int | None) -> dict[str, str]:
    """A JSON error answer ``{"error": {"type", "message"}}``, checked."""
    limit = 4 * (ERROR_TYPE_MAX + ERROR_MESSAGE_MAX) + 256
    if length is not None and length > limit:
        raise AnswerRefused(413, "body", f"an error answer is at most {limit} bytes")
    raw = stream.read(limit + 1 if length is None else length)
    if len(raw) > limit:
        raise AnswerRefused(413, "body", f"an error answer is at most {limit} bytes")
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise AnswerRefused(400, "body", "is not valid JSON") from None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(error) != {"type", "message"}:
        raise AnswerRefused(400, "error", 'must be {"error": {"type": "<module.QualName>", "message": "..."}}')
    kind, message = error["type"], error["message"]
    if not isinstance(kind, str) or len(kind) > ERROR_TYPE_MAX or not ERROR_TYPE_RE.match(kind):
        raise AnswerRefused(400, "error.type", f"must be a dotted Python name of at most {ERROR_TYPE_MAX} chars")
    if not isinstance(message, str) or len(message) > ERROR_MESSAGE_MAX:
        raise AnswerRefused(400, "error.message", f"must be a string of at most {ERROR_MESSAGE_MAX} chars")
    return {"type": kind, "message": message}


class Executions:
    """The call-back executions of this server, by id (they live only while they run)."""

    def __init__(self, runner: Runner, limits: Limits) -> None:
        self.runner = runner
        self.limits = limits
        self._lock = threading.Lock()
        self._by_id: dict[str, Execution] = {}

    def start(self, request: wire.ExecuteRequest) -> dict[str, Any]:
        """Start ``request`` in a slot; its first event (a query, or the final response)."""
        slot = self.runner._acquire()  # noqa: SLF001 - SlotsBusy / SandboxUnavailable propagate
        execution = Execution(self, slot, request)
        try:
            execution.chan.settimeout(self.limits.max_timeout_s + ANSWER_GRACE_S)
            framing.send_frame(execution.chan, framing.dumps({
                "code": request.code, "timeout_s": request.timeout_s,
                "max_output_bytes": request.max_output_bytes, "datasets": request.datasets,
                "sql_callback": True,
            }))
        except OSError as exc:
            self.runner._release(slot, False)  # noqa: SLF001
            raise SandboxUnavailable(f"slot {slot}: {exc}") from exc
        with self._lock:
            self._by_id[execution.id] = execution
        threading.Thread(target=execution.read_events, name=f"sql-{execution.id[:10]}", daemon=True).start()
        with execution.lock:
            return execution.next_event()

    def get(self, execution_id: str) -> Execution | None:
        """The running execution ``execution_id``."""
        with self._lock:
            return self._by_id.get(execution_id)

    def forget(self, execution_id: str) -> None:
        """The execution ended."""
        with self._lock:
            self._by_id.pop(execution_id, None)


def install_routes(app: bottle.Bottle, executions: Executions, authenticated: Callable[..., Any],
                   json_response: Callable[..., Any], error_response: Callable[..., Any],
                   observe: Callable[[dict[str, Any]], None]) -> None:
    """``POST /v1/executions/<execution>/queries/<seq>``: the client's answer to one query."""

    @app.post("/v1/executions/<execution>/queries/<seq>")
    @authenticated
    def answer_query(execution: str, seq: str) -> Any:
        running = executions.get(execution) if wire.EXECUTION_ID_RE.match(execution) else None
        if running is None:
            return error_response(404, "execution", "no such running execution")
        if not seq.isdigit() or len(seq) > 12:
            return error_response(400, "seq", "must be a positive integer")
        raw_length = (bottle.request.environ.get("CONTENT_LENGTH") or "").strip()
        if raw_length and not raw_length.isdigit():
            return error_response(400, "Content-Length", "must be an integer")
        ctype = (bottle.request.content_type or "").split(";")[0].strip().lower()
        try:
            event = running.answer(int(seq), ctype, bottle.request.environ["wsgi.input"],
                                     int(raw_length) if raw_length else None)
        except AnswerRefused as exc:
            return error_response(exc.status, exc.field, exc.message)
        except SandboxUnavailable as exc:
            log.error("execution failed: %s", exc)
            return error_response(503, "request", "the sandbox is unavailable", {"Retry-After": "1"})
        if event.get("status") != wire.QUERY_STATUS:
            observe(event)
        return json_response(200, event)
