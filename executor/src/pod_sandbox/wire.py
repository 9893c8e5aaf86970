"""Wire format shared by the executor server and its client: requests, responses, results.

Importable with the standard library alone; pandas/pyarrow/matplotlib are imported lazily, only
by the functions that encode or decode DataFrames and plots.

Execute request (``POST /v1/execute``, JSON object)::

    {"code": str,                       # required, UTF-8 size <= max_code_bytes
     "timeout_s": number,               # optional, 0 < t <= max_timeout_s
     "max_output_bytes": int,           # optional, 0 <= n <= max_output_bytes (per stream)
     "datasets": {str: file_name},      # optional, e.g. {"SELECT * FROM sales": "q1.parquet"}
     "request_id": str}                 # optional, <= 128 chars, echoed back

Execute response (always HTTP 200 once the code ran, whatever the code did)::

    {"status": "ok"|"error"|"timeout"|"memory"|"killed",
     "result": {"type": "number"|"string"|"dataframe"|"plot"|"none", "value": ...},
     "stdout": str, "stderr": str, "stdout_truncated": bool, "stderr_truncated": bool,
     "error": {"type": str, "message": str, "traceback": str, "query"?: str} | null,
     "duration_ms": number, "peak_rss_bytes": int, "request_id": str | null}

``error.query`` is set only for ``MissingDatasetError``: the whole SQL text the code passed to
``execute_sql_query`` with no dataset staged for it (the message cuts it at 500 characters), so a
client can stage it and run the code again.

Result values:

* ``number``: a JSON number; the non-finite floats are the strings ``"NaN"``, ``"Infinity"``,
  ``"-Infinity"`` (JSON has no literal for them); :func:`decode_result` turns them back to floats.
* ``string``: a JSON string.
* ``plot``: ``"data:image/png;base64,<PNG>"`` (PandasAI's ChartResponse accepts it verbatim).
* ``none``: ``null`` (the code assigned no ``result``, or ``result = None``).
* ``dataframe``: an object describing a pandas DataFrame or Series::

      {"encoding": "parquet+base64",    # or "json-split" (fallback, see below)
       "kind": "dataframe" | "series",
       "data": "<base64 of a Parquet file written by pyarrow>",
       "columns": [str, ...],           # column labels as text, in order
       "dtypes": {column: dtype-name},  # e.g. {"price": "float64", "day": "datetime64[ns]"}
       "index_dtype": str,
       "shape": [rows, columns],
       "name": str | null}              # the Series name when kind == "series"

  ``parquet+base64`` is the normal encoding: pyarrow stores pandas' own metadata in the file, so
  column dtypes (datetimes with time zone, categoricals, nullable integers, strings) and the
  index survive the trip exactly. A Series travels as a one-column frame (column = its name, or
  ``"0"``) and comes back as a Series. When pyarrow cannot write a frame (mixed-type object
  columns, non-text column labels that collide, ...) the encoder falls back to ``json-split``:
  ``data`` is then ``DataFrame.to_json(orient="split", date_format="iso")`` parsed into an
  object, and the decoder restores each column with ``astype(dtypes[col])`` where that works.
  :func:`decode_dataframe` reverses both.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .limits import DEFAULT_LIMITS, AnswerLimits, LimitExceeded

API_VERSION = "1"
STATUSES = ("ok", "error", "timeout", "memory", "killed")
RESULT_TYPES = ("number", "string", "dataframe", "plot", "none")
#: A ``number`` result's ``number_type``: the value's class, so the client answers what the code
#: left (``numpy.float64`` from ``df.mean()``, as locally), not what JSON makes of it.
NUMBER_TYPES = ("builtins.int", "builtins.float", "builtins.bool",
                *(f"numpy.{name}" for name in ("int8", "int16", "int32", "int64", "uint8", "uint16",
                                               "uint32", "uint64", "float16", "float32", "float64",
                                               "bool")))
DATAFRAME_ENCODINGS = ("parquet+base64", "json-split")
PNG_DATA_URI_PREFIX = "data:image/png;base64,"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: Names accepted for uploaded files: no path separators, no leading dot, at most 128 chars.
FILE_NAME_RE = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9._-]{0,127}\Z")  # \Z: "$" also matches before a final newline
TOKEN_RE = re.compile(r"\A[A-Za-z0-9_-]{32,256}\Z")
REQUEST_ID_MAX = 128
EXECUTE_FIELDS = ("code", "timeout_s", "max_output_bytes", "datasets", "request_id", "sql_callback",
                  "query_timeout_s")
#: The non-final execute answer of SQL by call-back: the code waits for a query's result.
QUERY_STATUS = "query"
#: What ``GET /v1/info`` lists in ``features`` when the executor answers SQL by call-back.
SQL_CALLBACK_FEATURE = "sql-callback"
EXECUTION_ID_RE = re.compile(r"^e-[0-9a-f]{32}$")


class WireError(ValueError):
    """A request or response that breaks the wire format; ``field`` names the culprit."""

    def __init__(self, field_name: str, message: str, http_status: int = 400) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message
        self.http_status = http_status

    def to_json(self) -> dict[str, Any]:
        """The JSON error body the server answers with."""
        return {"error": {"field": self.field, "message": self.message}}


class ResultError(ValueError):
    """User code assigned a ``result`` that cannot be sent back (wrong shape, type or too large)."""


# ----------------------------------------------------------------------------------------------
# Requests


def validate_file_name(name: Any, field_name: str = "name") -> str:
    """Return ``name`` if it is a safe workspace file name, else raise :class:`WireError`."""
    if not isinstance(name, str):
        raise WireError(field_name, "must be a string")
    if name in (".", "..") or not FILE_NAME_RE.match(name):
        raise WireError(
            field_name,
            "must match [A-Za-z0-9_][A-Za-z0-9._-]{0,127} (no path separators, no hidden files)",
        )
    return name


def validate_token(token: Any) -> str:
    """Return ``token`` if it is 32-256 URL-safe characters, else raise :class:`WireError`."""
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        raise WireError("token", "must be 32 to 256 URL-safe characters [A-Za-z0-9_-]")
    return token


@dataclass(frozen=True)
class ExecuteRequest:
    """A validated ``POST /v1/execute`` body."""

    code: str
    timeout_s: float
    max_output_bytes: int
    datasets: dict[str, str] = field(default_factory=dict)
    request_id: str | None = None
    #: ``execute_sql_query`` of a query not in ``datasets`` asks the client (status ``query``).
    sql_callback: bool = False
    #: How long one query may wait for its answer (None: the executor's default).
    query_timeout_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The request as the JSON object a client sends."""
        body: dict[str, Any] = {
            "code": self.code,
            "timeout_s": self.timeout_s,
            "max_output_bytes": self.max_output_bytes,
        }
        if self.datasets:
            body["datasets"] = dict(self.datasets)
        if self.request_id is not None:
            body["request_id"] = self.request_id
        if self.sql_callback:
            body["sql_callback"] = True
        if self.query_timeout_s is not None:
            body["query_timeout_s"] = self.query_timeout_s
        return body


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_execute_request(
    body: Any,
    *,
    max_code_bytes: int,
    max_timeout_s: float,
    default_timeout_s: float,
    max_output_bytes: int,
    max_datasets: int = 256,
    default_query_timeout_s: float = 60.0,
    max_query_timeout_s: float = 300.0,
) -> ExecuteRequest:
    """Validate a decoded JSON body against the limits; raise :class:`WireError` naming the field."""
    if not isinstance(body, dict):
        raise WireError("body", "must be a JSON object")
    unknown = sorted(set(body) - set(EXECUTE_FIELDS))
    if unknown:
        raise WireError(unknown[0], f"unknown field (allowed: {', '.join(EXECUTE_FIELDS)})")
    code = body.get("code")
    if not isinstance(code, str):
        raise WireError("code", "required, must be a string")
    try:
        size = len(code.encode("utf-8"))
    except UnicodeEncodeError:
        raise WireError("code", "must be valid UTF-8 text (lone surrogates found)") from None
    if size > max_code_bytes:
        raise WireError("code", f"{size} bytes exceeds max_code_bytes={max_code_bytes}", 413)
    timeout_s = body.get("timeout_s", default_timeout_s)
    if not _is_number(timeout_s) or not math.isfinite(timeout_s) or timeout_s <= 0:
        raise WireError("timeout_s", "must be a positive number")
    if timeout_s > max_timeout_s:
        raise WireError("timeout_s", f"must be at most max_timeout_s={max_timeout_s}")
    out = body.get("max_output_bytes", max_output_bytes)
    if not isinstance(out, int) or isinstance(out, bool) or out < 0:
        raise WireError("max_output_bytes", "must be a non-negative integer")
    if out > max_output_bytes:
        raise WireError("max_output_bytes", f"must be at most {max_output_bytes}")
    datasets = body.get("datasets", {})
    if not isinstance(datasets, dict):
        raise WireError("datasets", "must be an object mapping a query or key to a file name")
    if len(datasets) > max_datasets:
        raise WireError("datasets", f"at most {max_datasets} entries")
    for key, name in datasets.items():
        if not isinstance(key, str) or not key or len(key) > 65536:
            raise WireError("datasets", "keys must be non-empty strings of at most 65536 chars")
        validate_file_name(name, "datasets")
    request_id = body.get("request_id")
    if request_id is not None and (
        not isinstance(request_id, str) or len(request_id) > REQUEST_ID_MAX
    ):
        raise WireError("request_id", f"must be a string of at most {REQUEST_ID_MAX} chars")
    sql_callback = body.get("sql_callback", False)
    if not isinstance(sql_callback, bool):
        raise WireError("sql_callback", "must be a boolean")
    query_timeout_s = body.get("query_timeout_s", default_query_timeout_s)
    if not _is_number(query_timeout_s) or not math.isfinite(query_timeout_s) or query_timeout_s <= 0:
        raise WireError("query_timeout_s", "must be a positive number")
    if query_timeout_s > max_query_timeout_s:
        raise WireError("query_timeout_s", f"must be at most max_query_timeout_s={max_query_timeout_s}")
    return ExecuteRequest(
        code=code,
        timeout_s=float(timeout_s),
        max_output_bytes=out,
        datasets=dict(datasets),
        request_id=request_id,
        sql_callback=sql_callback,
        query_timeout_s=float(query_timeout_s),
    )


