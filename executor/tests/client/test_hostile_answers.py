"""A compromised sandbox cannot crash, exhaust or hang the PandasAI host that calls it.

Every class of forged answer (``hostile_answers.py``) is sent by a loopback server to a real
client (``KubernetesSandbox``, the shipped ``AnswerLimits``) running in its own process under
``RLIMIT_AS`` = 1 GiB (``answer_worker.py``): each must end in a clean, typed error (PandasAI's
``CodeExecutionError`` family for a refused answer, ``SandboxConnectionError`` for a late or
cut one), never a ``MemoryError`` or a dead process, within the client's own deadline, and with
the process's peak memory barely moved. The same worker reading the rows bomb the way the
client did before its bounds (``pandas.read_parquet``) is the baseline: it runs out of memory.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

import hostile_answers as h
from pod_sandbox.limits import DEFAULT_LIMITS

pytest.importorskip("pyarrow")

AS_LIMIT = 1 << 30
#: Peak RSS one answer may add to the client: its body read (a chunked body is joined, so twice
#: the cap) and a little more. What the answer claims (rows, sizes) does not enter.
PEAK_BOUND_KB = (2 * DEFAULT_LIMITS.max_response_bytes + (32 << 20)) >> 10
DEADLINE_GRACE_S = 15.0  # protocol.ExecutorClient.execute: the read deadline is timeout_s + 15 s
SLOW_TIMEOUT_S = 0.5

REFUSED = "SandboxAnswerRefused"
LOST = "SandboxConnectionError"


def _cases() -> dict[str, tuple[Any, str, str]]:
    """name -> (answer factory, expected exception class, text the field/limit/message must hold)."""
    ok = h.response
    huge = 10 ** 18
    return {
        # HTTP framing
        "content_length_huge": (lambda: iter([b"HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n",
                                             b"{" * (1 << 20)]), REFUSED, "max_response_bytes"),
        "chunked_endless": (h.endless_chunked, REFUSED, "max_response_bytes"),
        "header_line_huge": (lambda: iter([b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * (1 << 20) + b"\r\n\r\n"]),
                             REFUSED, "headers"),
        "headers_many": (lambda: iter([b"HTTP/1.1 200 OK\r\n" + b"X-A: a\r\n" * 10_000 + b"\r\n"]),
                         REFUSED, "headers"),
        "truncated_body": (lambda: iter([b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{\"status\""]),
                           LOST, "connection lost"),
        "not_http": (lambda: iter([b"SSH-2.0-OpenSSH\r\n\r\n"]), LOST, "connection lost"),
        "busy_retry_after_nan": (lambda: iter([h.http_answer(b"{}", status="429 Too Many Requests",
                                                             headers="Retry-After: nan\r\n")]),
                                 LOST, "stayed busy"),
        "busy_retry_after_long": (lambda: iter([h.http_answer(b"{}", status="429 Too Many Requests",
                                                              headers="Retry-After: 1000000\r\n")]),
                                  LOST, "stayed busy"),
        "slowloris_headers": (h.dribble(b"HTTP/1.1 200 OK\r\n", b"X", 0.2, 120), LOST, "no answer within"),
        "slowloris_body": (h.dribble(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n", b" ", 0.2, 120),
                           LOST, "no answer within"),
        # JSON
        "json_deep_nesting": (h.raw_json("[" * 200_000 + "]" * 200_000), REFUSED, "max_json_depth"),
        "json_deep_but_parseable": (h.raw_json('{"stdout": ' + "[" * 500 + "]" * 500 + "}"),
                                    REFUSED, "max_json_depth"),
        "json_giant_int": (h.raw_json(json.dumps(ok())[:-1] + ', "x": ' + "9" * 100_000 + "}"),
                           REFUSED, "max_number_digits"),
        "json_nan_literal": (h.raw_json(json.dumps(ok(duration_ms=float("nan")))), REFUSED, "NaN"),
        "json_float_overflow": (h.raw_json(json.dumps(ok())[:-1] + ', "x": 1e999}'), REFUSED, "not finite"),
        "json_too_many_values": (h.raw_json('{"stdout": [' + "0," * 3_000_000 + "0]}"),
                                 REFUSED, "max_json_values"),
        "json_not_json": (h.raw_json("{'status': 'ok'"), REFUSED, "not JSON"),
        # numbers and types the pod reports
        "rss_1e18": (h.json_answer(ok(peak_rss_bytes=huge)), REFUSED, "max_peak_rss_bytes"),
        "rss_negative": (h.json_answer(ok(peak_rss_bytes=-1)), REFUSED, "minimum of 0"),
        "rss_float": (h.json_answer(ok(peak_rss_bytes=1.5)), REFUSED, "peak_rss_bytes"),
        "rss_string": (h.json_answer(ok(peak_rss_bytes="1")), REFUSED, "peak_rss_bytes"),
        "rss_bool": (h.json_answer(ok(peak_rss_bytes=True)), REFUSED, "peak_rss_bytes"),
        "duration_negative": (h.json_answer(ok(duration_ms=-5)), REFUSED, "duration_ms"),
        "duration_huge": (h.json_answer(ok(duration_ms=1e300)), REFUSED, "duration_grace_ms"),
        "duration_string": (h.json_answer(ok(duration_ms="NaN")), REFUSED, "duration_ms"),
        "status_forged": (h.json_answer(ok(status="pwned")), REFUSED, "status"),
        "status_wrong_type": (h.json_answer(ok(status=["ok"])), REFUSED, "status"),
        "truncated_flag_wrong_type": (h.json_answer(ok(stdout_truncated="no")), REFUSED, "stdout_truncated"),
        "stdout_over_the_cap": (h.json_answer(ok(stdout="x" * 70_000)), REFUSED, "stdout"),
        "stdout_wrong_type": (h.json_answer(ok(stdout={"a": 1})), REFUSED, "stdout"),
        "error_traceback_huge": (h.json_answer(ok(status="error", error={
            "type": "E", "message": "m", "traceback": "t" * (5 << 20)})), REFUSED, "max_error_chars"),
        "error_missing": (h.json_answer(ok(status="error")), REFUSED, "error"),
        "request_id_huge": (h.json_answer(ok(request_id="r" * 10_000)), REFUSED, "request_id"),
        # results
        "parquet_rows_bomb": (lambda: h.frame_answer(h.rows_bomb())(), REFUSED, "max_rows"),
        "parquet_columns_bomb": (lambda: h.frame_answer(h.columns_bomb())(), REFUSED, "max_columns"),
        "parquet_dictionary_bomb": (lambda: h.frame_answer(h.dictionary_bomb())(), REFUSED, "max_frame_bytes"),
        "parquet_zstd_bomb": (lambda: h.frame_answer(h.page_bomb(300 << 20, "zstd"))(), REFUSED,
                              "max_frame_bytes"),
        "parquet_gzip_bomb": (lambda: h.frame_answer(h.page_bomb(300 << 20, "gzip"))(), REFUSED,
                              "max_frame_bytes"),
        "parquet_leaves_bomb": (lambda: h.frame_answer(h.leaves_bomb())(), REFUSED, "max_cells"),
        "parquet_pandas_metadata_dtype": (lambda: h.frame_answer(h.pandas_metadata_dtype())(), REFUSED,
                                          "pandas metadata"),
        "parquet_deep_type": (lambda: h.frame_answer(h.deep_type())(), REFUSED, "max_type_depth"),
        "parquet_garbage": (h.frame_answer(b"PAR1" + os.urandom(4096) + b"PAR1"), REFUSED, "result"),
        "parquet_truncated": (lambda: h.frame_answer(h.columns_bomb(10)[:-30])(), REFUSED, "result"),
        "base64_invalid": (h.json_answer(ok({"type": "dataframe", "value": {
            "encoding": "parquet+base64", "kind": "dataframe", "data": "!!!" * 1000}})), REFUSED, "base64"),
        "json_split_dtype_bomb": (h.json_answer(ok({"type": "dataframe", "value": {
            "encoding": "json-split", "kind": "dataframe", "dtypes": {"a": "S1000000000"},
            "data": {"columns": ["a"], "index": list(range(1000)), "data": [["x"]] * 1000}}})),
            "none", ""),
        "json_split_ragged": (h.json_answer(ok({"type": "dataframe", "value": {
            "encoding": "json-split", "kind": "dataframe",
            "data": {"columns": ["a"], "index": [0], "data": [[1, 2, 3]]}}})), REFUSED, "data"),
        "plot_side": (h.json_answer(ok({"type": "plot", "value": wire_png(h.png_header(100_000, 10))})),
                      REFUSED, "max_plot_side"),
        "plot_pixels": (h.json_answer(ok({"type": "plot", "value": wire_png(h.png_header(30_000, 30_000))})),
                        REFUSED, "max_plot_pixels"),
        "plot_not_png": (h.json_answer(ok({"type": "plot", "value": wire_png(b"GIF89a" + bytes(64))})),
                         REFUSED, "PNG"),
        "number_wrong_type": (h.json_answer(ok({"type": "number", "value": [1]})), REFUSED, "result"),
        "result_type_forged": (h.json_answer(ok({"type": "exec", "value": "import os"})), REFUSED, "result"),
    }


def wire_png(data: bytes) -> str:
    import base64  # noqa: PLC0415

    return "data:image/png;base64," + base64.b64encode(data).decode()


CASES = _cases()


def _prepared(factory: Any) -> Any:
    """The answer's bytes made once, before any client waits for them (bombs take seconds to write).

    Named generator functions (endless and dribbled answers) stay generators.
    """
    if factory.__name__ != "<lambda>":
        return factory
    data = list(factory())
    return lambda: iter(data)


@pytest.fixture(scope="module")
def hostile() -> Iterator[h.HostileSandbox]:
    cases = {name: _prepared(spec[0]) for name, spec in CASES.items()}
    with h.HostileSandbox(cases, close_after=frozenset({"truncated_body", "not_http"})) as server:
        yield server


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


class Worker:
    """The client process under RLIMIT_AS; restarted when a case killed it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.proc: subprocess.Popen[str] | None = None

    def ask(self, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).with_name("answer_worker.py")), self.url],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=_limit_memory)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait(timeout_s)
            return {"error": "the client process died", "exit": code}
        return json.loads(line)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(30)


