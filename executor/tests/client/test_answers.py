"""The client's answers as PandasAI's local execution gives them: exceptions, output, charts.

Against the fake executor (a protocol double) with canned responses where the executor's own
behaviour is not the point; the differential suite (``parity/``) checks the same through
PandasAI's Agent against the real executor.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import traceback
import uuid
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pod_sandbox import wire
from pod_sandbox.client import (
    KubernetesSandbox,
    NoResultError,
    SandboxExecutionError,
    SandboxProtocolError,
    SandboxTimeoutError,
)
from pod_sandbox.client import charts
from pod_sandbox.client.errors import PodTraceback, SandboxResultError
from pod_sandbox.client.pandasai_compat import (
    NO_RESULT_MESSAGE,
    CodeExecutionError,
    InvalidOutputValueMismatch,
    NoResultFoundError,
)
from pod_sandbox.client.sandbox import raise_for_status

pandasai_exceptions = pytest.importorskip("pandasai.exceptions")

PNG = wire.PNG_MAGIC + b"\x00\x00\x00\rIHDR" + (64).to_bytes(4, "big") * 2 + b"\x08\x06" + b"\x00" * 34


def response(status: str = "ok", result: Any = None, error: Any = None, **extra: Any) -> dict[str, Any]:
    body = {
        "status": status,
        "result": result or {"type": "none", "value": None},
        "stdout": "", "stderr": "", "stdout_truncated": False, "stderr_truncated": False,
        "error": error, "duration_ms": 1.0, "peak_rss_bytes": 0, "request_id": None,
    }
    body.update(extra)
    return body


def canned(fake, *bodies: dict[str, Any]) -> list[dict[str, Any]]:
    """Answer the next executions with ``bodies`` in turn (the last one after); returns the requests."""
    seen: list[dict[str, Any]] = []

    def hook(handler) -> bool:
        n = int(handler.headers.get("Content-Length") or 0)
        seen.append(json.loads(handler.rfile.read(n)))
        handler._send(200, bodies[min(len(seen) - 1, len(bodies) - 1)])
        return True

    fake.hooks["POST /v1/execute"] = hook
    return seen


@pytest.fixture
def box(fake_executor):
    sandbox = KubernetesSandbox(connection="url", url=fake_executor.url)
    yield sandbox
    sandbox.stop()


# -- PandasAI's exception families ---------------------------------------------------------------------


def test_the_client_uses_pandasais_own_exception_classes():
    assert CodeExecutionError is pandasai_exceptions.CodeExecutionError
    assert NoResultFoundError is pandasai_exceptions.NoResultFoundError
    assert InvalidOutputValueMismatch is pandasai_exceptions.InvalidOutputValueMismatch


@pytest.mark.parametrize("status, cls", [("error", SandboxExecutionError), ("timeout", SandboxTimeoutError),
                                         ("killed", SandboxExecutionError), ("memory", SandboxExecutionError)])
def test_a_failed_execution_is_a_code_execution_error_raised_from_the_pod_traceback(status, cls):
    pod_tb = 'Traceback (most recent call last):\n  File "<string>", line 3, in <module>\nKeyError: \'x\'\n'
    with pytest.raises(cls) as info:
        raise_for_status(response(status, error={"type": "KeyError", "message": "'x'", "traceback": pod_tb}))
    exc = info.value
    assert isinstance(exc, CodeExecutionError)  # PandasAI retries it and answers ErrorResponse
    assert isinstance(exc.__cause__, PodTraceback) and exc.traceback == pod_tb
    shown = "".join(traceback.format_exception(exc))  # PandasAI's traceback.format_exc()
    assert shown.index('File "<string>", line 3') < shown.index("direct cause") < shown.index(type(exc).__name__)


def test_a_failure_without_traceback_has_no_cause():
    with pytest.raises(SandboxTimeoutError) as info:
        raise_for_status(response("timeout", error={"type": "TimeoutError", "message": "killed after 1.0 s",
                                                     "traceback": ""}))
    assert info.value.__cause__ is None and "killed after 1.0 s" in str(info.value)


def test_a_result_that_does_not_fit_its_type_is_pandasais_invalid_output_not_a_code_error():
    with pytest.raises(SandboxResultError) as info:
        raise_for_status(response("error", error={"type": "ResultError", "traceback": "",
                                                  "message": "type 'number' needs an int or float, got str"}))
    assert isinstance(info.value, InvalidOutputValueMismatch)
    assert not isinstance(info.value, CodeExecutionError)  # locally chat() raises it after the retries
    assert "needs an int or float" in str(info.value)


def test_a_result_above_the_cap_is_a_code_execution_error():
    with pytest.raises(SandboxExecutionError):
        raise_for_status(response("error", error={"type": "ResultTooLarge", "traceback": "",
                                                  "message": "the encoded result exceeds max_result_bytes=1"}))


def test_no_result_is_pandasais_no_result_found_error_with_its_words(box):
    with pytest.raises(NoResultError) as info:
        box.execute("x = 1", {})
    assert isinstance(info.value, NoResultFoundError) and not isinstance(info.value, CodeExecutionError)
    assert str(info.value) == NO_RESULT_MESSAGE


def test_a_failing_query_on_the_host_is_a_code_execution_error(box, fake_executor):
    def execute_sql_query(query: str) -> pd.DataFrame:
        raise RuntimeError('Binder Error: Referenced column "profit" not found')

    with pytest.raises(SandboxExecutionError) as info:
        box.execute("df = execute_sql_query('SELECT profit FROM t')", {"execute_sql_query": execute_sql_query})
    assert isinstance(info.value, CodeExecutionError)
    assert isinstance(info.value.__cause__, RuntimeError) and "profit" in str(info.value)
    assert fake_executor.executions == []


def test_a_result_the_client_cannot_decode_is_a_protocol_error_naming_it(box, fake_executor):
    broken = {"encoding": "parquet+base64", "kind": "dataframe", "data": base64.b64encode(b"not parquet").decode(),
              "columns": [], "dtypes": {}, "index_dtype": "int64", "shape": [0, 0], "name": None}
    canned(fake_executor, response(result={"type": "dataframe", "value": broken}))
    with pytest.raises(SandboxProtocolError, match="dataframe result could not be decoded"):
        box.execute("result = 1", {})


def test_sql_rounds_exhausted_say_so_in_words_a_user_can_act_on(fake_executor):
    calls: list[str] = []

    def execute_sql_query(query: str) -> pd.DataFrame:
        calls.append(query)
        return pd.DataFrame({"a": [1]})

    code = "for i in range(20):\n    execute_sql_query(f'SELECT {i} AS a')\nresult = {'type': 'number', 'value': 1}"
    with KubernetesSandbox(connection="url", url=fake_executor.url, max_sql_rounds=3) as box:
        with pytest.raises(SandboxExecutionError) as info:
            box.execute(code, {"execute_sql_query": execute_sql_query})
    message = str(info.value)
    assert "more than 3 SQL queries at run time" in message and "SELECT 3 AS a" in message
    assert "client must upload" not in message  # the executor's protocol wording stays out
    assert len(calls) == 3 and len(fake_executor.executions) == 4


# -- output -------------------------------------------------------------------------------------------


def test_prints_and_warnings_reach_this_process_streams(box, fake_executor, capsys):
    canned(fake_executor, response(result={"type": "number", "value": 3}, stdout="hello\n3 rows\n",
                                   stderr="<string>:2: UserWarning: careful\n"))
    assert box.execute("print('hello')", {}) == {"type": "number", "value": 3}
    out, err = capsys.readouterr()
    assert out == "hello\n3 rows\n" and err == "<string>:2: UserWarning: careful\n"


def test_output_of_a_failed_execution_is_shown_before_the_exception(box, fake_executor, capsys):
    canned(fake_executor, response("error", stdout="step 1\n",
                                   error={"type": "KeyError", "message": "'x'", "traceback": ""}))
    with pytest.raises(SandboxExecutionError):
        box.execute("print('step 1')", {})
    assert capsys.readouterr().out == "step 1\n"


def test_output_cut_at_the_cap_says_so_on_stderr(fake_executor, capsys):
    canned(fake_executor, response(result={"type": "number", "value": 1}, stdout="x" * 10,
                                   stdout_truncated=True, stderr="no newline"))
    with KubernetesSandbox(connection="url", url=fake_executor.url, max_output_bytes=10) as box:
        box.execute("print('x' * 100)", {})
    out, err = capsys.readouterr()
    assert out == "x" * 10
    assert err == "no newline\n[pod sandbox: the code's stdout was cut at 10 bytes (max_output_bytes)]\n"


def test_echo_output_off_prints_nothing(fake_executor, capsys):
    canned(fake_executor, response(result={"type": "number", "value": 1}, stdout="quiet?\n"))
    with KubernetesSandbox(connection="url", url=fake_executor.url, echo_output=False) as box:
        box.execute("print('quiet?')", {})
        assert box.last_response["stdout"] == "quiet?\n"
    assert capsys.readouterr() == ("", "")


def test_only_the_last_round_of_dynamic_sql_is_shown(box, fake_executor, capsys):
    """Each staging round runs the code from its start: its prints are shown once, not per round."""
    def execute_sql_query(query: str) -> pd.DataFrame:
        return pd.DataFrame({"n": [2]})

    code = ("for t in ['a', 'b']:\n    print('querying', t)\n    df = execute_sql_query(f'SELECT * FROM {t}')\n"
            "result = {'type': 'number', 'value': int(df['n'][0])}")
    assert box.execute(code, {"execute_sql_query": execute_sql_query, "pd": pd, "np": np})["value"] == 2
    assert len(fake_executor.executions) == 3
    assert capsys.readouterr().out == "querying a\nquerying b\n"


# -- charts -------------------------------------------------------------------------------------------

CHART = os.path.join("exports", "charts", f"temp_chart_{uuid.UUID(int=7)}.png")


def png_uri(data: bytes = PNG) -> str:
    return wire.PNG_DATA_URI_PREFIX + base64.b64encode(data).decode()


def chart_code(path: str = CHART) -> str:
    return (f"import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.savefig({path!r})\n"
            f"result = {{'type': 'plot', 'value': {path!r}}}")


def test_a_chart_is_written_where_pandasai_would_have_it_and_answered_by_path(box, fake_executor, tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    canned(fake_executor, response(result={"type": "plot", "value": png_uri()}))
    assert box.execute(chart_code(), {}) == {"type": "plot", "value": CHART}
    assert (tmp_path / CHART).read_bytes() == PNG


def test_save_charts_off_answers_the_data_uri_and_writes_nothing(fake_executor, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    canned(fake_executor, response(result={"type": "plot", "value": png_uri()}))
    with KubernetesSandbox(connection="url", url=fake_executor.url, save_charts=False) as box:
        assert box.execute(chart_code(), {})["value"] == png_uri()
    assert not (tmp_path / "exports").exists()


@pytest.mark.parametrize("path", [
    "exports/charts/../../outside.png",                                     # traversal
    "/tmp/exports/charts/temp_chart_00000000-0000-0000-0000-000000000007.png",  # absolute
    "exports/charts/temp_chart_00000000-0000-0000-0000-000000000007.png/../../x.png",
    "exports/charts/sub/temp_chart_00000000-0000-0000-0000-000000000007.png",  # deeper
    "exports/charts/temp_chart_00000000-0000-0000-0000-00000000000G.png",      # not a UUID
    "exports/charts/temp_chart_00000000-0000-0000-0000-000000000007.png\x00x",  # NUL
    "chart.png",                                                             # not PandasAI's form
])
def test_only_pandasais_exact_chart_path_form_is_written(path, box, fake_executor, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    canned(fake_executor, response(result={"type": "plot", "value": png_uri()}))
    assert box.execute(chart_code(path), {})["value"] == png_uri()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []
    with pytest.raises(ValueError):
        charts.save_chart(png_uri(), path)


def test_two_chart_paths_in_the_code_keep_the_data_uri(box, fake_executor, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    other = CHART.replace("0007.png", "0008.png")
    canned(fake_executor, response(result={"type": "plot", "value": png_uri()}))
    code = chart_code() + f"\nplt.savefig({other!r})"
    assert box.execute(code, {})["value"] == png_uri()
    assert not (tmp_path / "exports").exists()


def test_a_symlink_at_the_chart_path_is_not_followed(box, fake_executor, tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exports" / "charts").mkdir(parents=True)
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / CHART).symlink_to(target)
    canned(fake_executor, response(result={"type": "plot", "value": png_uri()}))
    with caplog.at_level(logging.WARNING, logger="pod_sandbox.client"):
        assert box.execute(chart_code(), {})["value"] == png_uri()
    assert target.read_text() == "keep me"
    assert "could not write the chart" in caplog.text


def test_a_plot_result_that_is_not_a_png_is_refused(box, fake_executor, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    canned(fake_executor, response(result={"type": "plot", "value": png_uri(b"#!/bin/sh\nrm -rf ~\n")}))
    with pytest.raises(SandboxProtocolError, match="not a PNG"):
        box.execute(chart_code(), {})
    assert not (tmp_path / CHART).exists()


def test_chart_paths_are_found_in_f_strings_and_nested_calls():
    tree = __import__("ast").parse(f"import os\np = os.path.join('x', f{CHART!r})\nplt.savefig(p)")
    assert charts.host_chart_path(tree) == CHART
    assert charts.host_chart_path(__import__("ast").parse("x = 'exports/charts/a.png'")) is None