# ----------------------------------------------------------------------------------------------
# Results (encoded inside the sandbox child, decoded by the client)


def encode_number(value: Any) -> int | float | str:
    """A JSON-safe number: ints stay ints, non-finite floats become "NaN"/"Infinity"/"-Infinity"."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        import numpy as np  # noqa: PLC0415 - optional

        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.bool_):
            return int(bool(value))
    except ImportError:  # pragma: no cover - numpy is always there in the sandbox
        pass
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ResultError(f"type 'number' needs an int or float, got {type(value).__name__}") from None
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    return number


def number_type(value: Any) -> str | None:
    """The ``number_type`` of a number result's value (None: a class outside :data:`NUMBER_TYPES`)."""
    kind = type(value)
    if kind in (bool, int, float):
        return f"builtins.{kind.__name__}"
    module = getattr(kind, "__module__", "")
    if module == "numpy":
        import numpy as np  # noqa: PLC0415 - numpy's own scalar: numpy is there

        name = f"numpy.{np.dtype(kind).name}"
        return name if name in NUMBER_TYPES and np.dtype(kind).type is kind else None
    return None


def _typed_number(value: int | float, kind: str | None) -> Any:
    """A decoded number as the class the code left it (``number_type``), else as JSON has it."""
    if kind is None or kind == "builtins.int" and isinstance(value, int):
        return value
    if kind == "builtins.float":
        return float(value)
    if kind == "builtins.bool":
        return bool(value)
    if kind == "builtins.int":
        return int(value) if math.isfinite(value) else value
    import numpy as np  # noqa: PLC0415 - a numpy type was sent: the client has numpy (pandas needs it)

    return np.dtype(kind.split(".", 1)[1]).type(value)