@pytest.fixture(scope="module")
def worker(hostile: h.HostileSandbox) -> Iterator[Worker]:
    w = Worker(hostile.url)
    yield w
    w.close()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_forged_answer_ends_in_a_clean_error_within_memory_and_deadline(case, worker):
    _factory, expected, text = CASES[case]
    slow = case.startswith("slowloris")
    timeout_s = SLOW_TIMEOUT_S if slow else 5.0
    outcome = worker.ask({"case": case, "timeout_s": timeout_s}, 120)
    print(f"\n{case}: {outcome}")
    if expected == "none":  # an answer that is harmless once bounded: decoded, memory bounded
        assert outcome["error"] is None, outcome
    else:
        assert outcome["error"] == expected, outcome
        where = f"{outcome.get('field')} {outcome.get('limit')} {outcome['message']}"
        assert text in where, outcome
        if expected == REFUSED:
            assert outcome["code_execution_error"], "PandasAI must see a CodeExecutionError (it reports, not crashes)"
    assert "MemoryError" not in json.dumps(outcome)
    assert outcome["added_peak_kb"] < PEAK_BOUND_KB, outcome
    deadline = timeout_s + DEADLINE_GRACE_S
    assert outcome["seconds"] < deadline * 1.5, outcome
    if slow:  # the server would have dribbled for 120 s: the client's deadline ended it
        assert outcome["seconds"] >= deadline * 0.9, outcome


