"""KubernetesSandbox in url mode against a real ``pod-sandbox-executor --claimable`` process."""

from __future__ import annotations

import subprocess
import sys
import traceback

import numpy as np
import pandas as pd
import pytest

from pod_sandbox.client import (
    KubernetesSandbox,
    SandboxExecutionError,
    SandboxStartError,
    SandboxTimeoutError,
)
from pod_sandbox.client.pandasai_compat import CodeExecutionError


def sales() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "region": pd.Categorical(["north", "south", "north", "east"]),
            "day": pd.to_datetime(["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"]),
            "units": pd.array([3, None, 5, 7], dtype="Int64"),
            "revenue": [10.5, 20.0, 30.25, np.nan],
        }
    )


def env(calls: list[str] | None = None) -> dict:
    def execute_sql_query(query: str) -> pd.DataFrame:
        if calls is not None:
            calls.append(query)
        return sales()

    return {"pd": pd, "np": np, "execute_sql_query": execute_sql_query}


@pytest.fixture(scope="module")
def box(local_executor):
    sandbox = KubernetesSandbox(connection="url", url=local_executor, timeout_s=10)
    sandbox.start()
    yield sandbox
    sandbox.stop()


def test_number_string_and_print_do_not_mix(box):
    assert box.execute("print('{not json'); result = {'type': 'number', 'value': 41 + 1}", env()) == {
        "type": "number",
        "value": 42,
    }
    assert box.last_response["stdout"].startswith("{not json")
    assert box.execute("result = {'type': 'string', 'value': 'ok'}", env()) == {"type": "string", "value": "ok"}


def test_sql_dataframe_round_trip_keeps_dtypes(box):
    calls: list[str] = []
    code = (
        "df = execute_sql_query('SELECT * FROM sales')\n"
        "df = df[df['region'] == 'north']\n"
        "result = {'type': 'dataframe', 'value': df}"
    )
    result = box.execute(code, env(calls))
    assert calls == ["SELECT * FROM sales"]
    expected = sales()[sales()["region"] == "north"]
    pd.testing.assert_frame_equal(result["value"], expected)


def test_series_result(box):
    code = "df = execute_sql_query('SELECT * FROM sales')\nresult = {'type': 'dataframe', 'value': df['revenue']}"
    value = box.execute(code, env())["value"]
    assert isinstance(value, pd.Series) and value.name == "revenue"


def test_dynamic_sql_round_trip(box):
    calls: list[str] = []
    code = (
        "t = 'sales'\n"
        "df = execute_sql_query('SELECT * FROM ' + t)\n"
        "result = {'type': 'number', 'value': int(df['units'].sum())}"
    )
    assert box.execute(code, env(calls)) == {"type": "number", "value": 15}
    assert calls == ["SELECT * FROM sales"]


def test_dynamic_sql_longer_than_500_characters_round_trip(box):
    calls: list[str] = []
    columns = ", ".join(f"units AS u{i}" for i in range(80))
    code = (
        f"cols = {columns!r}\n"
        "df = execute_sql_query('SELECT ' + cols + ' FROM sales')\n"
        "result = {'type': 'number', 'value': int(df['units'].sum())}"
    )
    query = f"SELECT {columns} FROM sales"
    assert len(query) > 1000
    assert box.execute(code, env(calls)) == {"type": "number", "value": 15}
    assert calls == [query]


def test_plot_from_pandasai_chart_path(box):
    code = (
        "import matplotlib.pyplot as plt\n"
        "df = execute_sql_query('SELECT * FROM sales')\n"
        "df.plot(x='day', y='revenue')\n"
        "plt.savefig('exports/charts/temp_chart_0b7d.png')\n"
        "result = {'type': 'plot', 'value': 'exports/charts/temp_chart_0b7d.png'}"
    )
    result = box.execute(code, env())
    assert result["type"] == "plot"
    assert result["value"].startswith("data:image/png;base64,iVBOR")


def test_error_carries_the_traceback(box):
    with pytest.raises(SandboxExecutionError) as info:
        box.execute("df = execute_sql_query('SELECT * FROM sales')\nx = df['nope']", env())
    assert info.value.error_type == "KeyError"
    assert isinstance(info.value, CodeExecutionError)  # PandasAI retries it, then answers ErrorResponse
    shown = "".join(traceback.format_exception(info.value))  # what PandasAI's format_exc() shows
    assert 'File "<string>", line 2' in shown and "KeyError: 'nope'" in shown


def test_timeout(box):
    box.timeout_s = 1.0
    try:
        with pytest.raises(SandboxTimeoutError):
            box.execute("import time\ntime.sleep(30)\nresult = {'type': 'number', 'value': 1}", env())
    finally:
        box.timeout_s = 10.0
    assert box.execute("result = {'type': 'number', 'value': 1}", env())["value"] == 1


def test_uploaded_parquet_and_csv_are_readable(box):
    box.upload_dataframe(sales(), "sales")
    box.transfer_file(sales(), "sales.csv")
    code = (
        "a = load_dataset('sales.parquet')\n"
        "b = pd.read_csv('sales.csv')\n"
        "result = {'type': 'number', 'value': len(a) + len(b)}"
    )
    assert box.execute(code, env())["value"] == 8


def test_a_second_client_cannot_claim_the_same_executor(box, local_executor):
    other = KubernetesSandbox(connection="url", url=local_executor)
    with pytest.raises(SandboxStartError, match="already claimed"):
        other.start()


def test_check_cli_in_url_mode(fresh_local_executor):
    proc = subprocess.run(
        [sys.executable, "-m", "pod_sandbox.client", "check", "--connection", "url", "--url", fresh_local_executor],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"ok": true' in proc.stdout