def _decode_number(value: Any) -> int | float:
    if isinstance(value, str):
        special = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
        if value not in special:
            raise WireError("result.value", f"not a number: {value[:40]!r}")
        return special[value]
    if not _is_number(value):
        raise WireError("result.value", "a number result needs a JSON number")
    return value


def encode_dataframe(obj: Any) -> dict[str, Any]:
    """Encode a DataFrame, Series or dict-of-columns as the ``dataframe`` result value."""
    import pandas as pd  # noqa: PLC0415 - lazy

    kind = "dataframe"
    name = None
    if isinstance(obj, pd.Series):
        kind = "series"
        name = None if obj.name is None else str(obj.name)
        frame = obj.to_frame(name="0" if obj.name is None else str(obj.name))
    elif isinstance(obj, pd.DataFrame):
        frame = obj
    elif isinstance(obj, dict):
        try:
            frame = pd.DataFrame(obj)
        except Exception as exc:  # noqa: BLE001 - pandas raises many kinds
            raise ResultError(f"type 'dataframe' dict cannot become a DataFrame: {exc}") from None
    else:
        raise ResultError(
            f"type 'dataframe' needs a pandas DataFrame, Series or dict, got {type(obj).__name__}"
        )
    meta = {
        "kind": kind,
        "columns": [str(c) for c in frame.columns],
        "dtypes": {str(c): str(t) for c, t in frame.dtypes.items()},
        "index_dtype": str(frame.index.dtype),
        "shape": [int(frame.shape[0]), int(frame.shape[1])],
        "name": name,
    }
    try:
        buf = io.BytesIO()
        frame.to_parquet(buf, engine="pyarrow", compression="zstd")
        return {"encoding": "parquet+base64", "data": base64.b64encode(buf.getvalue()).decode(), **meta}
    except Exception:  # noqa: BLE001 - pyarrow refuses some frames; fall back to JSON
        text = frame.to_json(orient="split", date_format="iso", default_handler=str)
        return {"encoding": "json-split", "data": json.loads(text), **meta}


