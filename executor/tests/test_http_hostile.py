"""HTTP clients and user code against the HTTP process: planted workspace files, malformed
requests that must be 4xx (never 500), the token file."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from server_process import ExecutorProcess, HealthPoller

#: What user code can put under a name in the data directory, as the server's uid.
PLANTED = {
    "symlink_dev_zero": "os.symlink('/dev/zero', p)",
    "symlink_dev_urandom": "os.symlink('/dev/urandom', p)",
    "symlink_to_fifo": "os.mkfifo(p + '.fifo'); os.symlink(p + '.fifo', p)",
    "symlink_to_proc": "os.symlink('/proc/self/environ', p)",
    "fifo": "os.mkfifo(p)",
    "directory": "os.mkdir(p)",
    "hard_link": "open(p + '.src', 'w').write('a\\n1\\n'); os.link(p + '.src', p)",
    "unix_socket": "import socket\ns = socket.socket(socket.AF_UNIX)\ns.bind(p)",
}


def _raw(server: ExecutorProcess, data: bytes, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """Send raw bytes on a new connection; the status and body of the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout_s) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
            if b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), body


class Planting:
    """An execution that plants something in the data directory and holds it there for
    ``hold_s`` (after each execution the server removes what is not an upload, so a plant
    meets the server only while its execution runs)."""

    def __init__(self, server: ExecutorProcess, name: str, plant: str, hold_s: float = 4.0) -> None:
        self.server = server
        self.code = (f"import os, time\np = os.path.join(DATA_DIR, {name!r})\n{plant}\n"
                     f"open(os.path.join(DATA_DIR, 'planted.flag'), 'w').close()\ntime.sleep({hold_s})\n"
                     "result = {'type': 'string', 'value': 'planted'}")
        self.body: dict = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.body = self.server.run(self.code, timeout_s=30)

    def __enter__(self) -> "Planting":
        self.thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.thread.is_alive():
            if self.server.request("GET", "/v1/files/planted.flag").status == 200:
                return self
            time.sleep(0.05)
        self.thread.join(30)
        pytest.skip(f"user code could not plant: {self.body.get('error')}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.thread.join(40)


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_download_serves_regular_files_only(hostile_server: ExecutorProcess, kind: str) -> None:
    name = f"planted-{kind}.csv"
    with Planting(hostile_server, name, PLANTED[kind]) as planting, HealthPoller(hostile_server) as poller:
        t0 = time.monotonic()
        r = hostile_server.request("GET", f"/v1/files/{name}")
        took = time.monotonic() - t0
        assert r.status == 404, (r.status, r.body[:200])
        error = r.json()["error"]
        assert error["field"] == "name" and name in error["message"] and "no file named" not in error["message"]
        listed = [f["name"] for f in hostile_server.request("GET", "/v1/files").json()["files"]]
        assert name not in listed
    assert planting.body["status"] == "ok", planting.body
    assert not poller.failures and took < 5, (poller.failures, took)
    listed = [f["name"] for f in hostile_server.request("GET", "/v1/files").json()["files"]]
    assert not [n for n in listed if n.startswith("planted")], listed  # swept after the execution


BAD_BYTES = [
    ("non_utf8_authorization", b"GET /v1/info HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\x80\r\n\r\n", 401),
    ("non_utf8_authorization_scheme", b"GET /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: \xc3\x28 x\r\n\r\n", 401),
    ("non_utf8_content_type", b"POST /v1/claim HTTP/1.1\r\nHost: x\r\nContent-Type: application/\xff\r\n"
                              b"Content-Length: 2\r\n\r\n{}", 415),
    ("non_utf8_path", b"GET /v1/files/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n", None),
    ("non_utf8_percent_path", b"GET /v1/files/%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n", None),
    ("trailing_newline_name", b"PUT /v1/files/a.csv%0A HTTP/1.1\r\nHost: x\r\nAUTH\r\nContent-Length: 1\r\n\r\nx", 400),
    ("trailing_crlf_name", b"PUT /v1/files/a.csv%0D%0A HTTP/1.1\r\nHost: x\r\nAUTH\r\nContent-Length: 1\r\n\r\nx", 400),
]


@pytest.mark.parametrize("data,status", [b[1:] for b in BAD_BYTES], ids=[b[0] for b in BAD_BYTES])
def test_malformed_requests_are_4xx_not_500(hostile_server: ExecutorProcess, data: bytes, status: int | None) -> None:
    data = data.replace(b"AUTH", f"Authorization: Bearer {hostile_server.token}".encode())
    got, body = _raw(hostile_server, data)
    if status is None:
        assert 400 <= got < 500, (got, body[:300])
    else:
        assert got == status, (got, body[:300])
    assert b"internal error" not in body


@pytest.mark.parametrize("where", ["timeout_s", "max_output_bytes", "code_list", "datasets_value", "request_id"])
def test_huge_json_integers_are_400(hostile_server: ExecutorProcess, where: str) -> None:
    big = "9" * 5000
    bodies = {
        "timeout_s": f'{{"code": "x = 1", "timeout_s": {big}}}',
        "max_output_bytes": f'{{"code": "x = 1", "max_output_bytes": -{big}}}',
        "code_list": f'{{"code": [{big}]}}',
        "datasets_value": f'{{"code": "x = 1", "datasets": {{"q": {big}}}}}',
        "request_id": f'{{"code": "x = 1", "request_id": {big}}}',
    }
    r = hostile_server.request("POST", "/v1/execute", bodies[where], {"Content-Type": "application/json"})
    assert r.status == 400, (r.status, r.body[:300])
    assert r.json()["error"]["field"] == "body"


def test_no_500_in_the_server_log_after_the_malformed_requests(hostile_server: ExecutorProcess) -> None:
    for _name, data, _status in BAD_BYTES:
        _raw(hostile_server, data.replace(b"AUTH", f"Authorization: Bearer {hostile_server.token}".encode()))
    assert "internal error" not in hostile_server.log()
    assert json.loads(hostile_server.request("GET", "/health").body) == {"status": "ok"}
    names = [f["name"] for f in hostile_server.request("GET", "/v1/files").json()["files"]]
    assert not [n for n in names if not n.isprintable()], names


#: What user code can do to a dataset the zygote has cached, before the next execution asks for it.
OVER_A_CACHED_DATASET = {
    "parquet_bomb_written_over": "open(p, 'wb').write(open(os.path.join(DATA_DIR, 'bomb.bin'), 'rb').read())",
    "fifo_over": "os.unlink(p)\nos.mkfifo(p)",
    "dev_zero_symlink_over": "os.unlink(p)\nos.symlink('/dev/zero', p)",
    "directory_over": "os.unlink(p)\nos.mkdir(p)",
    "hard_link_over": "os.unlink(p)\nos.link(os.path.join(DATA_DIR, 'bomb.bin'), p)",
}
PPID = "import os\nresult = {'type': 'number', 'value': os.getppid()}"


@pytest.fixture(scope="module")
def bomb_bytes(tmp_path_factory) -> bytes:
    from test_datacache_hostile import write_parquet_bomb

    path = str(tmp_path_factory.mktemp("bomb") / "bomb.parquet")
    write_parquet_bomb(path)
    with open(path, "rb") as fh:
        return fh.read()


def _small_parquet() -> bytes:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.table({"a": list(range(100))}), out)
    return out.getvalue()


