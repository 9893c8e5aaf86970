"""Chart results: the PNG the code saved in the pod, written where PandasAI keeps charts on the host.

PandasAI's code cleaner rewrites every ``.png`` literal of the generated code to one path,
``exports/charts/temp_chart_<uuid4>.png`` (its ``DEFAULT_CHART_DIRECTORY``), and local
execution answers a chart with that path, the file written relative to the working directory.
The pod returns the chart as PNG bytes (a data URI); when the code names exactly one such path,
the client writes the bytes to that path on the host and answers the path, as local execution
does. The pod never chooses the path: it is taken from the code the client sent and must have
PandasAI's exact form (relative, inside the chart folder, a UUID file name); the file is opened
without following a symlink. Anything else keeps the data URI and writes nothing.
"""

from __future__ import annotations

import ast
import base64
import binascii
import os
import re

from .errors import SandboxProtocolError
from .pandasai_compat import DEFAULT_CHART_DIRECTORY

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_URI_PREFIX = "data:image/png;base64,"
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
#: The one path form PandasAI's cleaner writes (derived from its chart folder constant).
CHART_PATH_RE = re.compile(
    "^" + re.escape(DEFAULT_CHART_DIRECTORY + os.sep) + "temp_chart_" + _UUID + r"\.png$"
)


def chart_paths(tree: ast.AST) -> set[str]:
    """Every string constant of the code that is a PandasAI chart path (f-string parts included)."""
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and CHART_PATH_RE.match(node.value)
    }


def host_chart_path(tree: ast.AST) -> str | None:
    """The chart path local execution would answer with: the code's one PandasAI chart path, else None."""
    paths = chart_paths(tree)
    return next(iter(paths)) if len(paths) == 1 else None


def png_bytes(data_uri: str) -> bytes:
    """The PNG inside a ``data:image/png;base64,`` URI; a protocol error when it is not a PNG."""
    if not data_uri.startswith(DATA_URI_PREFIX):
        raise SandboxProtocolError("plot result: not a data:image/png;base64 URI")
    try:
        data = base64.b64decode(data_uri[len(DATA_URI_PREFIX):], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SandboxProtocolError(f"plot result: invalid base64 ({exc})") from exc
    if not data.startswith(PNG_MAGIC):
        raise SandboxProtocolError("plot result: the data is not a PNG")
    return data


def save_chart(data_uri: str, path: str) -> str:
    """Write the chart to ``path`` (relative to the working directory, PandasAI's form); return it.

    The folder is made when missing (PandasAI's Agent makes it at start); the file itself is
    opened with ``O_NOFOLLOW``, so a symlink at that name is refused rather than followed.
    """
    if not CHART_PATH_RE.match(path):
        raise ValueError(f"not a PandasAI chart path: {path!r}")
    data = png_bytes(data_uri)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path