def decode_dataframe(value: Mapping[str, Any], limits: AnswerLimits = DEFAULT_LIMITS) -> Any:
    """Turn a ``dataframe`` result value back into a pandas DataFrame or Series, within ``limits``.

    Sizes, counts and types are checked from the Parquet metadata and page headers (or the JSON
    already parsed within the limits) before anything is allocated for the data; a value that
    breaks a limit raises :class:`~pod_sandbox.limits.LimitExceeded` naming it.
    """
    if not isinstance(value, Mapping):
        raise WireError("result.value", "a dataframe result needs an object")
    encoding = value.get("encoding")
    if encoding == "parquet+base64":
        from .parquet_guard import read_frame  # noqa: PLC0415 - lazy (pyarrow)

        frame = read_frame(_b64decode(value.get("data"), "result.value.data", limits), limits)
    elif encoding == "json-split":
        frame = _json_split_frame(value, limits)
    else:
        raise WireError("result.value.encoding", f"unknown encoding {encoding!r:.40}")
    shape = value.get("shape")
    if isinstance(shape, list) and shape and shape[0] != len(frame):
        raise WireError("result.value.shape", f"declares {shape[0]!r:.40} rows, the data has {len(frame)}")
    if value.get("kind") == "series":
        if frame.shape[1] < 1:
            raise WireError("result.value.kind", "a series needs one column")
        series = frame.iloc[:, 0]
        name = value.get("name")
        series.name = name if name is None or isinstance(name, str) else str(name)[:200]
        return series
    return frame


