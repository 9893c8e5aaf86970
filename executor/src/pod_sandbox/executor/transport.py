# mypy: disable-error-code="has-type"
"""The HTTP transport: waitress, with what it lacks for clients that are not authenticated yet.

* **Body limits before buffering.** waitress reads a whole body (spooling it to ``$TMPDIR`` past
  512 KiB) before the application sees the request. Here a :data:`Gate` looks at the request
  line and headers the moment they are complete, before a body byte is kept: it answers with
  the body limit of that route for that client (4 KiB for a claim, ``max_body_bytes`` for an
  authenticated execution, ``max_upload_bytes`` for an authenticated upload, 0 elsewhere) or a
  refusal (401 for a body sent to an authenticated route without the token). A
  ``Content-Length`` over the limit is answered at once; a chunked body is cut off when it
  crosses it.
* **Probes have threads of their own.** ``GET``/``HEAD`` of :data:`PROBE_PATHS` go to two
  threads no other request uses, so executions, uploads and a queue of other requests never
  delay them.
* **A connection budget that never stops accepting.** waitress stops accepting at its
  connection limit, so idle or slow connections shut the probes out until they time out.
  Here the listener always accepts (a batch per wake-up) and, over the budget, closes the
  oldest connections that have no request in service, unauthenticated ones first.
"""

from __future__ import annotations

import http
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher
from waitress.utilities import Error

log = logging.getLogger("pod_sandbox.transport")
PROBE_PATHS = frozenset({"/health", "/ready"})
PROBE_THREADS = 2
#: Connections accepted per wake-up of the listener (waitress accepts one).
ACCEPT_BATCH = 64
#: A refused body up to this size is read and dropped so that the client, which sends all of
#: it before reading, gets the answer; above it the connection is closed after the answer.
DRAIN_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Verdict:
    """What the gate decided for one request, from its method, path and headers."""

    body_limit: int = 0
    authenticated: bool = False
    refusal: "Refusal | None" = None


@dataclass(frozen=True)
class Refusal:
    """An answer given before the body is read: status, the culprit field, a message, headers."""

    status: int
    field: str
    message: str
    headers: tuple[tuple[str, str], ...] = ()


#: ``(method, path, headers)`` -> :class:`Verdict`; headers as waitress keeps them (upper case,
#: ``-`` as ``_``, latin-1 text). Runs on the listener's thread: it must not block.
Gate = Callable[[str, str, Mapping[str, str]], Verdict]


class RefusedBeforeBody(Error):
    """A :class:`Refusal` in the JSON error shape every other answer has."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal
        self.code = refusal.status
        self.reason = http.HTTPStatus(refusal.status).phrase

    def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
        """Status line, headers and body for waitress's error task."""
        body = json.dumps({"error": {"field": self.refusal.field, "message": self.refusal.message}},
                          separators=(",", ":")).encode()
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store"), *self.refusal.headers]
        return f"{self.code} {self.reason}", headers, body


class GatedParser(HTTPRequestParser):
    """waitress's parser, asking the gate once the headers are complete."""

    gate: Gate
    channel: "GatedChannel | None" = None
    body_limit: int | None = None
    discarding = 0

    def parse_header(self, header_plus: bytes) -> None:
        """Parse as waitress does, then apply the gate's verdict before any body is buffered."""
        super().parse_header(header_plus)
        verdict = type(self).gate(self.command, self.path, self.headers)
        if verdict.authenticated and self.channel is not None:
            self.channel.authenticated = True
        has_body = self.chunked or self.content_length > 0
        if not has_body:
            return
        if verdict.refusal is not None:
            self._refuse(verdict.refusal)
        elif self.content_length > verdict.body_limit:
            self._refuse(Refusal(413, "body", f"{self.content_length} bytes exceeds the limit of "
                                              f"{verdict.body_limit} for {self.command} {self.path}"))
        else:
            self.body_limit = verdict.body_limit

    def received(self, data: bytes) -> int:
        """waitress's; a refused body is read and dropped (up to :data:`DRAIN_BYTES`), a chunked
        body that crosses the limit is refused there."""
        if self.discarding:
            n = min(len(data), self.discarding)
            self.discarding -= n
            self.completed = not self.discarding
            return n
        consumed = super().received(data)
        if self.discarding:
            self.completed = False  # waitress marks a request without a receiver complete
        elif (self.body_limit is not None and self.error is None and self.chunked
                and self.body_bytes_received > self.body_limit):
            self._refuse(Refusal(413, "body", f"chunked body exceeds the limit of {self.body_limit} "
                                              f"for {self.command} {self.path}"))
        return consumed

    def _refuse(self, refusal: Refusal) -> None:
        receiver: Any = self.body_rcv
        if receiver is not None:
            receiver.getbuf().close()  # drop what a chunked body had buffered
        # A client sends its whole body before it reads the answer: a small refused body is read
        # and dropped (never kept) so that the answer reaches it; a larger one is cut off.
        if not self.chunked and 0 < self.content_length <= DRAIN_BYTES:
            self.discarding = self.content_length
        self.error = RefusedBeforeBody(refusal)
        self.body_rcv = None
        self.content_length = 0
        self.chunked = False
        self.connection_close = True  # nothing after this request is read
        self.expect_continue = False  # no "100 Continue" (waitress would reopen the request)
        self.completed = not self.discarding


