"""KubernetesSandbox in url mode against the fake executor: results, errors, SQL staging, files."""

from __future__ import annotations

import io
import json
import traceback

import numpy as np
import pandas as pd
import pytest

from pod_sandbox.client import (
    KubernetesSandbox,
    NoResultError,
    SandboxExecutionError,
    SandboxTimeoutError,
)
from pod_sandbox.client.datasets import dataset_file_name
from pod_sandbox.client.sandbox import missing_query, raise_for_status


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "city": pd.Categorical(["Oslo", "Rome", "Oslo"]),
            "day": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03"]).tz_localize("UTC"),
            "sales": pd.array([1, None, 3], dtype="Int64"),
            "price": [1.5, 2.5, np.nan],
        }
    )


def sql_env(calls: list[str]):
    def execute_sql_query(query: str) -> pd.DataFrame:
        calls.append(query)
        return frame()

    return {"pd": pd, "np": np, "execute_sql_query": execute_sql_query}


@pytest.fixture
def sandbox(fake_executor):
    box = KubernetesSandbox(connection="url", url=fake_executor.url)
    yield box
    box.stop()


def test_number_and_string_results(sandbox, fake_executor):
    assert sandbox.execute("result = {'type': 'number', 'value': 42}", {}) == {"type": "number", "value": 42}
    assert sandbox.execute("print('noise {'); result = {'type': 'string', 'value': 'hi'}", {}) == {
        "type": "string",
        "value": "hi",
    }
    assert fake_executor.token is not None and len(fake_executor.token) >= 32


def test_sql_results_travel_as_parquet_and_dataframes_come_back_with_dtypes(sandbox, fake_executor):
    calls: list[str] = []
    query = "SELECT * FROM sales"
    code = f"df = execute_sql_query('{query}')\nresult = {{'type': 'dataframe', 'value': df}}"
    result = sandbox.execute(code, sql_env(calls))
    assert calls == [query]
    name = dataset_file_name(query)
    assert fake_executor.files[name].startswith(b"PAR1")
    assert fake_executor.executions[-1]["datasets"] == {query: name}
    assert result["type"] == "dataframe"
    pd.testing.assert_frame_equal(result["value"], frame())
    assert str(result["value"]["day"].dtype) == "datetime64[ns, UTC]"


def test_an_unchanged_query_result_is_not_uploaded_twice(sandbox, fake_executor):
    calls: list[str] = []
    code = "df = execute_sql_query('SELECT 1')\nresult = {'type': 'number', 'value': len(df)}"
    for _ in range(3):
        assert sandbox.execute(code, sql_env(calls)) == {"type": "number", "value": 3}
    puts = [r for r in fake_executor.requests if r[0] == "PUT"]
    assert len(calls) == 3 and len(puts) == 1


def test_dynamic_sql_is_staged_when_the_pod_asks_for_it(sandbox, fake_executor):
    calls: list[str] = []
    code = (
        "table = 'sales'\n"
        "df = execute_sql_query(f'SELECT * FROM {table}')\n"
        "result = {'type': 'number', 'value': int(df['sales'].sum())}"
    )
    assert sandbox.execute(code, sql_env(calls)) == {"type": "number", "value": 4}
    assert calls == ["SELECT * FROM sales"]
    assert len(fake_executor.executions) == 2


def test_dynamic_sql_longer_than_the_error_message_is_staged_whole(sandbox, fake_executor):
    calls: list[str] = []
    columns = ", ".join(f"sales AS s{i}" for i in range(120))
    code = (
        f"cols = {columns!r}\n"
        "df = execute_sql_query('SELECT ' + cols + ' FROM sales')\n"
        "result = {'type': 'number', 'value': len(df.columns)}"
    )
    query = f"SELECT {columns} FROM sales"
    assert len(query) > 1500
    assert sandbox.execute(code, sql_env(calls))["type"] == "number"
    assert calls == [query]
    assert len(fake_executor.executions) == 2
    assert fake_executor.executions[1]["datasets"].keys() == {query}


def test_errors_raise_with_the_in_pod_traceback(sandbox):
    with pytest.raises(SandboxExecutionError) as info:
        sandbox.execute("def f():\n    return 1 / 0\nresult = {'type': 'number', 'value': f()}", {})
    assert "ZeroDivisionError" in str(info.value)
    assert 'File "<string>", line 2, in f' in info.value.traceback
    # PandasAI shows traceback.format_exc(): the in-pod traceback is the chained cause
    shown = "".join(traceback.format_exception(info.value))
    assert 'File "<string>", line 2, in f' in shown
    assert shown.index("<string>") < shown.index("The above exception was the direct cause")
    assert info.value.error_type == "ZeroDivisionError"


def test_no_result_raises_like_pandasai(sandbox):
    with pytest.raises(NoResultError, match="No result was returned"):
        sandbox.execute("x = 1", {})


def test_plot_comes_back_as_a_data_uri(sandbox, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the fake executor runs in-process: keep its chart file out of the tree
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3])\n"
        "plt.savefig('chart.png')\n"
        "result = {'type': 'plot', 'value': plt.gcf()}"
    )
    result = sandbox.execute(code, {})
    assert result["type"] == "plot"
    assert result["value"].startswith("data:image/png;base64,")