def _b64decode(data: Any, field_name: str, limits: AnswerLimits) -> bytes:
    """Base64 text to bytes, its length bounded before decoding."""
    if not isinstance(data, str):
        raise WireError(field_name, "must be base64 text")
    if len(data) > limits.max_base64_chars:
        raise LimitExceeded(field_name, f"{len(data)} base64 characters, at most {limits.max_base64_chars}",
                            "max_base64_chars")
    try:
        return base64.b64decode(data, validate=True)
    except (ValueError, TypeError) as exc:
        raise WireError(field_name, f"invalid base64 ({exc})") from None


def _json_split_frame(value: Mapping[str, Any], limits: AnswerLimits) -> Any:
    import pandas as pd  # noqa: PLC0415 - lazy

    data = value.get("data")
    if not isinstance(data, Mapping):
        raise WireError("result.value.data", "must be an object (orient=split)")
    rows, columns, index = data.get("data", []), data.get("columns"), data.get("index")
    for name, part in (("data", rows), ("columns", columns), ("index", index)):
        if part is not None and not isinstance(part, list):
            raise WireError(f"result.value.data.{name}", "must be a list")
    width = len(columns) if columns is not None else max((len(r) for r in rows if isinstance(r, list)), default=0)
    for n, limit in ((len(rows), "max_rows"), (width, "max_columns"), (len(rows) * width, "max_cells")):
        if n > getattr(limits, limit):
            raise LimitExceeded("result.value.data", f"{n} declared, at most {getattr(limits, limit)}", limit)
    if any(not isinstance(r, list) or len(r) != width for r in rows):
        raise WireError("result.value.data.data", f"every row must be a list of {width} values")
    if index is not None and len(index) != len(rows):
        raise WireError("result.value.data.index", f"{len(index)} labels for {len(rows)} rows")
    try:
        frame = pd.DataFrame(rows, index=index, columns=columns)
    except (TypeError, ValueError) as exc:
        raise WireError("result.value.data", f"not a frame: {exc}") from None
    dtypes = value.get("dtypes") or {}
    if not isinstance(dtypes, Mapping):
        raise WireError("result.value.dtypes", "must be an object")
    for col, dtype in dtypes.items():
        if col in frame.columns and small_cell_dtype(dtype):
            try:
                frame[col] = frame[col].astype(dtype)
            except (TypeError, ValueError):
                pass
    return frame


def small_cell_dtype(name: Any) -> bool:
    """True for a dtype name whose cells cost at most 16 bytes (no ``S1000000000``-style bombs)."""
    import numpy as np  # noqa: PLC0415
    from pandas.api.types import pandas_dtype  # noqa: PLC0415

    if not isinstance(name, str) or len(name) > 100:
        return False
    try:
        dtype = pandas_dtype(name)
    except (TypeError, ValueError):
        return False
    return not isinstance(dtype, np.dtype) or (dtype.kind not in "SUV" and dtype.itemsize <= 16)


def check_png(data_uri: str, limits: AnswerLimits = DEFAULT_LIMITS) -> None:
    """Check a plot result's PNG from its IHDR header (no pixel decoded); raise :class:`WireError`."""
    field_name = "result.value"
    text = data_uri[len(PNG_DATA_URI_PREFIX):]
    if len(text) > limits.max_base64_chars:
        raise LimitExceeded(field_name, f"{len(text)} base64 characters, at most {limits.max_base64_chars}",
                            "max_base64_chars")
    try:
        head = base64.b64decode(text[:44], validate=True)  # 33 bytes: magic + the IHDR chunk
    except (ValueError, TypeError):
        raise WireError(field_name, "invalid base64") from None
    if len(head) < 33 or not head.startswith(PNG_MAGIC) or head[8:16] != b"\x00\x00\x00\rIHDR":
        raise WireError(field_name, "not a PNG (no signature and IHDR header)")
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    for side, what in ((width, "width"), (height, "height")):
        if not 0 < side <= limits.max_plot_side:
            raise LimitExceeded(field_name, f"PNG {what} {side} px, at most {limits.max_plot_side}", "max_plot_side")
    if width * height > limits.max_plot_pixels:
        raise LimitExceeded(field_name, f"PNG of {width}x{height} px, at most {limits.max_plot_pixels} pixels",
                            "max_plot_pixels")


