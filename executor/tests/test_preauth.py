"""HTTP clients before authentication, against the executor as a pod runs it (:mod:`podlike`:
shipped defaults, the pod's limits, a 256Mi /tmp): no body is buffered beyond its route's limit,
nothing unauthenticated reaches the spool directory, and /health and /ready keep answering
within 50 ms (the issue's bound; compared with the same run's idle latency) under hundreds of
idle or slow connections and a flood of large bodies."""

from __future__ import annotations

import json
import os
import selectors
import socket
import statistics
import threading
import time
from typing import Iterator

import pytest

from podlike import podlike_supported, start_podlike
from server_process import ExecutorProcess

MIB = 1024 * 1024
HUGE = 300 * MIB  # the issue's ~296 MiB spooled for a 4 KiB claim
PROBE_BOUND_S = 0.050


@pytest.fixture(scope="module")
def pod() -> Iterator[ExecutorProcess]:
    why = podlike_supported()
    if why:
        pytest.skip(f"pod-like executor: {why}")
    proc = start_podlike(claim=False)
    yield proc
    proc.stop()


def _head(method: str, path: str, extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: pod\r\n{extra}".encode()


def _answer(sock: socket.socket, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """Read one answer (status, body) from ``sock``."""
    sock.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before an answer: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(head.split(b" ")[1]), body


#: Every route, as a client without the token reaches it, with a body far above any limit.
ROUTES = [
    ("POST", "/v1/claim", 413), ("PUT", "/v1/files/big.parquet", 401), ("POST", "/v1/execute", 401),
    ("GET", "/v1/info", 401), ("GET", "/v1/files", 401), ("GET", "/v1/files/x.csv", 401),
    ("DELETE", "/v1/files/x.csv", 401), ("POST", "/v1/shutdown", 401), ("GET", "/health", 413),
    ("GET", "/ready", 413), ("GET", "/metrics", 413), ("GET", "/openapi.json", 413), ("POST", "/nowhere", 413),
]


def _spooled_bytes(pod: ExecutorProcess) -> int:
    """Bytes in files the HTTP process holds open under the pod's /tmp (waitress's spool:
    unlinked temporary files)."""
    total = 0
    fd_dir = f"/proc/{pod.pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
            if target.startswith("/tmp/") or "(deleted)" in target:
                total += os.stat(os.path.join(fd_dir, fd)).st_size
        except OSError:
            continue
    return total


@pytest.mark.parametrize("method,path,status", ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_an_oversized_body_is_answered_before_it_is_sent(pod: ExecutorProcess, method: str, path: str,
                                                          status: int) -> None:
    """Headers announcing 300 MiB, and not one body byte: the answer comes anyway."""
    with socket.create_connection(("127.0.0.1", pod.port)) as sock:
        sock.sendall(_head(method, path, f"Content-Type: application/json\r\nContent-Length: {HUGE}\r\n\r\n"))
        got, body = _answer(sock)
    assert got == status, (got, body[:300])
    assert json.loads(body)["error"]["field"] in ("body", "Authorization")


@pytest.mark.parametrize("method,path,status", ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_an_endless_chunked_body_is_cut_at_the_route_limit(pod: ExecutorProcess, method: str, path: str,
                                                            status: int) -> None:
    """Chunked (no length to check up front): the server stops reading at the route's limit."""
    sent = 0
    with socket.create_connection(("127.0.0.1", pod.port)) as sock:
        sock.sendall(_head(method, path, "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"))
        chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
        sock.settimeout(0.05)
        got = None
        try:
            while sent < 64 * MIB:
                try:
                    sock.sendall(chunk)
                    sent += len(chunk)
                except socket.timeout:
                    pass
                try:
                    if sock.recv(1, socket.MSG_PEEK):
                        break
                except socket.timeout:
                    continue
            got, body = _answer(sock)
        except (ConnectionResetError, BrokenPipeError):
            pass  # cut off: the answer may be lost with the reset
    assert sent < 16 * MIB, f"the server read {sent} bytes of a refused chunked body"
    if got is not None:
        assert got == status, (got, body[:300])
    assert _spooled_bytes(pod) == 0


def test_refused_bodies_are_read_and_dropped_not_kept(pod: ExecutorProcess) -> None:
    """A refused body the client sends in full (as http.client does) is read, never stored: the
    client gets its 413, and the HTTP process neither spools nor grows."""
    rss_before = _rss(pod.pid)
    for _ in range(4):
        r = pod.request("POST", "/v1/claim", b"x" * (12 * MIB), {"Content-Type": "application/json"}, auth=False)
        assert r.status == 413 and json.loads(r.body)["error"]["field"] == "body"
        r = pod.request("PUT", "/v1/files/a.parquet", b"x" * (12 * MIB), auth=False)
        assert r.status == 401
    assert _spooled_bytes(pod) == 0
    assert _rss(pod.pid) - rss_before < 8 * MIB


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Attack:
    """Keeps ``n`` connections open to the pod, reopening those the server closes: ``idle``
    (connect, send nothing), ``slow`` (a header byte every 0.5 s) or ``flood`` (a large body
    sent as fast as the server takes it)."""

    def __init__(self, port: int, n: int, kind: str) -> None:
        self.port, self.n, self.kind = port, n, kind
        self.stop = threading.Event()
        self.reopened = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self) -> "Attack":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)

    def _open(self, sel: selectors.BaseSelector) -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", self.port))
        sel.register(sock, selectors.EVENT_READ, {"sent": 0})

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        for _ in range(self.n):
            self._open(sel)
        header = b"POST /v1/claim HTTP/1.1\r\nHost: pod\r\nContent-Type: application/json\r\nX-Pad: " + b"a" * 200
        flood_head = f"PUT /v1/files/f.parquet HTTP/1.1\r\nHost: pod\r\nContent-Length: {HUGE}\r\n\r\n".encode()
        last_drip = 0.0
        while not self.stop.is_set():
            for key, _mask in sel.select(0.05):
                sock = key.fileobj
                try:
                    if sock.recv(65536):  # type: ignore[union-attr]
                        continue
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    pass
                sel.unregister(sock)
                sock.close()  # type: ignore[union-attr]
                self.reopened += 1
                self._open(sel)
            now = time.monotonic()
            if self.kind == "slow" and now - last_drip >= 0.5:
                last_drip = now
                for key in list(sel.get_map().values()):
                    state = key.data
                    if state["sent"] < len(header):
                        try:
                            key.fileobj.send(header[state["sent"]:state["sent"] + 1])  # type: ignore[union-attr]
                            state["sent"] += 1
                        except OSError:
                            pass
            elif self.kind == "flood":
                for key in list(sel.get_map().values()):
                    state = key.data
                    try:
                        if state["sent"] == 0:
                            key.fileobj.send(flood_head)  # type: ignore[union-attr]
                            state["sent"] = 1
                        key.fileobj.send(b"x" * 65536)  # type: ignore[union-attr]
                    except OSError:
                        pass
        for key in list(sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]


def _probe_latencies(port: int, n: int) -> list[float]:
    """``n`` kubelet-style probes (a new connection each), alternating /health and /ready."""
    out = []
    for i in range(n):
        path = "/health" if i % 2 == 0 else "/ready"
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(_head("GET", path, "Connection: close\r\n\r\n"))
            status, _body = _answer(sock)
        out.append(time.perf_counter() - t0)
        assert status == 200, (path, status)
        time.sleep(0.02)
    return out


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def _measure(pod: ExecutorProcess, kind: str, n: int) -> tuple[list[float], list[float], Attack, int]:
    idle = _probe_latencies(pod.port, 60)
    with Attack(pod.port, n, kind) as attack:
        time.sleep(2.0)  # every connection open (and the budget applied) before measuring
        loaded = _probe_latencies(pod.port, 100)
        spooled = _spooled_bytes(pod)
    print(f"\n{kind} x{n}: idle p50 {_p(idle, 50) * 1000:.2f} ms p95 {_p(idle, 95) * 1000:.2f} ms; "
          f"under attack p50 {_p(loaded, 50) * 1000:.2f} ms p95 {_p(loaded, 95) * 1000:.2f} ms "
          f"max {max(loaded) * 1000:.2f} ms; connections reopened {attack.reopened}")
    return idle, loaded, attack, spooled


@pytest.mark.parametrize("kind,n", [("idle", 500), ("slow", 300), ("slow", 500)])
def test_probes_answer_within_50ms_under_idle_and_slow_connections(pod: ExecutorProcess, kind: str, n: int) -> None:
    idle, loaded, attack, spooled = _measure(pod, kind, n)
    # The bound, on top of what this loaded machine shows with no attack at all.
    assert _p(loaded, 95) <= PROBE_BOUND_S + _p(idle, 95), (_p(loaded, 95), _p(idle, 95))
    assert attack.reopened == 0  # within the connection budget nobody is evicted
    assert spooled == 0
    assert pod.request("GET", "/ready", auth=False).status == 200


def test_probes_keep_answering_under_a_flood_of_large_bodies(pod: ExecutorProcess) -> None:
    """40 connections sending 300 MiB bodies without the token, reconnecting as soon as each is
    refused: a connection-rate flood. Every probe answers 200 within the pod template's probe
    timeout (2 s) and nothing is spooled; the 50 ms bound is not claimed here (see SECURITY.md)."""
    _idle, loaded, attack, spooled = _measure(pod, "flood", 40)
    assert attack.reopened > 0  # each refused body closed its connection
    assert max(loaded) < 2.0, max(loaded)
    assert spooled == 0
    assert pod.request("GET", "/ready", auth=False).status == 200


def test_over_the_connection_budget_the_oldest_idle_connections_are_closed(pod: ExecutorProcess) -> None:
    """More idle connections than the budget (1,024): the listener keeps accepting, closes the
    oldest idle ones, and probes keep answering (the attacker reconnects each one it loses)."""
    _idle, loaded, attack, spooled = _measure(pod, "idle", 1100)
    assert attack.reopened > 0
    assert max(loaded) < 2.0, max(loaded)
    assert spooled == 0
