"""Unit tests of the sandbox_probe module's HTTP-over-port-forward logic (no cluster needed).

The Kubernetes port-forward is replaced by a TCP connection to a local HTTP/1.1 server that
behaves like the executor (keep-alive, Content-Length); everything else is the module's code.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator

import pytest
from plugin_loader import load_plugin

probe = load_plugin("modules", "sandbox_probe")


class FakeExecutor(BaseHTTPRequestHandler):
    """Just enough of the executor API: /health, /v1/claim (once), /v1/execute (bearer)."""

    protocol_version = "HTTP/1.1"
    server: "ExecutorServer"

    def log_message(self, *_args: Any) -> None:  # keep pytest output clean
        pass

    def reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_json(self) -> Any:
        length = int(self.headers.get("Content-Length", "0"))
        return json.loads(self.rfile.read(length) or b"null")

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self.server.connections.add(self.client_address)
        if self.path == "/health":
            self.reply(200, {"status": self.server.health_status})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        self.server.connections.add(self.client_address)
        body = self.read_json()
        if self.path == "/v1/claim":
            if self.server.token is not None:
                self.reply(409, {"error": {"field": "token", "message": "already claimed"}})
                return
            self.server.token = body["token"]
            self.reply(200, {"claimed": True})
        elif self.path == "/v1/execute":
            if self.headers.get("Authorization") != "Bearer %s" % self.server.token:
                self.reply(401, {"error": {"field": "Authorization", "message": "bad token"}})
                return
            namespace: dict[str, Any] = {}
            exec(body["code"], namespace)  # noqa: S102 - test fixture only, fixed input
            self.reply(200, {"status": "ok", "result": namespace["result"]})
        else:
            self.reply(404, {"error": "not found"})


class ExecutorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeExecutor)
        self.token: str | None = None
        self.health_status = "ok"
        self.connections: set[Any] = set()


class FakeForward:
    """Stands in for kubernetes.stream.portforward's PortForward: one socket per port."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address)
        self.closed = False

    def socket(self, _port: int) -> socket.socket:
        return self.sock

    def error(self, _port: int) -> str | None:
        return None

    def close(self) -> None:
        self.closed = True
        self.sock.close()


@pytest.fixture()
def executor(monkeypatch: pytest.MonkeyPatch) -> Iterator[ExecutorServer]:
    server = ExecutorServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    forwards: list[FakeForward] = []

    def fake_open_tunnel(_api: Any, _name: str, _namespace: str, _port: int) -> FakeForward:
        forward = FakeForward(server.server_address[:2])
        forwards.append(forward)
        return forward

    monkeypatch.setattr(probe, "open_tunnel", fake_open_tunnel)
    server.forwards = forwards  # type: ignore[attr-defined]
    yield server
    server.shutdown()
    server.server_close()


def params(**overrides: Any) -> dict[str, Any]:
    base = {"name": "python-sandbox-x", "namespace": "pandasai-sandbox", "port": 8080, "health": True,
            "claim": True, "token": None, "code": 'result = {"type": "number", "value": 6 * 7}',
            "execute_timeout": 30.0, "timeout": 5.0}
    base.update(overrides)
    return base


def test_health_claim_execute_over_one_keepalive_connection(executor: ExecutorServer) -> None:
    results = probe.run_probe(None, params())
    assert results["health"]["body"] == {"status": "ok"}
    assert results["claim"]["status_code"] == 200
    assert results["execute"]["body"]["result"] == {"type": "number", "value": 42}
    # All three calls travelled over the single tunnel, read by Content-Length (a read to EOF
    # would have blocked until the 5 s timeout and failed).
    assert len(executor.connections) == 1
    assert executor.forwards[0].closed  # type: ignore[attr-defined]
    assert executor.token is not None and probe.TOKEN_RE.match(executor.token)


def test_given_token_is_used_for_claim_and_execute(executor: ExecutorServer) -> None:
    token = "t" * 40
    probe.run_probe(None, params(token=token))
    assert executor.token == token


def test_claimed_pod_fails_naming_the_call(executor: ExecutorServer) -> None:
    executor.token = "someone-else-" + "x" * 30
    with pytest.raises(probe.ProbeError, match=r"POST /v1/claim answered HTTP 409"):
        probe.run_probe(None, params())
    assert executor.forwards[0].closed  # type: ignore[attr-defined]


def test_unhealthy_executor_fails(executor: ExecutorServer) -> None:
    executor.health_status = "starting"
    with pytest.raises(probe.ProbeError, match=r"GET /health answered"):
        probe.run_probe(None, params())


def test_only_health_when_nothing_else_asked(executor: ExecutorServer) -> None:
    results = probe.run_probe(None, params(claim=False, code=None))
    assert set(results) == {"health"}
    assert executor.token is None


def test_silent_peer_times_out_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    monkeypatch.setattr(probe, "open_tunnel",
                        lambda *_a: FakeForward(listener.getsockname()))
    try:
        with pytest.raises(probe.ProbeError, match=r"GET /health: no HTTP answer"):
            probe.run_probe(None, params(timeout=0.5))
    finally:
        listener.close()


def test_api_status_message_is_extracted() -> None:
    text = ('Handshake status 404 Not Found -+-+- {} -+-+- {"kind":"Status","apiVersion":"v1","metadata":{},'
            '"status":"Failure","message":"pods \\"nope\\" not found","reason":"NotFound","code":404}')
    assert probe.api_status_message(text) == 'pods "nope" not found (NotFound)'
    assert probe.api_status_message("connection refused") == "connection refused"
