"""One kept-alive HTTP/1.1 connection to an executor, read by Content-Length, never to EOF.

The executor is not trusted: every answer is read within a deadline (the whole answer, not each
``recv``: a server dribbling a byte at a time still ends at the deadline) and a size cap checked
from ``Content-Length`` before the body is read (chunked bodies: while reading). The status line
and headers are bounded by ``http.client`` itself (65,536 bytes a line, 100 headers).
"""

from __future__ import annotations

import http.client
import io
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .. import wire
from ..limits import DEFAULT_LIMITS, AnswerLimits, LimitExceeded
from .errors import SandboxAnswerRefused, SandboxConnectionError, SandboxProtocolError
from .transport import Connector

_DROPPED = (
    http.client.RemoteDisconnected,
    http.client.IncompleteRead,
    http.client.BadStatusLine,
    ConnectionError,
    BrokenPipeError,
)


@dataclass(frozen=True)
class HttpResponse:
    """A complete response: status, lower-cased headers, body bytes."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self, limits: AnswerLimits = DEFAULT_LIMITS) -> Any:
        """The body as JSON, parsed within ``limits``; a protocol error naming the status when it is not JSON."""
        try:
            return wire.loads(self.body, limits)
        except LimitExceeded as exc:
            raise SandboxAnswerRefused(f"HTTP {self.status} answer refused: {exc}", exc.field, exc.limit,
                                       self.status) from None
        except wire.WireError as exc:
            raise SandboxProtocolError(
                f"executor answered HTTP {self.status} with a non-JSON body: {self.body[:200]!r}",
                self.status,
                self.body[:4096].decode("utf-8", "replace"),
            ) from exc


class _DeadlineSocket:
    """The reading side of a socket whose every ``recv`` waits only until one deadline."""

    def __init__(self, sock: Any, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline

    def recv_into(self, buffer: Any, nbytes: int = 0) -> int:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("the answer's deadline passed")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer, nbytes)

    def makefile(self, mode: str = "rb") -> io.BufferedReader:
        return io.BufferedReader(socket.SocketIO(self, "rb"))  # type: ignore[arg-type]

    def fileno(self) -> int:
        return self._sock.fileno()

    def _decref_socketios(self) -> None:  # called by SocketIO.close()
        return None


class _ConnectorHTTPConnection(http.client.HTTPConnection):
    """``http.client`` over whatever socket the connector opens (TCP or port-forward).

    A request goes out in ONE write: ``http.client`` sends the headers and the body separately,
    and over a port-forward the second small write waits for the delayed ACK of the first
    (about 25 ms per POST measured on the local cluster, against 0.8 ms for a GET).
    """

    def __init__(self, connector: Connector, timeout: float | None) -> None:
        super().__init__("pod-sandbox", timeout=timeout)
        self._connector = connector
        self._outgoing: list[bytes] | None = None
        self.deadline = 0.0

    def response_class(self, sock: Any, *args: Any, **kwargs: Any) -> http.client.HTTPResponse:  # type: ignore[override]
        """The answer, read from the socket within :attr:`deadline`."""
        return http.client.HTTPResponse(_DeadlineSocket(sock, self.deadline), *args, **kwargs)  # type: ignore[arg-type]

    def connect(self) -> None:
        self.sock = self._connector.open(self.timeout)

    def send(self, data: Any) -> None:
        if self._outgoing is not None and isinstance(data, (bytes, bytearray, memoryview)):
            self._outgoing.append(bytes(data))
            return
        super().send(data)

    def send_request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> None:
        """Format the request with ``http.client`` and write it with a single ``sendall``."""
        self._outgoing = []
        try:
            self.request(method, path, body=body, headers=headers)
            data = b"".join(self._outgoing)
        finally:
            self._outgoing = None
        if self.sock is None:
            self.connect()
        self.sock.sendall(data)


class ExecutorHTTP:
    """Requests to one executor over one kept-alive connection (thread-safe, one at a time).

    A request that fails while being sent is retried once on a new connection; a request whose
    answer was lost is retried only when it is idempotent (GET, PUT, DELETE), since a lost
    ``POST /v1/execute`` may have run. A connection idle longer than ``idle_reconnect_s`` is
    replaced before use, so the server's keep-alive timeout never races a request.
    """

    def __init__(
        self,
        connector: Connector,
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        idle_reconnect_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        limits: AnswerLimits = DEFAULT_LIMITS,
    ) -> None:
        self.connector = connector
        self.limits = limits
        self.token = token
        self.timeout_s = timeout_s
        self.idle_reconnect_s = idle_reconnect_s
        self._clock = clock
        self._conn: _ConnectorHTTPConnection | None = None
        self._last_used = 0.0
        self._lock = threading.Lock()
        self.connections_opened = 0

    def close(self) -> None:
        """Close the connection and everything the connector holds."""
        with self._lock:
            self._drop()
        self.connector.close()

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - best effort
                pass
            self._conn = None

    def _connection(self, timeout: float) -> _ConnectorHTTPConnection:
        if self._conn is not None and self._clock() - self._last_used > self.idle_reconnect_s:
            self._drop()
        if self._conn is None:
            self._conn = _ConnectorHTTPConnection(self.connector, timeout)
            self._conn.connect()
            self.connections_opened += 1
        elif self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        self._conn.timeout = timeout
        return self._conn

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        content_type: str = "application/json",
        timeout_s: float | None = None,
        auth: bool = True,
        max_bytes: int | None = None,
    ) -> HttpResponse:
        """Send one request and read its whole answer by Content-Length.

        The answer must be complete within ``timeout_s`` of the request being sent and hold at
        most ``max_bytes`` (default ``limits.max_response_bytes``); else the connection is
        dropped and :class:`SandboxConnectionError` (late) or :class:`SandboxAnswerRefused`
        (too large, or not HTTP) is raised.
        """
        timeout = self.timeout_s if timeout_s is None else timeout_s
        cap = self.limits.max_response_bytes if max_bytes is None else max_bytes
        headers = {"Connection": "keep-alive", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        idempotent = method in ("GET", "HEAD", "PUT", "DELETE")
        with self._lock:
            for attempt in (1, 2):
                conn = self._connection(timeout)
                try:
                    conn.send_request(method, path, body, headers)
                except _DROPPED + (OSError,) as exc:
                    self._drop()
                    if attempt == 1:
                        continue
                    raise SandboxConnectionError(
                        f"{method} {path} to {self.connector.describe()}: sending failed: {exc!r}"
                    ) from exc
                conn.deadline = time.monotonic() + timeout
                try:
                    resp = conn.getresponse()
                    data = self._read_body(resp, cap, f"{method} {path}")
                except SandboxAnswerRefused:
                    self._drop()
                    raise
                except socket.timeout as exc:
                    self._drop()
                    raise SandboxConnectionError(
                        f"{method} {path} to {self.connector.describe()}: no answer within {timeout:.1f} s"
                    ) from exc
                except _DROPPED + (OSError,) as exc:
                    self._drop()
                    if attempt == 1 and idempotent:
                        continue
                    raise SandboxConnectionError(
                        f"{method} {path} to {self.connector.describe()}: connection lost "
                        f"before the answer: {exc!r}"
                    ) from exc
                except http.client.HTTPException as exc:  # LineTooLong, too many headers, ...
                    self._drop()
                    raise SandboxAnswerRefused(
                        f"{method} {path}: answer refused: not a valid HTTP answer: {str(exc)[:200]}",
                        "headers",
                    ) from None
                self._last_used = self._clock()
                if resp.will_close or not resp.isclosed():
                    self._drop()
                return HttpResponse(
                    resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
                )
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _read_body(resp: http.client.HTTPResponse, cap: int, what: str) -> bytes:
        """The body, at most ``cap`` bytes: refused from Content-Length before reading, else while reading."""
        if resp.length is not None and resp.length > cap:
            raise SandboxAnswerRefused(
                f"{what}: answer refused: body: Content-Length {resp.length} exceeds {cap} bytes "
                "(AnswerLimits.max_response_bytes)", "body", "max_response_bytes", resp.status)
        data = resp.read(cap + 1)
        if resp.length:  # read(amt) returns what came before the connection closed
            raise http.client.IncompleteRead(data, resp.length)
        if len(data) > cap:
            raise SandboxAnswerRefused(
                f"{what}: answer refused: body: more than {cap} bytes (AnswerLimits.max_response_bytes)",
                "body", "max_response_bytes", resp.status)
        return data

    def json_request(
        self,
        method: str,
        path: str,
        payload: Any = None,
        *,
        timeout_s: float | None = None,
        auth: bool = True,
    ) -> HttpResponse:
        """A request whose body is ``payload`` as JSON (no body when ``payload`` is None)."""
        body = None if payload is None else json.dumps(payload).encode("utf-8")
        return self.request(method, path, body, timeout_s=timeout_s, auth=auth)
