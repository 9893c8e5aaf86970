"""Data for the pod: SQL found in generated code, host-side query results as Parquet files."""

from __future__ import annotations

import ast
import hashlib
import io
from typing import Any, Iterable

SQL_KEYWORDS = ("SELECT", "WITH")


def parse(code: str) -> ast.Module | None:
    """The code's syntax tree, or None when it does not parse (the pod then reports the error)."""
    try:
        return ast.parse(code)
    except (SyntaxError, ValueError):  # ValueError: NUL bytes in the source
        return None


def extract_sql_queries(tree: ast.AST) -> list[str]:
    """String literals in the code (its ``tree``) that look like SQL (SELECT or WITH), in order.

    The same rule as PandasAI's ``Sandbox._extract_sql_queries_from_code``: literals assigned
    to a name or passed as a call argument. Queries built at run time (f-strings, joins) are not
    found here; the sandbox stages those when the pod asks for them.
    """
    found: list[str] = []

    def is_sql(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and any(k in node.value.upper() for k in SQL_KEYWORDS)
        )

    class Visitor(ast.NodeVisitor):
        def visit_Assign(self, node: ast.Assign) -> None:  # noqa: N802 - ast API
            if is_sql(node.value):
                found.append(node.value.value)  # type: ignore[attr-defined]
            self.generic_visit(node)

        def visit_Call(self, node: ast.Call) -> None:  # noqa: N802 - ast API
            for arg in node.args:
                if is_sql(arg):
                    found.append(arg.value)  # type: ignore[attr-defined]
            self.generic_visit(node)

    Visitor().visit(tree)
    unique: list[str] = []
    for query in found:
        if query not in unique:
            unique.append(query)
    return unique


def called_names(tree: ast.AST) -> set[str]:
    """Names called as plain functions in the code (``f(...)``), used to spot host-only skills."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            names.add(node.func.id)
    return names


def dataset_file_name(query: str) -> str:
    """A stable workspace file name for one query's result."""
    return "sql-" + hashlib.sha256(query.encode("utf-8")).hexdigest()[:32] + ".parquet"


def to_parquet(frame: Any) -> bytes:
    """A DataFrame (or Series) as Parquet bytes, keeping dtypes and the index (pandas metadata)."""
    import pandas as pd  # noqa: PLC0415 - optional until data is sent

    if isinstance(frame, pd.Series):
        frame = frame.to_frame()
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    if not all(isinstance(c, str) for c in frame.columns):
        frame = frame.rename(columns=str)
    buf = io.BytesIO()
    frame.to_parquet(buf, engine="pyarrow", compression="zstd")
    return buf.getvalue()


def to_csv(frame: Any) -> bytes:
    """A DataFrame as CSV bytes (no index), the way PandasAI's DockerSandbox sends files."""
    return frame.to_csv(index=False).encode("utf-8")


def file_payload(data: Any, filename: str) -> tuple[bytes, str]:
    """Bytes and content type for ``transfer_file``: DataFrames follow the name's extension."""
    lower = filename.lower()
    if hasattr(data, "to_parquet") and hasattr(data, "to_csv"):
        if lower.endswith(".csv"):
            return to_csv(data), "text/csv"
        return to_parquet(data), "application/vnd.apache.parquet"
    if isinstance(data, str):
        return data.encode("utf-8"), "text/csv" if lower.endswith(".csv") else "text/plain"
    if isinstance(data, (bytes, bytearray, memoryview)):
        kind = "application/vnd.apache.parquet" if lower.endswith(".parquet") else "application/octet-stream"
        return bytes(data), kind
    raise TypeError(f"transfer_file needs a DataFrame, str or bytes, got {type(data).__name__}")


def digest(data: bytes) -> str:
    """Content hash, to skip re-uploading identical query results."""
    return hashlib.sha256(data).hexdigest()


def host_only_callables(environment: dict[str, Any], known: Iterable[str]) -> set[str]:
    """Callables in PandasAI's environment that live on the host (skills), minus ``known`` ones."""
    import types  # noqa: PLC0415

    skip = set(known)
    return {
        name
        for name, value in environment.items()
        if name not in skip and callable(value) and not isinstance(value, types.ModuleType)
    }
