"""Forged answers of a compromised sandbox, and a loopback server that sends them.

Each answer is one class of forgery: inflated Parquet metadata, decompression bombs, nesting,
giant numbers, wrong types and ranges, truncated or endless bodies, huge headers, slow-loris.
:class:`HostileSandbox` answers every ``POST /v1/execute`` with the forgery named in the
code it was sent (``# case: <name>`` or ``case = "<name>"``), so one server serves a whole suite. The
server speaks raw HTTP over a socket: it can lie in ways ``http.server`` would not let it.
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
import threading
import time
from typing import Any, Callable, Iterator

from pod_sandbox import wire

Chunks = Iterator[bytes]
#: How the code names its forgery: ``# case: <name>`` or ``case = "<name>"``.
CASE_RE = re.compile(r"case(?:: |\s*=\s*['\"])(\w+)")


def response(result: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A well-formed execute response, with ``fields`` replaced."""
    body = {"status": "ok", "result": result or {"type": "number", "value": 1},
            "stdout": "", "stderr": "", "stdout_truncated": False, "stderr_truncated": False,
            "error": None, "duration_ms": 1.0, "peak_rss_bytes": 1 << 20, "request_id": None}
    body.update(fields)
    return body


def http_answer(body: bytes, *, status: str = "200 OK", headers: str = "") -> bytes:
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{headers}\r\n").encode() + body


def json_answer(obj: Any) -> Callable[[], Chunks]:
    data = http_answer(json.dumps(obj).encode())
    return lambda: iter([data])


def raw_json(text: str) -> Callable[[], Chunks]:
    data = http_answer(text.encode())
    return lambda: iter([data])


def frame_answer(parquet: bytes, rows: int = 0, cols: int = 1) -> Callable[[], Chunks]:
    value = {"encoding": "parquet+base64", "kind": "dataframe", "data": base64.b64encode(parquet).decode(),
             "columns": [], "dtypes": {}, "index_dtype": "int64", "shape": [rows, cols], "name": None}
    return json_answer(response({"type": "dataframe", "value": value}))


def png_header(width: int, height: int) -> bytes:
    """The start of a PNG whose IHDR declares ``width`` x ``height`` (no pixel data)."""
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + b"\x08\x06\x00\x00\x00"
    return wire.PNG_MAGIC + b"\x00\x00\x00\rIHDR" + ihdr + b"\x00" * 4 + b"\x00" * 64


# -- Parquet forgeries (pyarrow writes them; the metadata says what the bomb expands to) -------------


def parquet(table: Any, **kwargs: Any) -> bytes:
    import pyarrow.parquet as pq  # noqa: PLC0415

    buf = io.BytesIO()
    pq.write_table(table, buf, **kwargs)
    return buf.getvalue()


def rows_bomb(rows: int = 50_000_000) -> bytes:
    """Few KB declaring ``rows`` rows (all null): pandas would make ``rows`` Python objects."""
    import pyarrow as pa  # noqa: PLC0415

    return parquet(pa.table({"zeros": pa.nulls(rows)}))


def columns_bomb(columns: int = 20_000) -> bytes:
    import pyarrow as pa  # noqa: PLC0415

    return parquet(pa.table({f"c{i}": pa.array([0], pa.int8()) for i in range(columns)}))


def dictionary_bomb(rows: int = 5_000_000, value_bytes: int = 1 << 20) -> bytes:
    """One 1 MiB string, ``rows`` times by dictionary index, stored as a plain string column.

    Read normally it materialises rows x value_bytes (5 TB by default) of text.
    """
    import numpy as np  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415

    column = pa.DictionaryArray.from_arrays(pa.array(np.zeros(rows, dtype=np.int32)),
                                            pa.array(["x" * value_bytes]))
    return parquet(pa.table({"s": column}), store_schema=False)


def page_bomb(size: int, codec: str = "zstd") -> bytes:
    """One binary cell of ``size`` zero bytes in one page: a decompression bomb in ``codec``."""
    import pyarrow as pa  # noqa: PLC0415

    return parquet(pa.table({"b": pa.array([bytes(size)], pa.binary())}), compression=codec,
                   use_dictionary=False, data_page_size=size + 1)


def leaves_bomb(leaves: int = 60_000_000) -> bytes:
    """One row holding a list of ``leaves`` nulls: the row count is 1, the values are not."""
    import pyarrow as pa  # noqa: PLC0415

    column = pa.ListArray.from_arrays(pa.array([0, leaves], pa.int32()), pa.nulls(leaves))
    return parquet(pa.table({"l": column}))


def pandas_metadata_dtype(key: str = "column_indexes", dtype: str = "S1000000000", columns: int = 100) -> bytes:
    """Tiny data whose pandas metadata tells pandas to cast to a 1 GB-a-cell dtype."""
    import pyarrow as pa  # noqa: PLC0415

    table = pa.Table.from_pandas(__import__("pandas").DataFrame({f"c{i}": [0] for i in range(columns)}))
    meta = json.loads(table.schema.metadata[b"pandas"])
    meta[key][0].update(numpy_type=dtype, pandas_type="unicode")
    return parquet(table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()}))


def deep_type(depth: int = 20) -> bytes:
    import pyarrow as pa  # noqa: PLC0415

    value: Any = 1
    for _ in range(depth):
        value = [value]
    return parquet(pa.table({"deep": [value]}))


# -- The server ---------------------------------------------------------------------------------------


def dribble(prefix: bytes, byte: bytes, every_s: float, for_s: float) -> Callable[[], Chunks]:
    """``prefix``, then one ``byte`` every ``every_s`` for ``for_s`` seconds (slow-loris)."""

    def chunks() -> Chunks:
        yield prefix
        end = time.monotonic() + for_s
        while time.monotonic() < end:
            time.sleep(every_s)
            yield byte

    return chunks


def endless_chunked() -> Chunks:
    yield b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    block = b"[" * (1 << 20)
    while True:
        yield f"{len(block):x}\r\n".encode() + block + b"\r\n"


class HostileSandbox:
    """A loopback HTTP server answering each execute with the forgery its code names.

    The code sent names the case (:data:`CASE_RE`); ``cases`` maps names to answer generators (bytes
    chunks, written in turn until the client hangs up); the connection is closed after the cases
    in ``close_after`` (cut answers). Other paths answer 200 ``{}``.
    """

    def __init__(self, cases: dict[str, Callable[[], Chunks]], close_after: frozenset[str] = frozenset()) -> None:
        self.cases = cases
        self.close_after = close_after
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.sock.getsockname()[1]

    def __enter__(self) -> "HostileSandbox":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()
        self.sock.close()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            while True:
                request = reader.readline(65536)
                if not request:
                    return
                length = 0
                while (line := reader.readline(65536)) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                body = reader.read(length) if length else b""
                if not request.startswith(b"POST /v1/execute"):
                    conn.sendall(http_answer(b"{}"))
                    continue
                case = CASE_RE.search(json.loads(body)["code"]).group(1)  # type: ignore[union-attr]
                for chunk in self.cases[case]():
                    conn.sendall(chunk)
                if case in self.close_after:
                    return
        except (OSError, ValueError):
            return
        finally:
            reader.close()
            conn.close()
