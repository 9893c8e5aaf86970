"""The kept-alive HTTP connection and the executor protocol calls, against a fake executor."""

from __future__ import annotations

import time

import pytest

from pod_sandbox import wire
from pod_sandbox.client.errors import (
    SandboxConnectionError,
    SandboxProtocolError,
    SandboxStartError,
)
from pod_sandbox.client.http import ExecutorHTTP
from pod_sandbox.client.protocol import ExecutorClient
from pod_sandbox.client.transport import TcpConnector

TOKEN = "t" * 40


def connect(fake, **kw) -> ExecutorClient:
    host, port = fake.server.server_address[:2]
    return ExecutorClient(ExecutorHTTP(TcpConnector(host, port), **kw), sleep=lambda s: None)


def test_one_connection_is_kept_alive_for_many_requests(fake_executor):
    client = connect(fake_executor)
    client.claim(TOKEN)
    for _ in range(25):
        assert client.health() == {"status": "ok"}
    request = wire.ExecuteRequest(code="result = {'type': 'number', 'value': 1}", timeout_s=5, max_output_bytes=1000)
    for _ in range(5):
        assert client.execute(request)["result"] == {"type": "number", "value": 1, "number_type": "builtins.int"}
    assert client.http.connections_opened == 1
    assert fake_executor.connections == 1
    client.http.close()


def test_answers_are_read_by_content_length_not_eof(fake_executor):
    # The fake never closes a kept-alive connection: reading to EOF would hang until timeout.
    client = connect(fake_executor, timeout_s=5)
    t0 = time.perf_counter()
    for _ in range(10):
        client.health()
    assert time.perf_counter() - t0 < 2.0
    client.http.close()


def test_claim_sets_the_bearer_token_and_second_claim_is_refused(fake_executor):
    client = connect(fake_executor)
    client.claim(TOKEN)
    assert fake_executor.token == TOKEN
    client.put_file("a.csv", b"x\n1\n", "text/csv")
    assert fake_executor.files["a.csv"] == b"x\n1\n"
    other = connect(fake_executor)
    with pytest.raises(SandboxStartError, match="already claimed"):
        other.claim("u" * 40)


def test_a_wrong_token_is_a_clear_protocol_error(fake_executor):
    fake_executor.token = TOKEN
    client = connect(fake_executor, token="w" * 40)
    with pytest.raises(SandboxProtocolError, match="rejected the session token") as info:
        client.info()
    assert info.value.status == 401


def test_claim_refuses_a_malformed_token_before_sending(fake_executor):
    client = connect(fake_executor)
    with pytest.raises(wire.WireError):
        client.claim("short")
    assert fake_executor.requests == []


def test_idempotent_request_is_retried_once_after_the_server_dropped_the_connection(fake_executor):
    client = connect(fake_executor)
    client.health()
    dropped = []

    def drop_once(handler) -> bool:
        if not dropped:
            dropped.append(1)
            handler.close_connection = True
            handler.connection.close()
            return True
        return False

    fake_executor.hooks["GET /health"] = drop_once
    assert client.health() == {"status": "ok"}
    assert dropped == [1]
    assert client.http.connections_opened == 2


def test_lost_execute_answer_is_not_replayed(fake_executor):
    client = connect(fake_executor)
    client.claim(TOKEN)
    client.health()
    calls = []

    def drop(handler) -> bool:
        calls.append(1)
        handler._body()
        handler.close_connection = True
        handler.connection.close()
        return True

    fake_executor.hooks["POST /v1/execute"] = drop
    request = wire.ExecuteRequest(code="result = None", timeout_s=5, max_output_bytes=10)
    with pytest.raises(SandboxConnectionError, match="connection lost"):
        client.execute(request)
    assert calls == [1]


def test_idle_connection_is_replaced_before_use(fake_executor):
    now = [0.0]
    client = connect(fake_executor, idle_reconnect_s=10, clock=lambda: now[0])
    client.health()
    now[0] = 11.0
    client.health()
    assert client.http.connections_opened == 2


