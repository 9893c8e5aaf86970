"""Which SQL the client runs on the host for code in the pod: one read-only query on the agent's tables.

The code in the pod is untrusted, and every query it passes to ``execute_sql_query`` (a literal
staged before it runs, or one it builds at run time) is run *on the host*, by PandasAI's own
connector, with the host's files and credentials at hand. Unchecked, that is a way out of the
sandbox: DuckDB, which PandasAI uses for in-memory and file datasets, reads any host file named
in a query (``FROM '/root/.kube/config'``, ``read_csv_auto(...)``, ``glob(...)``), and a SQL
connector runs whatever its credentials allow. So before running a query the client parses it
with sqlglot (PandasAI's own parser: its Agent re-renders every query from the same default-
dialect parse before running it, so the tree checked here is the query that runs) and accepts
only:

* exactly one statement, a query (``SELECT``, ``WITH ... SELECT``, ``UNION``/``INTERSECT``/
  ``EXCEPT`` of those): no DDL or DML, ``COPY``, ``ATTACH``, ``INSTALL``/``LOAD``, ``PRAGMA``,
  ``SET``, ``SHOW``/``DESCRIBE``, ``PIVOT`` statements, nothing sqlglot cannot parse;
* every table it reads is a plain, unqualified name (``[A-Za-z_][A-Za-z0-9_]*``) that is one of
  the agent's tables (PandasAI's schema names) or a CTE the query defines: no file paths, no
  table functions (``read_*``, ``glob``, ``range``, ``duckdb_*``...), no other schema/catalog;
* no function that reads files or the server's state (``pg_read_file``, ``load_file``,
  ``getenv``, ``current_setting``, ``read_*``, ``lo_*``, ...).

What PandasAI's generated code asks for (queries on the tables in its prompt) passes; a
refused query raises :class:`~.errors.SandboxQueryRefused` naming the reason.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

#: Plain table names only: no quotes needed, so no path, URL or dotted name can hide in one.
PLAIN_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Scalar functions that read files, the server's settings or other databases, by name...
DENIED_FUNCTIONS = frozenset({
    "getenv", "current_setting", "set_config", "load_file", "glob", "query", "query_table",
    "sniff_csv", "parquet_scan", "parquet_metadata", "parquet_schema", "parquet_kv_metadata",
    "parquet_file_metadata", "iceberg_scan", "delta_scan", "sqlite_scan", "postgres_scan",
    "mysql_scan", "st_read", "dblink", "sys_eval", "sys_exec", "xp_cmdshell", "openrowset",
    "opendatasource", "openquery", "bulk",
})
#: ... and by prefix (DuckDB's readers, PostgreSQL's file and large-object functions, ...).
DENIED_PREFIXES = ("read_", "pg_", "lo_", "duckdb_", "dblink_", "sys_", "xp_", "file_")


@dataclass(frozen=True)
class Policy:
    """What queries may read: ``tables`` (lower-case names; None: any plain name) and the dialect."""

    tables: frozenset[str] | None
    dialect: str | None = None


def policy_for(runner: Callable[..., Any]) -> Policy:
    """The policy of PandasAI's ``execute_sql_query``: its Agent's tables and their dialect.

    PandasAI gives the code ``Agent._execute_sql_query``, a bound method: its agent holds the
    frames the user passed (``schema.name`` is the table name in the prompt). Any other callable
    (``sandbox.execute`` called directly with one's own function) gets the structural rules
    only: plain table names, no functions reading files.
    """
    agent = getattr(runner, "__self__", None)
    state = getattr(agent, "_state", None)
    dfs = getattr(state, "dfs", None)
    if not dfs:
        return Policy(tables=None)
    tables = frozenset(str(df.schema.name).lower() for df in dfs)
    try:
        dialect = dfs[0].get_dialect()
    except Exception:  # noqa: BLE001 - an odd frame: the default dialect only
        dialect = None
    return Policy(tables=tables, dialect=dialect)


def refusal(query: str, policy: Policy) -> str | None:
    """Why ``query`` may not run on the host, or None when it may."""
    try:
        import sqlglot  # noqa: PLC0415 - PandasAI's own dependency
        from sqlglot import exp  # noqa: PLC0415
    except ImportError:
        return "sqlglot (a PandasAI dependency) is not installed, so the query cannot be checked"
    dialects: list[str | None] = [None]  # what PandasAI's Agent parses it with
    if policy.dialect and policy.dialect not in dialects:
        dialects.append(policy.dialect)
    for dialect in dialects:
        try:
            statements = [s for s in sqlglot.parse(query, read=dialect) if s is not None]
        except Exception as exc:  # noqa: BLE001 - sqlglot's ParseError, TokenError, ...
            return f"it cannot be parsed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        why = _statement_refusal(statements, policy, exp)
        if why:
            return why
    return None


class Verdicts:
    """:func:`refusal`'s answers for the last ``size`` (query, policy) pairs, for one sandbox.

    The verdict is a pure function of the query's text and the policy (sqlglot's parse is
    deterministic), so a question asked again is not parsed again: checking a small query costs
    two sqlglot parses, a millisecond or more of every chat. The policy is part of the key: the
    same text asked for an agent with other tables is checked afresh.
    """

    def __init__(self, size: int = 256) -> None:
        if size < 1:
            raise ValueError(f"Verdicts: size must be at least 1, got {size}")
        self.size = size
        self._known: OrderedDict[tuple[str, Policy], str | None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._known)

    def refusal(self, query: str, policy: Policy) -> str | None:
        """Why ``query`` may not run on the host, or None when it may (as :func:`refusal`)."""
        key = (query, policy)
        if key in self._known:
            self._known.move_to_end(key)
            return self._known[key]
        why = refusal(query, policy)
        self._known[key] = why
        if len(self._known) > self.size:
            self._known.popitem(last=False)
        return why


def _statement_refusal(statements: list[Any], policy: Policy, exp: Any) -> str | None:
    if len(statements) != 1:
        return f"it holds {len(statements)} statements; one query is allowed"
    root = statements[0]
    query_types = (exp.Select, exp.Union, exp.Intersect, exp.Except)
    if not isinstance(root, query_types):
        return f"it is a {type(root).__name__} statement, not a query (SELECT)"
    ctes = {str(cte.alias_or_name).lower() for cte in root.find_all(exp.CTE)}
    for node in root.find_all(exp.Table):
        if not isinstance(node.this, exp.Identifier):
            return f"it reads from a table function ({node.this.sql()[:80]})"
        name = str(node.name)
        if node.args.get("db") is not None or node.args.get("catalog") is not None:
            return f"it names another schema or catalog ({node.sql()[:80]})"
        if not PLAIN_NAME_RE.match(name):
            return f"it reads from {name[:80]!r}, which is not a plain table name"
        lowered = name.lower()
        if lowered in ctes:
            continue
        if policy.tables is not None and lowered not in policy.tables:
            return f"it reads table {name!r}, which is not one of the agent's ({', '.join(sorted(policy.tables))})"
    for func in root.find_all(exp.Func):
        names = {func.name.lower()} if isinstance(func, exp.Anonymous) else set()
        names.add(func.sql_name().lower())
        for fname in names:
            if fname in DENIED_FUNCTIONS or fname.startswith(DENIED_PREFIXES):
                return f"it calls {fname}(), which reads files or the server's state"
    return None