def test_host_skills_are_refused_with_a_clear_message(sandbox, fake_executor):
    def my_skill(x):
        return x

    with pytest.raises(SandboxExecutionError, match="my_skill run.* on the host"):
        sandbox.execute("result = {'type': 'number', 'value': my_skill(1)}", {"my_skill": my_skill, "pd": pd})
    assert fake_executor.executions == []


def test_transfer_file_follows_the_extension(sandbox, fake_executor):
    sandbox.transfer_file(frame(), "data.csv")
    assert fake_executor.files["data.csv"].startswith(b"city,day,sales,price")
    assert sandbox.upload_dataframe(frame(), "data") == "data.parquet"
    back = pd.read_parquet(io.BytesIO(fake_executor.files["data.parquet"]))
    pd.testing.assert_frame_equal(back, frame())
    sandbox.transfer_file(b"raw", "blob.bin")
    assert fake_executor.files["blob.bin"] == b"raw"


def test_context_manager_and_idempotent_stop(fake_executor):
    with KubernetesSandbox(connection="url", url=fake_executor.url) as box:
        assert box.execute("result = {'type': 'number', 'value': 1}", {})["value"] == 1
        first = box.session_id
    box.stop()
    box.stop()
    assert box.session is None
    # url mode never stops an executor that is not its own
    assert fake_executor.shutdowns == 0
    assert first is not None


def test_static_token_skips_the_claim(fake_executor):
    fake_executor.token = "s" * 40
    with KubernetesSandbox(connection="url", url=fake_executor.url, token="s" * 40) as box:
        assert box.execute("result = {'type': 'number', 'value': 2}", {})["value"] == 2
    assert ("POST", "/v1/claim") not in fake_executor.requests


def test_constructor_rejects_bad_modes():
    with pytest.raises(ValueError, match="connection must be one of"):
        KubernetesSandbox(connection="ssh")
    with pytest.raises(ValueError, match="needs url"):
        KubernetesSandbox(connection="url")


def test_timeout_status_maps_to_timeout_error():
    response = {
        "status": "timeout", "stdout": "", "stderr": "",
        "error": {"type": "TimeoutError", "message": "killed after 1.0 s", "traceback": ""},
    }
    with pytest.raises(SandboxTimeoutError, match="killed after 1.0 s"):
        raise_for_status(response)


def test_missing_query_parses_the_executor_message():
    query = "SELECT * FROM \"t\" WHERE a = 'x'"
    message = (
        "no dataset was staged for this query; the client must upload it and pass it in "
        f"'datasets': {query!r}"
    )
    response = {"status": "error", "error": {"type": "MissingDatasetError", "message": message}}
    assert missing_query(response) == query
    assert missing_query({"status": "error", "error": {"type": "KeyError", "message": message}}) is None
    assert missing_query({"status": "ok", "error": None}) is None


def test_missing_query_matches_the_real_executor_message():
    child = pytest.importorskip("pod_sandbox.executor.child")
    namespace = child.build_namespace({}, {}, "/nonexistent")
    query = "SELECT 'a' AS x"
    with pytest.raises(child.MissingDatasetError) as info:
        namespace["execute_sql_query"](query)
    response = {"status": "error", "error": {"type": "MissingDatasetError", "message": str(info.value)}}
    assert missing_query(response) == query


def test_missing_query_reads_the_structured_field_whole():
    query = "SELECT " + ", ".join(f"col_{i}" for i in range(200)) + " FROM t"
    assert len(query) > 500
    message = "no dataset was staged for this query; the client must upload it and pass it in 'datasets': 'SELECT'"
    response = {"status": "error", "error": {"type": "MissingDatasetError", "message": message, "query": query}}
    assert missing_query(response) == query
    response["error"]["query"] = 42
    assert missing_query(response) is None  # a malformed field is not silently replaced by the message
    response["error"]["query"] = ""
    assert missing_query(response) is None


def test_long_missing_query_survives_the_real_executor_path():
    child = pytest.importorskip("pod_sandbox.executor.child")
    runner = pytest.importorskip("pod_sandbox.executor.runner")
    namespace = child.build_namespace({}, {}, "/nonexistent")
    query = "SELECT " + " + ".join(f"\"x{i}\"" for i in range(300)) + " AS total FROM \"t\" WHERE a = 'it''s'"
    assert len(query) > 2000
    with pytest.raises(child.MissingDatasetError) as info:
        namespace["execute_sql_query"](query)
    error = child._error(info.value)
    assert error["query"] == query
    assert len(error["message"]) < 500  # the human message stays short
    payload = json.dumps({"status": "error", "result": None, "error": error, "peak_rss_bytes": 0}).encode()
    status, _result, decided = runner.decide({"exit_code": 0}, payload, 1.0, 1 << 20)
    assert status == "error" and decided is not None and decided["query"] == query
    response = {"status": status, "error": decided}
    assert missing_query(response) == query
    # a client that predates error.query must not stage a cut query: the message does not parse
    without_field = {"status": "error", "error": {k: v for k, v in decided.items() if k != "query"}}
    assert missing_query(without_field) is None