@pytest.mark.parametrize("attack,name", [(a, "d.parquet") for a in sorted(OVER_A_CACHED_DATASET)]
                         + [("fifo_over", "d.csv"), ("dev_zero_symlink_over", "d.csv")])
def test_the_zygote_survives_whatever_replaces_a_cached_dataset(hostile_server: ExecutorProcess, bomb_bytes: bytes,
                                                                attack: str, name: str) -> None:
    server = hostile_server
    assert server.request("PUT", "/v1/files/bomb.bin", bomb_bytes).status == 201
    content = _small_parquet() if name.endswith(".parquet") else b"a\n" + b"1\n" * 100
    assert server.request("PUT", f"/v1/files/{name}", content).status == 201
    staged = {"datasets": {"q": name}}
    first = server.run("df = execute_sql_query('q')\n" + PPID, **staged)
    assert first["status"] == "ok", first
    zygote = first["result"]["value"]
    with Planting(server, name, OVER_A_CACHED_DATASET[attack]) as planting, HealthPoller(server) as poller:
        t0 = time.monotonic()
        # While the plant is there, the fork-server sees the changed file and asks the zygote
        # to reload it for this execution.
        during = server.run(PPID, timeout_s=10, **staged)
        took = time.monotonic() - t0
    after = server.run(PPID, timeout_s=10, **staged)
    print(f"\n{attack}: the execution beside the plant answered in {took * 1000:.0f} ms")
    assert planting.body["status"] == "ok", planting.body
    assert during["status"] == "ok" and after["status"] == "ok", (during, after)
    assert during["result"]["value"] == zygote == after["result"]["value"]  # the same zygote, alive
    assert took < 15, took
    assert not poller.failures, poller.failures
    assert server.request("GET", "/ready").status == 200
    for n in (name, "bomb.bin"):
        server.request("DELETE", f"/v1/files/{n}")


LEFTOVERS = {
    "20k_empty_files": "for i in range(20000):\n    open(os.path.join(DATA_DIR, f'junk{i}'), 'w').close()",
    "20k_symlinks": "for i in range(20000):\n    os.symlink('/dev/zero', os.path.join(DATA_DIR, f'link{i}'))",
    "a_directory_of_20k_files": "d = os.path.join(DATA_DIR, 'deep')\nos.mkdir(d)\n"
                                "for i in range(20000):\n    open(os.path.join(d, str(i)), 'w').close()",
}
TRIVIAL = "result = {'type': 'number', 'value': 1}"


def _p50_execution_s(server: ExecutorProcess, n: int = 9) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert server.run(TRIVIAL)["status"] == "ok"
        times.append(time.perf_counter() - t0)
    return sorted(times)[n // 2]


@pytest.mark.parametrize("kind", sorted(LEFTOVERS))
def test_what_an_execution_leaves_in_the_data_dir_costs_the_next_nothing(hostile_server: ExecutorProcess,
                                                                       kind: str) -> None:
    server = hostile_server
    assert server.request("PUT", "/v1/files/kept.csv", b"a\n1\n").status == 201
    before = _p50_execution_s(server)
    body = server.run(f"import os\n{LEFTOVERS[kind]}\nresult = {{'type': 'number', 'value': 1}}", timeout_s=120)
    assert body["status"] == "ok", body
    after = _p50_execution_s(server)
    listed = [f["name"] for f in server.request("GET", "/v1/files").json()["files"]]
    seen = server.run("import os\nresult = {'type': 'number', 'value': len(os.listdir(DATA_DIR))}")
    print(f"\n{kind}: trivial execution p50 {before * 1000:.1f} ms before, {after * 1000:.1f} ms after")
    assert after <= 2 * before + 0.010, (before, after)  # with the leftovers kept: ~15x (issue 15)
    assert listed == ["kept.csv"] and seen["result"]["value"] == 1
    server.request("DELETE", "/v1/files/kept.csv")
