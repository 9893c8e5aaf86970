"""SQL by call-back between a sandbox child and the fork-server (docs/sql-callback.md).

A job sent with ``sql_callback`` keeps the two pipes it already has and uses them both ways:

* child -> fork-server, on the **result pipe**: ``b"Q" + len(4, big-endian) + UTF-8 SQL`` for
  each ``execute_sql_query`` (then the child blocks), and ``b"R"`` + the result message (until
  EOF, as without the call-back) at the end. Nothing else: anything else, or a byte written while
  a query waits for its answer, is a protocol violation and the job's group is killed.
* fork-server -> child, on the **job pipe** (kept open after the job frame): one frame per answer,
  ``{"seq", "ok": true, "bytes": N}`` followed by N bytes of Parquet, or ``{"seq", "ok": false,
  "error": {"type", "message"}}``.

Pipes carry bytes only, never file descriptors or paths: the child reaches nothing but its own
answers. The fork-server never copies a result: the HTTP process hands it each answer as a
sealed memfd (``SOCK_SEQPACKET`` channel per slot, ``SCM_RIGHTS``) and the :class:`Relay`
``splice()``\\ s it into the job pipe as the child reads it.
"""

from __future__ import annotations

import builtins
import errno
import json
import logging
import os
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from . import framing

if TYPE_CHECKING:  # pragma: no cover
    from .forkserver import ForkServer, Job

log = logging.getLogger("pod_sandbox.sqlchannel")

QUERY_TAG = b"Q"
RESULT_TAG = b"R"
_LEN = struct.Struct("!I")
#: The HTTP process's answer datagrams are small JSON (the body travels as a memfd).
ANSWER_DATAGRAM_MAX = 16384
SPLICE_CHUNK = 1 << 20
#: Selector kinds the fork-server hands to :meth:`Relay.on_ready`.
KINDS = ("sql-answers", "sql-pipe")
TYPE_NAME_MAX = 200
MESSAGE_MAX = 8192


class ProtocolViolation(Exception):
    """The child wrote something on its result pipe the protocol does not allow."""


# -- the child's side ---------------------------------------------------------------------------


def remote_exception(error: Any) -> BaseException:
    """The exception a query's error answer raises inside the code, named as on the host
    (``_duckdb.BinderException``), so ``except Exception`` and tracebacks read as locally."""
    if not isinstance(error, dict):
        error = {}
    path = str(error.get("type") or "Exception")[:TYPE_NAME_MAX]
    message = str(error.get("message") or "")[:MESSAGE_MAX]
    module, _, name = path.rpartition(".")
    if not name.isidentifier():
        module, name = "pod_sandbox", "QueryError"
    if module in ("", "builtins"):
        known = getattr(builtins, name, None)
        if isinstance(known, type) and issubclass(known, Exception):
            return known(message)
    cls = type(name, (Exception,), {"__module__": module or "builtins", "__qualname__": name})
    return cls(message)


