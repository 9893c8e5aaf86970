"""The HTTP contract, tested against a real executor process over loopback."""

from __future__ import annotations

import ast
import io
import json
import re
import signal
import threading
import time

import pandas as pd
import pytest

from pod_sandbox import wire
from server_process import start_executor

JSON = {"Content-Type": "application/json"}


def test_health_and_ready_need_no_token(server):
    r = server.request("GET", "/health", auth=False)
    assert r.status == 200 and r.json() == {"status": "ok"}
    r = server.request("GET", "/ready", auth=False)
    assert r.status == 200 and r.json()["ready"] is True


def test_info_reports_versions_and_limits(server):
    info = server.request("GET", "/v1/info").json()
    assert info["versions"]["pandas"] == "2.2.3"
    assert info["versions"]["numpy"] == "1.26.4"
    assert info["versions"]["matplotlib"] == "3.7.5"
    assert info["versions"]["pyarrow"] == "18.1.0"
    assert info["versions"]["python"].startswith("3.11")
    assert info["limits"]["max_output_bytes"] == 64 * 1024
    assert info["limits"]["slots"] == 2


def test_children_carry_none_of_the_http_side(server):
    """The fork-server is forked before Bottle, prometheus_client and the app are imported: user
    code's process holds none of them (less memory to fork, less server code within reach)."""
    body = server.run("import sys\nresult = {'type': 'string', 'value': ' '.join(sorted(m for m in sys.modules "
                      "if m.split('.')[0] in ('bottle', 'prometheus_client', 'waitress') "
                      "or m in ('pod_sandbox.executor.app', 'pod_sandbox.executor.auth', "
                      "'pod_sandbox.executor.metrics')))}")
    assert body["status"] == "ok" and body["result"]["value"] == "", body


def test_number_string_none_results(server):
    assert server.run('result = {"type": "number", "value": np.int64(41) + 1}')["result"] == \
        {"type": "number", "value": 42, "number_type": "numpy.int64"}
    assert server.run('result = {"type": "number", "value": float("nan")}')["result"]["value"] == "NaN"
    assert server.run('result = {"type": "string", "value": "héllo"}')["result"] == \
        {"type": "string", "value": "héllo"}
    assert server.run("x = 1")["result"] == {"type": "none", "value": None}


def test_print_never_corrupts_the_result(server):
    body = server.run('print("{\\"type\\": \\"string\\"}")\nimport sys\nsys.stdout.write("x" * 10)\n'
                      'result = {"type": "string", "value": "real"}')
    assert body["status"] == "ok"
    assert body["result"] == {"type": "string", "value": "real"}
    assert body["stdout"].startswith('{"type": "string"}\n')


def test_dataframe_roundtrip_keeps_dtypes(server):
    code = (
        "df = pd.DataFrame({'i': pd.array([1, None, 3], dtype='Int64'), 'f': [1.5, 2.5, None],\n"
        "  't': pd.to_datetime(['2024-01-01', '2024-02-01', '2024-03-01']).tz_localize('UTC'),\n"
        "  'c': pd.Categorical(['a', 'b', 'a']), 's': ['x', 'y', 'z']}, index=pd.Index([10, 20, 30], name='k'))\n"
        "result = {'type': 'dataframe', 'value': df}"
    )
    body = server.run(code)
    assert body["status"] == "ok", body
    value = body["result"]["value"]
    assert value["encoding"] == "parquet+base64"
    assert value["dtypes"]["t"] == "datetime64[ns, UTC]"
    df = wire.decode_result(body["result"])["value"]
    assert str(df["i"].dtype) == "Int64"
    assert str(df["c"].dtype) == "category"
    assert str(df["t"].dtype) == "datetime64[ns, UTC]"
    assert df.index.name == "k" and list(df.index) == [10, 20, 30]
    assert pd.isna(df["i"].iloc[1])


def test_series_result(server):
    body = server.run("result = {'type': 'dataframe', 'value': pd.Series([1, 2], name='n')}")
    s = wire.decode_result(body["result"])["value"]
    assert isinstance(s, pd.Series) and s.name == "n" and list(s) == [1, 2]


def test_plot_from_pandasai_chart_path_and_from_open_figure(server):
    code = ("plt.plot([1, 2, 3])\nplt.savefig('exports/charts/temp_chart_0b9e.png')\n"
            "result = {'type': 'plot', 'value': 'exports/charts/temp_chart_0b9e.png'}")
    body = server.run(code)
    assert body["status"] == "ok", body
    assert body["result"]["value"].startswith("data:image/png;base64,iVBOR")
    body = server.run("fig, ax = plt.subplots()\nax.bar(['a'], [1])\nresult = {'type': 'plot', 'value': 'missing.png'}")
    assert body["result"]["value"].startswith("data:image/png;base64,")