def encode_plot(value: Any, *, cwd: str | None = None) -> str:
    """A ``data:image/png;base64,...`` URI from a PNG path, a data URI, a Figure or the open figure."""
    import os  # noqa: PLC0415

    if isinstance(value, str) and value.startswith("data:image"):
        return value
    png: bytes | None = None
    if isinstance(value, str) and value:
        path = value if os.path.isabs(value) or cwd is None else os.path.join(cwd, value)
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                png = fh.read()
            if not png.startswith(PNG_MAGIC):
                raise ResultError(f"plot file {value!r} is not a PNG")
    if png is None:
        png = _figure_png(value)
    return PNG_DATA_URI_PREFIX + base64.b64encode(png).decode()


def _figure_png(value: Any) -> bytes:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = value if isinstance(value, Figure) else None
    if fig is None and plt.get_fignums():
        fig = plt.gcf()
    if fig is None:
        raise ResultError(
            f"type 'plot' needs a PNG path that exists, a data URI or an open figure; got {value!r:.80}"
        )
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def encode_result(result: Any, *, cwd: str | None = None) -> dict[str, Any]:
    """Encode PandasAI's ``result = {"type": ..., "value": ...}`` for the wire.

    ``None`` (no result assigned) becomes ``{"type": "none", "value": None}``. Raises
    :class:`ResultError` when the shape or the value does not fit the declared type.
    """
    if result is None:
        return {"type": "none", "value": None}
    if not isinstance(result, dict) or "type" not in result or "value" not in result:
        raise ResultError('result must be a dict {"type": ..., "value": ...}')
    rtype = result["type"]
    value = result["value"]
    if rtype == "number":
        encoded: dict[str, Any] = {"type": "number", "value": encode_number(value)}
        kind = number_type(value)
        if kind is not None:
            encoded["number_type"] = kind
        return encoded
    if rtype == "string":
        if not isinstance(value, str):
            raise ResultError(f"type 'string' needs a str, got {type(value).__name__}")
        return {"type": "string", "value": value}
    if rtype == "dataframe":
        return {"type": "dataframe", "value": encode_dataframe(value)}
    if rtype == "plot":
        return {"type": "plot", "value": encode_plot(value, cwd=cwd)}
    if rtype == "none":
        return {"type": "none", "value": None}
    raise ResultError(f"result type {rtype!r:.40} is not one of {', '.join(RESULT_TYPES)}")


def validate_result(obj: Any) -> dict[str, Any]:
    """Check a result object's shape (not its DataFrame payload); raise :class:`WireError`."""
    if not isinstance(obj, dict) or set(obj) - {"number_type"} != {"type", "value"}:
        raise WireError("result", 'must be an object with exactly "type" and "value" (and a number\'s "number_type")')
    rtype = obj["type"]
    value = obj["value"]
    if "number_type" in obj and (rtype != "number" or obj["number_type"] not in NUMBER_TYPES):
        raise WireError("result.number_type", f"only for a number, one of {', '.join(NUMBER_TYPES)}")
    if rtype not in RESULT_TYPES:
        raise WireError("result.type", f"must be one of {', '.join(RESULT_TYPES)}")
    if rtype == "number":
        _decode_number(value)
    elif rtype == "string" and not isinstance(value, str):
        raise WireError("result.value", "a string result needs a JSON string")
    elif rtype == "plot" and not (isinstance(value, str) and value.startswith(PNG_DATA_URI_PREFIX)):
        raise WireError("result.value", "a plot result needs a data:image/png;base64 URI")
    elif rtype == "none" and value is not None:
        raise WireError("result.value", "a none result needs null")
    elif rtype == "dataframe":
        if not isinstance(value, dict) or value.get("encoding") not in DATAFRAME_ENCODINGS:
            raise WireError("result.value.encoding", f"must be one of {DATAFRAME_ENCODINGS}")
        if value.get("kind") not in ("dataframe", "series"):
            raise WireError("result.value.kind", "must be dataframe or series")
    return obj