@pytest.mark.timeout(300)
def test_the_unbounded_read_of_the_rows_bomb_runs_out_of_memory_under_the_same_limit(worker, tmp_path):
    """The baseline: what the 1 GiB bound does to the client's old decode (pandas.read_parquet)."""
    path = tmp_path / "rows.parquet"
    path.write_bytes(h.rows_bomb())
    outcome = worker.ask({"baseline": str(path)}, 120)
    assert outcome["error"] in ("MemoryError", "ArrowMemoryError", "the client process died"), outcome


def test_pandasais_agent_reports_a_refused_answer_and_keeps_running(hostile):
    """Through PandasAI's own Agent: its retry, then ``ErrorResponse``; no exception, no crash."""
    pai = pytest.importorskip("pandasai")
    import pandas as pd  # noqa: PLC0415
    from pandasai import Agent  # noqa: PLC0415
    from pandasai.llm.base import LLM  # noqa: PLC0415

    from pod_sandbox.client import KubernetesSandbox  # noqa: PLC0415

    class StubLLM(LLM):
        calls = 0

        @property
        def type(self) -> str:
            return "stub"

        def call(self, instruction, context=None) -> str:  # noqa: ANN001 - PandasAI's signature
            StubLLM.calls += 1
            return (f"```python\ncase = 'parquet_rows_bomb'\ndf = execute_sql_query('SELECT a FROM {table}')\n"
                    "result = {'type': 'dataframe', 'value': df}\n```")

    frame = pai.DataFrame(pd.DataFrame({"a": [1, 2]}))
    table = frame.schema.name
    with KubernetesSandbox(connection="url", url=hostile.url, token="t" * 43, echo_output=False) as box:
        agent = Agent(frame, config={"llm": StubLLM(), "max_retries": 1}, sandbox=box)
        answer = agent.chat("anything")
    assert type(answer).__name__ == "ErrorResponse", answer
    assert "max_rows" in str(answer.error)
    assert StubLLM.calls == 2  # PandasAI asked the LLM to fix the code once, as for any failure