def test_user_code_threads_logs_and_draws_text_in_every_execution(server):
    """Spares are forked without CPython's after-fork hooks (fastfork): threads, logging and
    matplotlib's fonts must still work, execution after execution."""
    code = ("import threading, logging\n"
            "out = []\n"
            "t = threading.Thread(target=lambda: out.append(threading.current_thread().name))\n"
            "t.start(); t.join()\n"
            "logging.getLogger('user').warning('drawn')\n"
            "fig, ax = plt.subplots()\n"
            "ax.set_title('Sales by region'); ax.text(0.5, 0.5, 'north')\n"
            "fig.canvas.draw()\n"
            "assert out and out[0] != threading.main_thread().name and threading.active_count() == 1\n"
            "result = {'type': 'plot', 'value': 'missing.png'}")
    for _ in range(3):
        body = server.run(code)
        assert body["status"] == "ok", body
        assert body["result"]["value"].startswith("data:image/png;base64,")
        assert "drawn" in body["stderr"]


def test_error_carries_traceback(server):
    body = server.run("def f():\n    raise KeyError('nope')\nf()")
    assert body["status"] == "error"
    assert body["error"]["type"] == "KeyError"
    assert "line 2, in f" in body["error"]["traceback"]
    assert body["result"] == {"type": "none", "value": None}
    body = server.run("result = {'type': 'string', 'value': 3}")
    assert body["status"] == "error" and body["error"]["type"] == "ResultError"


def test_each_execution_is_fresh(server):
    server.run("import builtins\nbuiltins.LEAK = 1\nopen('left.txt', 'w').write('x')")
    body = server.run("import builtins, os\nresult = {'type': 'string', 'value': "
                      "str(hasattr(builtins, 'LEAK')) + str(os.path.exists('left.txt'))}")
    assert body["result"]["value"] == "FalseFalse"


def test_each_execution_draws_its_own_random_numbers(server):
    """fork() copies numpy's global generator: without a fresh seed per spare every execution
    drew the same numbers (and DataFrame.sample the same rows). Python's random reseeds itself."""
    code = ("import random\nresult = {'type': 'string', 'value': repr((np.random.rand(), "
            "pd.DataFrame({'a': range(1000)}).sample(3).index.tolist(), random.random()))}")
    draws = [ast.literal_eval(server.run(code)["result"]["value"]) for _ in range(4)]
    for source in range(3):  # numpy's generator, a sample of rows, Python's random
        assert len({repr(draw[source]) for draw in draws}) == 4, draws


def test_files_upload_list_read_delete_and_use(server):
    df = pd.DataFrame({"region": ["n", "s", "n"], "sales": [1.0, 2.0, 3.5]})
    buf = io.BytesIO()
    df.to_parquet(buf)
    r = server.request("PUT", "/v1/files/sales.parquet", buf.getvalue(), {"Content-Type": "application/octet-stream"})
    assert r.status == 201 and r.json() == {"name": "sales.parquet", "size": len(buf.getvalue())}
    r = server.request("PUT", "/v1/files/more.csv", b"a,b\n1,2\n")
    assert r.status == 201
    names = [f["name"] for f in server.request("GET", "/v1/files").json()["files"]]
    assert {"sales.parquet", "more.csv"} <= set(names)
    assert server.request("GET", "/v1/files/more.csv").body == b"a,b\n1,2\n"
    body = server.run("df = pd.read_parquet('sales.parquet')\n"
                      "result = {'type': 'number', 'value': df.groupby('region')['sales'].sum()['n']}")
    assert body["result"]["value"] == 4.5, body
    body = server.run(
        "df = execute_sql_query('SELECT * FROM sales')\nresult = {'type': 'number', 'value': len(df)}",
        datasets={"SELECT * FROM sales": "sales.parquet"})
    assert body["result"]["value"] == 3, body
    body = server.run("execute_sql_query('SELECT 1')")
    assert body["status"] == "error" and body["error"]["type"] == "MissingDatasetError"
    assert body["error"]["query"] == "SELECT 1"
    long_query = "SELECT " + ", ".join(f"sales AS s{i}" for i in range(100)) + " FROM sales"
    body = server.run(f"execute_sql_query({long_query!r})")
    assert body["error"]["type"] == "MissingDatasetError" and body["error"]["query"] == long_query, body
    assert len(body["error"]["message"]) < 500
    assert server.request("DELETE", "/v1/files/more.csv").status == 204
    assert server.request("DELETE", "/v1/files/more.csv").status == 404
    assert server.request("GET", "/v1/files/more.csv").status == 404


@pytest.mark.parametrize("path,method", [("/v1/info", "GET"), ("/v1/files", "GET"), ("/v1/execute", "POST"),
                                         ("/v1/files/a.csv", "PUT"), ("/v1/shutdown", "POST")])
def test_token_required(server, path, method):
    r = server.request(method, path, b"{}", dict(JSON), auth=False)
    assert r.status == 401 and r.headers.get("www-authenticate") == "Bearer"
    r = server.request(method, path, b"{}", {**JSON, "Authorization": "Bearer wrong-token-xxxxxxxxxxxxxxxxxxxxx"})
    assert r.status == 401