def _read_exact(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, SPLICE_CHUNK))
        if not chunk:
            raise ConnectionError("the sandbox's SQL channel closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


@dataclass
class ChildChannel:
    """The child's end: ``ask(sql)`` sends the query and blocks for its answer."""

    job_fd: int
    result_fd: int
    max_query_chars: int

    @classmethod
    def for_job(cls, job: dict[str, Any], job_fd: int, result_fd: int) -> "ChildChannel | None":
        """The channel when the job asks for the call-back, else None."""
        if not job.get("sql_callback"):
            return None
        return cls(job_fd, result_fd, int(job.get("max_query_chars") or 65536))

    def ask(self, sql_query: Any) -> Any:
        """Run ``sql_query`` on the host (through PandasAI's connector there); a DataFrame."""
        if not isinstance(sql_query, str):
            raise TypeError(f"execute_sql_query needs the SQL text as a str, got {type(sql_query).__name__}")
        if len(sql_query) > self.max_query_chars:
            raise ValueError(f"the query has {len(sql_query)} characters; the sandbox passes at most "
                             f"{self.max_query_chars} (max_query_chars)")
        data = sql_query.encode("utf-8")
        framing.write_all_fd(self.result_fd, QUERY_TAG + _LEN.pack(len(data)) + data)
        frame = framing.read_frame_fd(self.job_fd)
        if frame is None:
            raise ConnectionError("the sandbox's SQL channel closed")
        answer = json.loads(frame)
        if not answer.get("ok"):
            raise remote_exception(answer.get("error"))
        return read_answer(_read_exact(self.job_fd, int(answer["bytes"])))


def read_answer(body: bytes) -> Any:
    """A Parquet answer as a new DataFrame (dtypes and index from pandas' metadata). No thread is
    started: pyarrow's pools would cost a fresh child more than a small answer's read."""
    import pyarrow as pa  # noqa: PLC0415 - preloaded in the zygote (warm())
    import pyarrow.parquet as pq  # noqa: PLC0415

    return pq.ParquetFile(pa.BufferReader(body)).read(use_threads=False).to_pandas(use_threads=False)


def warm() -> None:
    """Run the answer path once in the fork-server before the zygote forks, so every child
    inherits what it imports and builds lazily (the first answer cost a child ~100 ms more)."""
    import io  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415

    frame = pd.DataFrame({"i": pd.array([1, None], dtype="Int64"), "f": np.array([0.5, 1.5]),
                          "s": ["a", "b"], "c": pd.Categorical(["x", "y"]),
                          "t": pd.date_range("2024-01-01", periods=2, tz="UTC")})
    buf = io.BytesIO()
    frame.to_parquet(buf, engine="pyarrow")
    read_answer(buf.getvalue())


# -- the fork-server's side ---------------------------------------------------------------------


@dataclass
class JobChannel:
    """One call-back job's channel as the fork-server sees it."""

    job_w: int
    max_query_bytes: int
    max_query_chars: int
    hard_deadline: float
    state: str = "running"          # running | waiting | result
    seq: int = 0
    buf: bytearray = field(default_factory=bytearray)
    paused_left: float = 0.0
    out: bytes = b""                # the answer frame's header not yet written
    memfd: int = -1
    memfd_pos: int = 0
    memfd_len: int = 0
    watching_pipe: bool = False
    violation: str | None = None

    def feed(self, data: bytes) -> tuple[str | None, bytes]:
        """Parse what the child wrote: (a new query or None, bytes of the final result)."""
        if self.state == "result":
            return None, data
        if self.state == "waiting":
            raise ProtocolViolation("the child wrote on its result pipe while its query waited for an answer")
        self.buf += data
        tag = bytes(self.buf[:1])
        if tag == RESULT_TAG:
            self.state = "result"
            rest = bytes(self.buf[1:])
            self.buf = bytearray()
            return None, rest
        if tag != QUERY_TAG:
            raise ProtocolViolation(f"the child wrote {tag!r} where a query or the result starts")
        if len(self.buf) < 1 + _LEN.size:
            return None, b""
        (size,) = _LEN.unpack(self.buf[1:1 + _LEN.size])
        if size > self.max_query_bytes:
            raise ProtocolViolation(f"a query of {size} bytes (at most {self.max_query_bytes})")
        end = 1 + _LEN.size + size
        if len(self.buf) < end:
            return None, b""
        if len(self.buf) > end:
            raise ProtocolViolation("the child wrote past its query before the answer")
        try:
            sql = self.buf[1 + _LEN.size:end].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolViolation(f"a query that is not UTF-8 ({exc})") from None
        if len(sql) > self.max_query_chars:
            raise ProtocolViolation(f"a query of {len(sql)} characters (at most {self.max_query_chars})")
        self.buf = bytearray()
        self.state = "waiting"
        self.seq += 1
        return sql, b""


def job_fields(request: dict[str, Any], max_query_chars: int) -> dict[str, Any]:
    """What the child's job frame carries for the call-back (nothing without it)."""
    if not request.get("sql_callback"):
        return {}
    return {"sql_callback": True, "max_query_chars": max_query_chars}


def channel_pairs(slots: int) -> list[tuple[socket.socket, socket.socket]]:
    """One ``SOCK_SEQPACKET`` pair per slot: the HTTP process's answers, each with its memfd."""
    return [socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET) for _ in range(slots)]


