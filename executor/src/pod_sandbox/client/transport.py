"""Ways to reach the executor's port: a TCP address, or a port-forward through the API server."""

from __future__ import annotations

import socket
import threading
from typing import Any, Protocol

from .errors import SandboxConnectionError


class Connector(Protocol):
    """Opens byte streams to one executor; each ``open()`` is one new connection."""

    def open(self, timeout: float | None) -> Any:
        """A connected socket-like object (sendall, makefile, settimeout, close)."""

    def close(self) -> None:
        """Release everything this connector opened."""

    def describe(self) -> str:
        """Where it connects, for messages."""


class TcpConnector:
    """A plain TCP connection: ``url`` mode (a local or pre-provisioned executor) and pod IPs."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def open(self, timeout: float | None) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except OSError as exc:
            raise SandboxConnectionError(f"cannot connect to executor at {self.describe()}: {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def close(self) -> None:
        return None

    def describe(self) -> str:
        return f"{self.host}:{self.port}"


class PortForwardConnector:
    """One API-server port-forward (a websocket) per connection, made by the Python client.

    The session keeps its HTTP connection alive, so normally exactly one port-forward is open
    per session; a new one is made only after the old connection dropped.
    """

    def __init__(self, kube: Any, pod_name: str, port: int) -> None:
        self.kube = kube
        self.pod_name = pod_name
        self.port = port
        self._forwards: list[Any] = []
        self._lock = threading.Lock()

    def open(self, timeout: float | None) -> Any:
        forward = self.kube.portforward(self.pod_name, self.port)
        with self._lock:
            # Forwards whose socket was closed end their proxy thread themselves; drop them.
            self._forwards = [f for f in self._forwards if f.connected] + [forward]
        sock = forward.socket(self.port)
        sock.settimeout(timeout)
        return sock

    def close(self) -> None:
        with self._lock:
            forwards, self._forwards = self._forwards, []
        for forward in forwards:
            try:
                forward.close()
            except Exception:  # noqa: BLE001 - best effort
                pass

    def describe(self) -> str:
        return f"port-forward to pod {self.kube.namespace}/{self.pod_name}:{self.port}"


class PrefetchConnector:
    """Opens the first connection of ``inner`` in the background, right away.

    Used for warm pods: the port-forward is set up while the claim patch is in flight. Nothing
    is sent on it until the claim succeeded; ``close()`` discards it when the claim failed.
    """

    def __init__(self, inner: Any, timeout: float | None) -> None:
        self.inner = inner
        self._sock: Any = None
        self._error: BaseException | None = None
        self._taken = False
        self._thread = threading.Thread(target=self._open, args=(timeout,), daemon=True)
        self._thread.start()

    def _open(self, timeout: float | None) -> None:
        try:
            self._sock = self.inner.open(timeout)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of open()
            self._error = exc

    def open(self, timeout: float | None) -> Any:
        if self._taken:
            return self.inner.open(timeout)
        self._taken = True
        self._thread.join()
        if self._error is not None:
            raise self._error
        self._sock.settimeout(timeout)
        return self._sock

    def close(self) -> None:
        self._thread.join()
        if not self._taken and self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self.inner.close()

    def describe(self) -> str:
        return self.inner.describe()
