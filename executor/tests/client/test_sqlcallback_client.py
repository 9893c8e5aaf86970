"""The client's side of SQL by call-back: what it answers a query with, and what never runs."""

from __future__ import annotations

import io
import json
from typing import Any

import pandas as pd
import pytest

from pod_sandbox.client import sqlcallback, sqlguard

QUERY = {"seq": 1, "sql": "SELECT region FROM sales", "max_bytes": 1 << 20, "timeout_s": 60.0}


class ConnectorError(Exception):
    """Stands for a database driver's exception class."""


ConnectorError.__module__ = "_duckdb"


def recorder(result: Any) -> Any:
    calls: list[str] = []

    def execute_sql_query(sql: str) -> Any:
        calls.append(sql)
        if isinstance(result, BaseException):
            raise result
        return result

    execute_sql_query.calls = calls  # type: ignore[attr-defined]
    return execute_sql_query


def error_of(answer: sqlcallback.Answer) -> dict[str, str]:
    assert answer.content_type == "application/json"
    return json.loads(answer.body)["error"]


def test_a_result_is_answered_as_parquet_that_keeps_dtypes() -> None:
    frame = pd.DataFrame({"region": pd.Categorical(["n", "s"]), "units": pd.array([1, None], dtype="Int64")})
    runner = recorder(frame)
    answer = sqlcallback.answer_for(QUERY, runner, sqlguard.Verdicts())
    assert answer.content_type == sqlcallback.PARQUET_TYPE
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(answer.body)), frame)
    assert runner.calls == [QUERY["sql"]]


def test_a_connector_error_is_answered_with_its_module_and_name() -> None:
    runner = recorder(ConnectorError("Binder Error: no column"))
    assert error_of(sqlcallback.answer_for(QUERY, runner, sqlguard.Verdicts())) == {
        "type": "_duckdb.ConnectorError", "message": "Binder Error: no column"}
    assert error_of(sqlcallback.answer_for(QUERY, recorder(KeyError("k")), sqlguard.Verdicts()))["type"] == "KeyError"


@pytest.mark.parametrize("sql", [
    "SELECT * FROM read_csv_auto('/etc/passwd')",
    "SELECT * FROM '/home/user/.aws/credentials'",
    "COPY sales TO '/tmp/x.csv'",
    "SELECT 1; DROP TABLE sales",
    "SELECT current_setting('home_directory')",
])
def test_a_refused_query_never_reaches_the_connector(sql: str) -> None:
    runner = recorder(pd.DataFrame({"a": [1]}))
    answer = sqlcallback.answer_for(dict(QUERY, sql=sql), runner, sqlguard.Verdicts())
    assert error_of(answer)["type"] == sqlcallback.REFUSED_TYPE
    assert runner.calls == []


def test_a_result_above_the_pods_cap_is_answered_with_an_error() -> None:
    runner = recorder(pd.DataFrame({"v": range(10_000)}))
    answer = sqlcallback.answer_for(dict(QUERY, max_bytes=100), runner, sqlguard.Verdicts())
    assert error_of(answer)["type"] == sqlcallback.TOO_LARGE_TYPE


def test_without_execute_sql_query_the_code_gets_a_name_error() -> None:
    assert error_of(sqlcallback.answer_for(QUERY, None, sqlguard.Verdicts()))["type"] == "NameError"


def test_answer_queries_answers_until_the_final_response() -> None:
    runner = recorder(pd.DataFrame({"a": [1]}))
    events = [{"status": "query", "execution": "e-" + "1" * 32, "query": dict(QUERY, seq=n)} for n in (1, 2)]
    final = {"status": "ok"}
    posted: list[int] = []

    def post(execution: str, seq: int, answer: sqlcallback.Answer) -> dict[str, Any]:
        posted.append(seq)
        return events[seq] if seq < len(events) else final

    assert sqlcallback.answer_queries(events[0], {"execute_sql_query": runner}, sqlguard.Verdicts(), post) is final
    assert posted == [1, 2] and len(runner.calls) == 2
