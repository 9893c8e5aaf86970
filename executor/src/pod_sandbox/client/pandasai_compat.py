"""PandasAI's own exception classes and chart folder, or stand-ins when PandasAI is not installed.

The client's execution errors subclass these, so PandasAI's Agent treats a failure in the pod
exactly as one of local execution: ``CodeExecutionError`` is retried and then answered with
PandasAI's ``ErrorResponse``; ``NoResultFoundError`` and ``InvalidOutputValueMismatch`` are
retried and then raised from ``chat()``; ``MaliciousQueryError`` is PandasAI's word for a query
on a table it does not know. Without PandasAI (the client used on its own) the
stand-ins keep the same names and the same relations to ``Exception``.
"""

from __future__ import annotations

import os

try:  # PandasAI is an optional extra of the client
    from pandasai.constants import DEFAULT_CHART_DIRECTORY
    from pandasai.exceptions import (
        CodeExecutionError,
        InvalidOutputValueMismatch,
        MaliciousQueryError,
        NoResultFoundError,
    )

    HAVE_PANDASAI = True
except ImportError:  # pragma: no cover - exercised when pandasai is absent
    HAVE_PANDASAI = False
    DEFAULT_CHART_DIRECTORY = os.path.join("exports", "charts")

    class CodeExecutionError(Exception):  # type: ignore[no-redef]
        """Stand-in for ``pandasai.exceptions.CodeExecutionError``."""

    class NoResultFoundError(Exception):  # type: ignore[no-redef]
        """Stand-in for ``pandasai.exceptions.NoResultFoundError``."""

    class InvalidOutputValueMismatch(Exception):  # type: ignore[no-redef]
        """Stand-in for ``pandasai.exceptions.InvalidOutputValueMismatch``."""

    class MaliciousQueryError(Exception):  # type: ignore[no-redef]
        """Stand-in for ``pandasai.exceptions.MaliciousQueryError``."""


#: What PandasAI's ``CodeExecutor`` raises when the code assigned no ``result`` (same words).
NO_RESULT_MESSAGE = (
    "No result was returned from the code execution. Please return the result in dictionary "
    "format, for example: result = {'type': ..., 'value': ...}"
)

__all__ = [
    "DEFAULT_CHART_DIRECTORY",
    "HAVE_PANDASAI",
    "NO_RESULT_MESSAGE",
    "CodeExecutionError",
    "InvalidOutputValueMismatch",
    "MaliciousQueryError",
    "NoResultFoundError",
]
