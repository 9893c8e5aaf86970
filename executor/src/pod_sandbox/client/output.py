"""The code's printed output and warnings, shown in this process as local execution shows them.

Run locally by PandasAI, generated code prints to the host's ``sys.stdout`` and its warnings go
to ``sys.stderr``. In the pod both streams are captured (each capped at ``max_output_bytes``);
the client writes them to this process's current ``sys.stdout`` and ``sys.stderr`` once the
execution is over, whatever its outcome, before any exception is raised. What the two streams
cannot keep is their interleaving: each is written whole, stdout first.
"""

from __future__ import annotations

import sys
from typing import Any, Mapping


def truncation_notice(stream: str, limit: int | None) -> str:
    """The line written to stderr after a stream the executor cut at its cap."""
    cap = f" at {limit} bytes" if limit is not None else ""
    return f"[pod sandbox: the code's {stream} was cut{cap} (max_output_bytes)]\n"


def echo(response: Mapping[str, Any], limit: int | None = None) -> None:
    """Write an execute response's ``stdout``/``stderr`` to ``sys.stdout``/``sys.stderr``."""
    out = response.get("stdout") or ""
    err = response.get("stderr") or ""
    if out:
        sys.stdout.write(out)
        sys.stdout.flush()
    notes = [truncation_notice(s, limit) for s in ("stdout", "stderr") if response.get(f"{s}_truncated")]
    if notes and err and not err.endswith("\n"):
        err += "\n"
    if err or notes:
        sys.stderr.write(err + "".join(notes))
        sys.stderr.flush()