class GatedChannel(HTTPChannel):
    """A connection whose parsers know it (to mark it authenticated)."""

    authenticated = False
    gated_parser: type[GatedParser]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        parser_type = type(self).gated_parser

        def make_parser(adj: Adjustments) -> GatedParser:
            parser = parser_type(adj)
            parser.channel = self
            return parser

        self.parser_class = make_parser  # type: ignore[assignment]


class ProbeFirstDispatcher(ThreadedTaskDispatcher):
    """waitress's thread pool, and a separate one for the probes."""

    def __init__(self, threads: int) -> None:
        super().__init__()
        self.probes = ThreadedTaskDispatcher()
        self.probes.set_thread_count(PROBE_THREADS)
        self.set_thread_count(threads)

    def add_task(self, task: Any) -> None:
        """Queue a channel's next request on the probe threads or the others."""
        requests = getattr(task, "requests", None)
        first = requests[0] if requests else None
        if (first is not None and first.error is None and first.command in ("GET", "HEAD")
                and first.path in PROBE_PATHS):
            self.probes.add_task(task)
        else:
            super().add_task(task)

    def shutdown(self, cancel_pending: bool = True, timeout: float = 5) -> bool:
        """Stop both pools."""
        self.probes.shutdown(cancel_pending, timeout)
        return super().shutdown(cancel_pending, timeout)


class BudgetedServer(TcpWSGIServer):
    """A listener that always accepts and keeps the connection budget by evicting."""

    def readable(self) -> bool:
        """Accept whenever listening (waitress stops at its connection limit); run maintenance."""
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        return bool(self.accepting)

    def handle_accept(self) -> None:
        """Accept a batch, then evict over the budget."""
        for _ in range(ACCEPT_BATCH):
            try:
                accepted = self.accept()
                if accepted is None:
                    break
                conn, addr = accepted
                self.set_socket_options(conn)
            except OSError:
                break
            self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)
        self.keep_budget()

    def keep_budget(self) -> None:
        """Close the oldest connections with no request in service, unauthenticated ones first,
        until the budget holds (a connection being served is never closed)."""
        channels = [c for c in self._map.values() if isinstance(c, HTTPChannel)]
        excess = len(channels) - self.adj.connection_limit
        if excess <= 0:
            return
        idle = sorted((c for c in channels if not c.requests),
                      key=lambda c: (getattr(c, "authenticated", False), c.creation_time))
        for channel in idle[:excess]:
            channel.handle_close()
        log.warning("connection budget %d reached: closed %d idle or unfinished connection(s)",
                    self.adj.connection_limit, min(excess, len(idle)))


@dataclass
class Transport:
    """The listening server(s): ``run`` serves until the process exits."""

    server: Any
    effective_port: int

    def run(self) -> None:
        """Serve (blocks)."""
        self.server.run()


def create_transport(app: Callable[..., Any], gate: Gate, *, threads: int, connection_limit: int,
                     **adjustments: Any) -> Transport:
    """A waitress server for ``app`` whose requests pass ``gate`` before their bodies are read."""
    parser_type = type("Parser", (GatedParser,), {"gate": staticmethod(gate)})
    channel_type = type("Channel", (GatedChannel,), {"gated_parser": parser_type})
    server_type = type("Server", (BudgetedServer,), {"channel_class": channel_type})
    adj = Adjustments(threads=threads, connection_limit=connection_limit, asyncore_use_poll=True,
                      **adjustments)
    dispatcher = ProbeFirstDispatcher(threads)
    sockets: dict[int, Any] = {}
    servers = [server_type(app, sockets, dispatcher=dispatcher, adj=adj, sockinfo=info) for info in adj.listen]
    if len(servers) == 1:
        return Transport(servers[0], servers[0].effective_port)
    listen = [(s.effective_host, s.effective_port) for s in servers]
    return Transport(MultiSocketServer(sockets, adj, listen, dispatcher), servers[0].effective_port)