class Relay:
    """The fork-server's part: query events out, answers in, answers spliced into job pipes.

    Single-threaded, inside the fork-server's loop; it never blocks and never reads a result."""

    def __init__(self, server: "ForkServer", channels: list[socket.socket]) -> None:
        self.server = server
        self.channels = channels
        self.by_slot: dict[int, "Job"] = {}

    def register(self) -> None:
        """Watch the answer channels (called in the fork-server's set-up)."""
        for index, chan in enumerate(self.channels):
            chan.setblocking(False)
            self.server.sel.register(chan, selectors.EVENT_READ, ("sql-answers", index))

    def attach(self, job: "Job", request_fields: bool) -> None:
        """A job with the call-back started: keep its job pipe for the answers."""
        if not request_fields:
            return
        limits = self.server.limits
        os.set_blocking(job.spare.job_w, False)
        job.callback = JobChannel(job_w=job.spare.job_w, max_query_bytes=4 * limits.max_query_chars,
                                  max_query_chars=limits.max_query_chars,
                                  hard_deadline=job.started + limits.max_timeout_s)
        self.by_slot[job.slot] = job

    def on_result_bytes(self, job: "Job", data: bytes) -> bytes:
        """Bytes read from a call-back job's result pipe; returns those of its final result."""
        channel = job.callback
        assert channel is not None
        try:
            sql, rest = channel.feed(data)
        except ProtocolViolation as exc:
            self._violation(job, str(exc))
            return b""
        if sql is not None:
            now = time.monotonic()
            channel.paused_left = max(0.0, job.deadline - now)
            job.deadline = channel.hard_deadline  # the code's clock stops while the host answers
            try:
                framing.send_frame(self.server.channels[job.slot],
                                   framing.dumps({"event": "query", "seq": channel.seq, "sql": sql}))
            except OSError as exc:
                log.warning("slot %d: could not send a query: %s", job.slot, exc)
                self.server.kill_group(job.spare.pid)
        return rest

    def _violation(self, job: "Job", why: str) -> None:
        channel = job.callback
        assert channel is not None
        if channel.violation is None:
            channel.violation = why
            log.warning("slot %d: the child broke the SQL channel's protocol: %s", job.slot, why)
        self.server.kill_group(job.spare.pid)

    def on_ready(self, kind: str, arg: int) -> None:
        """The selector reported an answer channel or a job pipe ready."""
        if kind == "sql-answers":
            self._on_answer(arg)
        else:
            job = next((j for j in self.by_slot.values() if j.callback and j.callback.job_w == arg), None)
            if job is not None:
                self._pump(job)

    def _on_answer(self, slot: int) -> None:
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.channels[slot], ANSWER_DATAGRAM_MAX, 1)
        except BlockingIOError:
            return
        except OSError as exc:
            log.warning("slot %d: answer channel: %s", slot, exc)
            return
        memfd = fds[0] if fds else -1
        job = self.by_slot.get(slot)
        try:
            message = json.loads(data) if data else {}
        except ValueError:
            message = {}
        channel = job.callback if job is not None else None
        if channel is None or channel.state != "waiting" or message.get("seq") != channel.seq \
                or job.exited_at is not None:  # type: ignore[union-attr]
            if memfd >= 0:
                os.close(memfd)  # the job ended (or was killed) before the answer came
            return
        assert job is not None
        if message.get("ok") and memfd >= 0:
            size = int(message.get("bytes") or 0)
            header: dict[str, Any] = {"seq": channel.seq, "ok": True, "bytes": size}
            channel.memfd, channel.memfd_pos, channel.memfd_len = memfd, 0, size
        else:
            if memfd >= 0:
                os.close(memfd)
            header = {"seq": channel.seq, "ok": False, "error": message.get("error") or {}}
        channel.out = framing.frame(framing.dumps(header))
        channel.state = "running"
        job.deadline = min(time.monotonic() + channel.paused_left, channel.hard_deadline)
        self._pump(job)

    def _pump(self, job: "Job") -> None:
        """Write as much of the pending answer into the job pipe as it takes now."""
        channel = job.callback
        assert channel is not None
        try:
            while channel.out:
                written = os.write(channel.job_w, channel.out)
                channel.out = channel.out[written:]
            while channel.memfd >= 0 and channel.memfd_pos < channel.memfd_len:
                count = min(SPLICE_CHUNK, channel.memfd_len - channel.memfd_pos)
                moved = _splice(channel.memfd, channel.job_w, count, channel.memfd_pos)
                if moved == 0:
                    raise BrokenPipeError(errno.EPIPE, "the answer's memfd ended early")
                channel.memfd_pos += moved
        except BlockingIOError:
            self._watch_pipe(job, True)
            return
        except OSError as exc:  # the child is gone or closed its job pipe
            log.info("slot %d: answer not delivered: %s", job.slot, exc)
            self._drop_answer(channel)
            self._watch_pipe(job, False)
            return
        self._drop_answer(channel)
        self._watch_pipe(job, False)

    def _watch_pipe(self, job: "Job", on: bool) -> None:
        channel = job.callback
        assert channel is not None
        if on and not channel.watching_pipe:
            self.server.sel.register(channel.job_w, selectors.EVENT_WRITE, ("sql-pipe", channel.job_w))
            channel.watching_pipe = True
        elif not on and channel.watching_pipe:
            self.server.sel.unregister(channel.job_w)
            channel.watching_pipe = False

    @staticmethod
    def _drop_answer(channel: JobChannel) -> None:
        if channel.memfd >= 0:
            os.close(channel.memfd)
        channel.memfd, channel.memfd_pos, channel.memfd_len, channel.out = -1, 0, 0, b""

    def finish(self, job: "Job") -> dict[str, Any]:
        """The job is answered: close its channel; facts for the answer's header."""
        channel = job.callback
        if channel is None:
            return {}
        self._watch_pipe(job, False)
        self._drop_answer(channel)
        try:
            os.close(channel.job_w)
        except OSError:
            pass
        if self.by_slot.get(job.slot) is job:
            del self.by_slot[job.slot]
        job.callback = None
        return {"sql_violation": channel.violation, "sql_queries": channel.seq}


def _splice(src: int, dst: int, count: int, offset: int) -> int:
    """Move ``count`` bytes of ``src`` at ``offset`` into the pipe ``dst`` (no copy through Python
    where the kernel can splice)."""
    splice: Callable[..., int] | None = getattr(os, "splice", None)
    if splice is not None:
        try:
            return splice(src, dst, count, offset_src=offset)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS):
                raise
    data = os.pread(src, min(count, 65536), offset)
    return os.write(dst, data) if data else 0
