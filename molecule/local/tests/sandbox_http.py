"""HTTP to a sandbox pod through a Kubernetes port-forward (the Python client, no kubectl): one
keep-alive HTTP/1.1 connection over the forwarded socket, every response read by Content-Length."""

from __future__ import annotations

import http.client
import json
from contextlib import contextmanager
from typing import Any, Iterator

from kubernetes import client
from kubernetes.stream import portforward


class ForwardedHTTP(http.client.HTTPConnection):
    """An HTTPConnection whose socket is one end of a port-forward."""

    def __init__(self, sock: Any, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.sock = sock

    def connect(self) -> None:  # the socket exists already; a closed one cannot be reopened
        raise ConnectionError("the port-forward socket is closed")

    def call(self, method: str, path: str, body: Any = None, token: str | None = None) -> tuple[int, Any]:
        """Send one request; return the status and the decoded JSON body (or text)."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        payload = json.dumps(body).encode() if body is not None else None
        self.request(method, path, body=payload, headers=headers)
        response = self.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode(errors="replace")


@contextmanager
def forwarded(core: client.CoreV1Api, name: str, namespace: str, port: int, timeout: float = 60) -> Iterator[ForwardedHTTP]:
    """A keep-alive HTTP connection to `port` of pod `name`, closed on exit."""
    forward = portforward(core.connect_get_namespaced_pod_portforward, name, namespace, ports=str(port))
    sock = forward.socket(port)
    sock.settimeout(timeout)
    conn = ForwardedHTTP(sock, timeout)
    try:
        yield conn
    finally:
        conn.close()
        forward.close()