def decode_result(obj: Mapping[str, Any], limits: AnswerLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Turn a wire result into PandasAI's ``{"type": ..., "value": ...}`` with live objects.

    The result is untrusted (it comes from the sandbox): every payload is bounded by ``limits``
    before it is decoded; :class:`~pod_sandbox.limits.LimitExceeded` names the field and limit.
    """
    if not isinstance(obj, Mapping):
        raise WireError("result", 'must be an object with exactly "type" and "value"')
    validate_result(dict(obj))
    rtype = obj["type"]
    value = obj["value"]
    if rtype == "number":
        return {"type": "number", "value": _typed_number(_decode_number(value), obj.get("number_type"))}
    if rtype == "dataframe":
        return {"type": "dataframe", "value": decode_dataframe(value, limits)}
    if rtype == "plot":
        check_png(value, limits)
    return {"type": rtype, "value": value}


# ----------------------------------------------------------------------------------------------
# Answers from the sandbox: JSON parsed within limits


def loads(data: bytes, limits: AnswerLimits = DEFAULT_LIMITS, field_name: str = "response") -> Any:
    """Parse an answer's JSON body, bounded before and while parsing.

    Size and the number of scalars (commas and colons, counted without parsing) are checked
    first; numbers are refused past ``max_number_digits`` digits or when not finite (``NaN``,
    ``Infinity``, ``1e999``); nesting past ``max_json_depth`` is refused.
    """
    if len(data) > limits.max_response_bytes:
        raise LimitExceeded(field_name, f"{len(data)} bytes, at most {limits.max_response_bytes}",
                            "max_response_bytes")
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    values = raw.count(b",") + raw.count(b":") + 1
    if values > limits.max_json_values:
        raise LimitExceeded(field_name, f"up to {values} JSON values, at most {limits.max_json_values}",
                            "max_json_values")
    digits = limits.max_number_digits

    def number(text: str) -> Any:
        if len(text) > digits:
            raise LimitExceeded(field_name, f"a number of {len(text)} characters, at most {digits}",
                                "max_number_digits")
        if "." in text or "e" in text or "E" in text:
            value = float(text)
            if not math.isfinite(value):
                raise LimitExceeded(field_name, f"number {text[:40]} is not finite")
            return value
        return int(text)

    def constant(text: str) -> Any:
        raise LimitExceeded(field_name, f"{text} is not JSON (non-finite numbers travel as strings)")

    try:
        obj = json.loads(raw, parse_int=number, parse_float=number, parse_constant=constant)
    except RecursionError:
        raise LimitExceeded(field_name, f"JSON nested deeper than {limits.max_json_depth}",
                            "max_json_depth") from None
    except LimitExceeded:
        raise
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise WireError(field_name, f"not JSON: {str(exc)[:200]}") from None
    if raw.count(b"[") + raw.count(b"{") > limits.max_json_depth:
        _check_depth(obj, limits.max_json_depth, field_name)
    return obj


def _check_depth(obj: Any, limit: int, field_name: str) -> None:
    stack = [(obj, 1)] if isinstance(obj, (dict, list)) else []
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limit:
            raise LimitExceeded(field_name, f"JSON nested deeper than {limit}", "max_json_depth")
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))


# ----------------------------------------------------------------------------------------------
# Responses


def validate_execute_response(
    obj: Any,
    limits: AnswerLimits = DEFAULT_LIMITS,
    request: ExecuteRequest | None = None,
) -> dict[str, Any]:
    """Check an execute response's shape and numbers; raise :class:`WireError` naming the first bad field.

    With the ``request`` it answers, the output streams are held to the ``max_output_bytes`` it
    asked for and ``duration_ms`` to its ``timeout_s`` (plus ``limits.duration_grace_ms``).
    """
    if not isinstance(obj, dict):
        raise WireError("response", "must be a JSON object")
    if obj.get("status") == QUERY_STATUS:
        return validate_query_event(obj)
    if obj.get("status") not in STATUSES:
        raise WireError("status", f"must be one of {', '.join(STATUSES)}")
    validate_result(obj.get("result"))
    for key in ("stdout", "stderr"):
        if not isinstance(obj.get(key), str):
            raise WireError(key, "must be a string")
        if request is not None and len(obj[key]) > request.max_output_bytes:
            raise LimitExceeded(key, f"{len(obj[key])} characters where the request allowed "
                                f"max_output_bytes={request.max_output_bytes}")
    for key in ("stdout_truncated", "stderr_truncated"):
        if not isinstance(obj.get(key), bool):
            raise WireError(key, "must be a boolean")
    error = obj.get("error")
    if error is not None and not (
        isinstance(error, dict) and all(isinstance(error.get(k), str) for k in ("type", "message", "traceback"))
        and isinstance(error.get("query", ""), str)
    ):
        raise WireError("error", "must be null or {type, message, traceback} strings")
    if obj["status"] != "ok" and error is None:
        raise WireError("error", "must be set when status is not ok")
    for key in ("type", "message", "traceback", "query"):
        if error is not None and len(error.get(key, "")) > limits.max_error_chars:
            raise LimitExceeded(f"error.{key}", f"{len(error[key])} characters, at most {limits.max_error_chars}",
                                "max_error_chars")
    duration: Any = obj.get("duration_ms")
    if not _is_number(duration) or not math.isfinite(duration) or duration < 0:
        raise WireError("duration_ms", "must be a finite number >= 0")
    if request is not None and duration > request.timeout_s * 1000 + limits.duration_grace_ms:
        raise LimitExceeded("duration_ms", f"{duration:.6g} ms for an execution with timeout_s={request.timeout_s:g}",
                            "duration_grace_ms")
    rss = obj.get("peak_rss_bytes")
    if not isinstance(rss, int) or isinstance(rss, bool):
        raise WireError("peak_rss_bytes", "must be an integer")
    if not 0 <= rss <= limits.max_peak_rss_bytes:
        raise LimitExceeded("peak_rss_bytes", f"{rss} is outside 0..{limits.max_peak_rss_bytes}",
                            "max_peak_rss_bytes")
    request_id = obj.get("request_id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > REQUEST_ID_MAX):
        raise WireError("request_id", f"must be null or a string of at most {REQUEST_ID_MAX} chars")
    return obj


def validate_query_event(obj: Any, max_query_chars: int = 1 << 20) -> dict[str, Any]:
    """Check a ``status: "query"`` answer (the code waits for ``query``); raise :class:`WireError`."""
    if not isinstance(obj, dict) or obj.get("status") != QUERY_STATUS:
        raise WireError("status", f"must be {QUERY_STATUS!r}")
    execution = obj.get("execution")
    if not isinstance(execution, str) or not EXECUTION_ID_RE.match(execution):
        raise WireError("execution", "must be an execution id (e- and 32 hex digits)")
    query = obj.get("query")
    if not isinstance(query, dict):
        raise WireError("query", "must be an object {seq, sql, max_bytes, timeout_s}")
    seq, sql = query.get("seq"), query.get("sql")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise WireError("query.seq", "must be a positive integer")
    if not isinstance(sql, str) or len(sql) > max_query_chars:
        raise WireError("query.sql", f"must be a string of at most {max_query_chars} characters")
    max_bytes = query.get("max_bytes")
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
        raise WireError("query.max_bytes", "must be a non-negative integer")
    if not _is_number(query.get("timeout_s")) or not query["timeout_s"] > 0:
        raise WireError("query.timeout_s", "must be a positive number")
    return obj