def test_execute_request_validation_names_the_field(server):
    cases = [
        (b"{", 400, "body"),
        (b"[]", 400, "body"),
        (json.dumps({}).encode(), 400, "code"),
        (json.dumps({"code": 1}).encode(), 400, "code"),
        (json.dumps({"code": "", "timeout_s": "1"}).encode(), 400, "timeout_s"),
        (json.dumps({"code": "", "timeout_s": 10_000}).encode(), 400, "timeout_s"),
        (json.dumps({"code": "", "max_output_bytes": -1}).encode(), 400, "max_output_bytes"),
        (json.dumps({"code": "", "datasets": {"q": "../x"}}).encode(), 400, "datasets"),
        (json.dumps({"code": "", "surprise": 1}).encode(), 400, "surprise"),
    ]
    for body, status, field_name in cases:
        r = server.request("POST", "/v1/execute", body, JSON)
        assert r.status == status, (body, r.status, r.body)
        assert r.json()["error"]["field"] == field_name, (body, r.body)
    r = server.request("POST", "/v1/execute", b'{"code": ""}', {"Content-Type": "text/plain"})
    assert r.status == 415 and r.json()["error"]["field"] == "Content-Type"


def test_openapi_document_matches_served_routes(server):
    served = json.loads(server.request("GET", "/openapi.json", auth=False).body)
    from pod_sandbox.executor.app import load_openapi

    assert served == load_openapi()
    documented = {(m.upper(), re.sub(r"\{(\w+)\}", r"<\1>", p))
                  for p, ops in served["paths"].items() for m in ops}
    assert documented == _live_routes()


def _live_routes() -> set[tuple[str, str]]:
    from unittest import mock

    from pod_sandbox.executor.app import ServerState, create_app
    from pod_sandbox.executor.auth import TokenStore
    from pod_sandbox.executor.config import Config
    from pod_sandbox.executor.files import Workspace
    from pod_sandbox.executor.metrics import Metrics

    app = create_app(Config(), mock.Mock(), TokenStore(None, False), Workspace("/nonexistent", 1),
                     Metrics(), ServerState())
    return {(r.method, r.rule) for r in app.routes}


def test_metrics_expose_executions(server):
    server.run("result = {'type': 'number', 'value': 1}")
    text = server.request("GET", "/metrics", auth=False).body.decode()
    assert 'pandasai_executor_executions_total{status="ok"}' in text
    assert "pandasai_executor_execution_duration_seconds_bucket" in text
    assert "pandasai_executor_inflight" in text
    assert "pandasai_executor_child_peak_rss_bytes_bucket" in text
    assert "pandasai_executor_timeouts_total" in text


def test_busy_slots_answer_429_with_retry_after(server):
    results = []

    def slow():
        results.append(server.execute("import time\ntime.sleep(1.5)").status)

    threads = [threading.Thread(target=slow) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    r = server.execute("x = 1")
    for t in threads:
        t.join()
    assert results == [200, 200]
    assert r.status == 429 and r.headers["retry-after"] == "1"


def test_claim_once_then_409():
    proc = start_executor("--slots", "1", claimable=True)
    try:
        assert proc.execute("x = 1").status == 401
        assert proc.request("POST", "/v1/claim", b'{"token": "short"}', JSON).status == 400
        token = "c" * 40
        r = proc.request("POST", "/v1/claim", json.dumps({"token": token}), JSON)
        assert r.status == 200
        assert proc.request("POST", "/v1/claim", json.dumps({"token": "d" * 40}), JSON).status == 409
        proc.token = token
        assert proc.run("result = {'type': 'number', 'value': 7}")["result"]["value"] == 7
        proc.token = "d" * 40
        assert proc.execute("x = 1").status == 401
    finally:
        proc.stop()


def test_shutdown_drains_and_exits_zero():
    proc = start_executor("--slots", "1")
    try:
        done = []
        t = threading.Thread(target=lambda: done.append(proc.run("import time\ntime.sleep(1)\n"
                                                                  "result={'type':'number','value':1}")))
        t.start()
        time.sleep(0.4)
        assert proc.request("POST", "/v1/shutdown", b"").status == 202
        t.join(10)
        assert done and done[0]["status"] == "ok"
        assert proc.proc.wait(10) == 0
        assert not proc.tree()
    finally:
        proc.stop()


def test_sigterm_stops_promptly_and_kills_running_code():
    proc = start_executor("--slots", "1")
    try:
        t = threading.Thread(target=lambda: proc.execute("import time\ntime.sleep(60)"), daemon=True)
        t.start()
        time.sleep(0.5)
        tree = proc.tree()
        assert len(tree) >= 3
        t0 = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(10) == 0
        assert time.monotonic() - t0 < 5
        time.sleep(0.2)
        assert all(not p.is_running() or p.status() == "zombie" for p in tree)
    finally:
        proc.stop()


def test_python_dash_m_and_console_script_exist():
    import shutil
    import subprocess
    import sys

    exe = shutil.which("pod-sandbox-executor") or f"{sys.prefix}/bin/pod-sandbox-executor"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "--token-file" in out and "--claimable" in out
    out = subprocess.run([sys.executable, "-m", "pod_sandbox.executor", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--slots" in out
