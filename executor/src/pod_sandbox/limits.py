"""Bounds on what a client accepts from a sandbox: every answer is checked against them first.

The sandbox pod runs untrusted code and may be fully compromised, so nothing it returns is
trusted: the client checks sizes, counts, nesting and numbers against :class:`AnswerLimits`
from the answer's headers and metadata before it allocates for the payload, and refuses an
answer that breaks one with :class:`LimitExceeded` naming the field and the limit.

The defaults fit the executor's own caps (``max_result_bytes`` 64 MiB, ``max_output_bytes``
1 MiB per stream): every answer the shipped executor can give passes, and the memory a refused
answer costs the client is bounded by the limits, not by what the answer claims. Importable
with the standard library alone.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

MIB = 1 << 20


class LimitExceeded(ValueError):
    """An answer from the sandbox breaks one of the client's :class:`AnswerLimits`.

    ``field`` names the part of the answer (``result.value.data``, ``peak_rss_bytes``, ...),
    ``limit`` the :class:`AnswerLimits` attribute that refused it (empty for a value outside
    its type's range), ``message`` what was found.
    """

    def __init__(self, field_name: str, message: str, limit: str = "") -> None:
        shown = f"{message} (AnswerLimits.{limit})" if limit else message
        super().__init__(f"{field_name}: {shown}")
        self.field = field_name
        self.message = message
        self.limit = limit


@dataclass(frozen=True)
class AnswerLimits:
    """What one answer from the sandbox may hold. Pass your own to ``KubernetesSandbox(limits=...)``.

    Sizes are in bytes unless named otherwise; "values" count JSON scalars and table cells.
    """

    #: HTTP: the whole body of one answer (the result cap, both output streams JSON-escaped).
    max_response_bytes: int = 80 * MIB
    #: HTTP: the body of a file download (``GET /v1/files/{name}``: the executor's upload cap).
    max_download_bytes: int = 512 * MIB
    #: JSON: nesting depth, scalars (commas + colons, counted before parsing), digits of a number.
    max_json_depth: int = 64
    max_json_values: int = 2_000_000
    max_number_digits: int = 400
    #: Text fields of an error (type, message, traceback, query), in characters each.
    max_error_chars: int = 4 * MIB
    #: The encoded result: base64 text of a Parquet file or PNG, in characters.
    max_base64_chars: int = 90 * MIB
    #: DataFrames: rows, columns, cells (rows x columns), row groups of a Parquet file.
    max_rows: int = 10_000_000
    max_columns: int = 10_000
    max_cells: int = 50_000_000
    max_row_groups: int = 10_000
    #: DataFrames: bytes the decoded frame may take (pages decompressed, arrays, Python strings).
    max_frame_bytes: int = 256 * MIB
    #: Nesting of a column's type (lists of structs of lists ...).
    max_type_depth: int = 8
    #: Charts: width and height in pixels each, and their product.
    max_plot_side: int = 32768
    max_plot_pixels: int = 40_000_000
    #: Numbers the pod reports: peak memory of the execution, its wall time beyond its timeout.
    max_peak_rss_bytes: int = 1 << 40
    duration_grace_ms: float = 60_000.0

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"AnswerLimits.{spec.name} must be a positive number, got {value!r}")


DEFAULT_LIMITS = AnswerLimits()
