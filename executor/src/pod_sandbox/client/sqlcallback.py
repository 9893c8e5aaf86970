"""SQL by call-back, the client's side: answer each query the code in the pod asks, while it waits.

An execute sent with ``sql_callback: true`` may answer ``status: "query"``: the code called
``execute_sql_query(q)``. :func:`answer_queries` runs ``q`` here, on the host, through PandasAI's
own ``execute_sql_query`` (the agent's connectors and credentials never leave this process),
after :mod:`.sqlguard` accepted it, and posts the result as Parquet, or the exception the
connector raised (``module.QualName`` and message), which the code then gets raised inside it,
as locally. Each call of the code is one query on the host, in the order the code makes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .. import wire
from . import datasets, sqlguard

PARQUET_TYPE = "application/vnd.apache.parquet"
#: The class the code gets for a query the client's guard refuses (PandasAI's own).
REFUSED_TYPE = "pandasai.exceptions.MaliciousQueryError"
TOO_LARGE_TYPE = "pod_sandbox.QueryResultTooLarge"
MESSAGE_MAX = 8192


@dataclass(frozen=True)
class Answer:
    """One query's answer: a Parquet body, or an error object."""

    body: bytes
    content_type: str


def error_answer(kind: str, message: str) -> Answer:
    """The JSON error answer ``{"error": {"type", "message"}}``."""
    import json  # noqa: PLC0415

    return Answer(json.dumps({"error": {"type": kind[:200], "message": message[:MESSAGE_MAX]}}).encode(),
                  "application/json")


def exception_type(exc: BaseException) -> str:
    """``module.QualName`` of an exception, as the pod re-creates it (``_duckdb.BinderException``)."""
    module = type(exc).__module__ or "builtins"
    name = type(exc).__qualname__.replace("<locals>.", "")
    path = name if module == "builtins" else f"{module}.{name}"
    return path if all(part.isidentifier() for part in path.split(".")) else "Exception"


def answer_for(query: Mapping[str, Any], runner: Any, verdicts: sqlguard.Verdicts) -> Answer:
    """Run one asked query on the host (if the guard accepts it) and encode its answer."""
    sql = query["sql"]
    if not callable(runner):
        return error_answer("NameError", "name 'execute_sql_query' is not defined")
    why = verdicts.refusal(sql, sqlguard.policy_for(runner))
    if why is not None:
        return error_answer(REFUSED_TYPE, f"the pod sandbox does not run this query on the host: {why}")
    try:
        frame = runner(sql)
    except Exception as exc:  # noqa: BLE001 - the connector's own errors go to the code, as locally
        return error_answer(exception_type(exc), str(exc))
    try:
        data = datasets.to_parquet(frame)
    except Exception as exc:  # noqa: BLE001 - a result pyarrow cannot write
        return error_answer(exception_type(exc), f"the query's result could not be sent to the pod: {exc}")
    if len(data) > int(query["max_bytes"]):
        return error_answer(TOO_LARGE_TYPE, f"the query's result is {len(data)} bytes as Parquet; the pod "
                                            f"takes at most {query['max_bytes']} (max_query_bytes)")
    return Answer(data, PARQUET_TYPE)


def answer_queries(response: dict[str, Any], environment: Mapping[str, Any], verdicts: sqlguard.Verdicts,
                   post: Callable[[str, int, Answer], dict[str, Any]]) -> dict[str, Any]:
    """Answer queries until the execution's final response, which is returned."""
    runner = environment.get("execute_sql_query")
    while response.get("status") == wire.QUERY_STATUS:
        query = response["query"]
        response = post(response["execution"], int(query["seq"]), answer_for(query, runner, verdicts))
    return response
