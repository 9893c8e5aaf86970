"""HTTP clients and user code against the HTTP process: planted workspace files, malformed
requests that must be 4xx (never 500), the token file."""

from __future__ import annotations

import json
import socket
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


@pytest.mark.parametrize("kind", sorted(PLANTED))
def test_download_serves_regular_files_only(hostile_server: ExecutorProcess, kind: str) -> None:
    name = f"planted-{kind}.csv"
    code = (f"import os\np = os.path.join(DATA_DIR, {name!r})\n"
            f"try:\n    os.unlink(p)\nexcept FileNotFoundError:\n    pass\n{PLANTED[kind]}\n"
            "result = {'type': 'string', 'value': 'planted'}")
    body = hostile_server.run(code)
    if body["status"] != "ok":
        pytest.skip(f"user code cannot plant a {kind} here: {body['error']['message']}")
    with HealthPoller(hostile_server) as poller:
        t0 = time.monotonic()
        r = hostile_server.request("GET", f"/v1/files/{name}")
        took = time.monotonic() - t0
        assert r.status == 404, (r.status, r.body[:200])
        error = r.json()["error"]
        assert error["field"] == "name" and name in error["message"]
        listed = [f["name"] for f in hostile_server.request("GET", "/v1/files").json()["files"]]
        assert name not in listed
    assert not poller.failures and took < 5, (poller.failures, took)
    cleanup = ("import os, shutil\nfor n in os.listdir(DATA_DIR):\n    if n.startswith('planted-'):\n"
               "        p = os.path.join(DATA_DIR, n)\n"
               "        shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.unlink(p)")
    assert hostile_server.run(cleanup)["status"] == "ok"


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
    planted = server.run(f"import os\np = os.path.join(DATA_DIR, {name!r})\n{OVER_A_CACHED_DATASET[attack]}")
    assert planted["status"] == "ok", planted
    with HealthPoller(server) as poller:
        t0 = time.monotonic()
        # The fork-server sees the changed file and asks the zygote to reload it.
        after = server.run(PPID, timeout_s=10, **staged)
        took = time.monotonic() - t0
        again = server.run(PPID, timeout_s=10, **staged)
    print(f"\n{attack}: the execution after the attack answered in {took * 1000:.0f} ms")
    assert after["status"] == "ok" and again["status"] == "ok", (after, again)
    assert after["result"]["value"] == zygote == again["result"]["value"]  # the same zygote, alive
    assert took < 15, took
    assert not poller.failures, poller.failures
    assert server.request("GET", "/ready").status == 200
    cleanup = ("import os, shutil\nfor n in ('d.parquet', 'd.csv', 'bomb.bin'):\n    p = os.path.join(DATA_DIR, n)\n"
               "    if os.path.isdir(p) and not os.path.islink(p):\n        shutil.rmtree(p)\n"
               "    elif os.path.lexists(p):\n        os.unlink(p)")
    assert server.run(cleanup)["status"] == "ok"