def test_busy_executor_is_retried_after_retry_after(fake_executor):
    client = connect(fake_executor)
    client.claim(TOKEN)
    busy = [2]

    def maybe_busy(handler) -> bool:
        if busy[0] > 0:
            busy[0] -= 1
            handler._body()
            handler._send(429, {"error": {"field": "slots", "message": "busy"}}, {"Retry-After": "0"})
            return True
        return False

    fake_executor.hooks["POST /v1/execute"] = maybe_busy
    request = wire.ExecuteRequest(code="result = {'type': 'string', 'value': 'x'}", timeout_s=5, max_output_bytes=10)
    assert client.execute(request)["result"] == {"type": "string", "value": "x"}
    assert busy == [0]


def test_malformed_execute_response_is_a_protocol_error(fake_executor):
    client = connect(fake_executor)
    client.claim(TOKEN)

    def bad(handler) -> bool:
        handler._body()
        handler._send(200, {"status": "great"})
        return True

    fake_executor.hooks["POST /v1/execute"] = bad
    with pytest.raises(SandboxProtocolError, match="malformed response: response: 'result' is a required"):
        client.execute(wire.ExecuteRequest(code="x", timeout_s=1, max_output_bytes=1))


def test_http_errors_name_the_field(fake_executor):
    client = connect(fake_executor)
    client.claim(TOKEN)

    def too_big(handler) -> bool:
        handler._body()
        handler._send(413, {"error": {"field": "code", "message": "too large"}})
        return True

    fake_executor.hooks["POST /v1/execute"] = too_big
    with pytest.raises(SandboxProtocolError, match="HTTP 413: code: too large"):
        client.execute(wire.ExecuteRequest(code="x", timeout_s=1, max_output_bytes=1))


def test_unreachable_executor_is_a_connection_error():
    client = ExecutorClient(ExecutorHTTP(TcpConnector("127.0.0.1", 1), timeout_s=1))
    with pytest.raises(SandboxConnectionError, match="127.0.0.1:1"):
        client.health()


def test_no_answer_within_the_timeout_is_a_connection_error(fake_executor):
    client = connect(fake_executor, timeout_s=0.3)

    def silent(handler) -> bool:
        time.sleep(1.0)
        return False

    fake_executor.hooks["GET /health"] = silent
    with pytest.raises(SandboxConnectionError, match="no answer within 0.3 s"):
        client.http.request("GET", "/health")


class CountingConnector(TcpConnector):
    """Counts the writes of each request (a port-forward pays a delayed ACK per extra write)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.writes: list[int] = []

    def open(self, timeout):
        sock = super().open(timeout)
        connector = self

        class Wrapped:
            def __getattr__(self, name):
                return getattr(sock, name)

            def sendall(self, data):
                connector.writes.append(len(data))
                return sock.sendall(data)

            def send(self, data):
                connector.writes.append(len(data))
                return sock.send(data)

        return Wrapped()


def test_a_request_with_a_body_is_one_write(fake_executor):
    host, port = fake_executor.server.server_address[:2]
    connector = CountingConnector(host, port)
    client = ExecutorClient(ExecutorHTTP(connector))
    client.claim(TOKEN)
    client.execute(wire.ExecuteRequest(code="result = None", timeout_s=5, max_output_bytes=10))
    client.put_file("x.bin", b"z" * 5000)
    assert len(connector.writes) == 3
    client.http.close()


def test_prefetch_connector_hands_over_its_first_socket_or_discards_it(fake_executor):
    from pod_sandbox.client.transport import PrefetchConnector

    host, port = fake_executor.server.server_address[:2]
    inner = CountingConnector(host, port)
    used = PrefetchConnector(inner, 5)
    client = ExecutorClient(ExecutorHTTP(used))
    client.claim(TOKEN)
    client.health()
    assert client.http.connections_opened == 1
    assert fake_executor.connections == 1
    client.http.close()

    discarded = PrefetchConnector(TcpConnector(host, port), 5)
    discarded.close()  # claim lost: the speculative connection is closed unused
    deadline = time.monotonic() + 5
    while fake_executor.connections < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake_executor.connections == 2
    assert discarded._sock is not None and discarded._sock.fileno() == -1

    failing = PrefetchConnector(TcpConnector("127.0.0.1", 1), 1)
    with pytest.raises(SandboxConnectionError):
        failing.open(1)
