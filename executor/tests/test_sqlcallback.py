"""SQL by call-back against a real executor: each query asked once, in order, while the code
waits; and the channel attacked from both ends (a hostile child on its pipes, a client that
answers too much, too late or never). Every case: /health stays up, nothing is left behind."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from typing import Any, Callable, Iterator

import pandas as pd
import pytest

from server_process import ExecutorProcess, HealthPoller, sandbox_uid_tasks, start_executor

pytestmark = pytest.mark.timeout(180)
PARQUET = "application/vnd.apache.parquet"
MAX_QUERY_BYTES = 64 * 1024
MAX_QUERIES = 20


@pytest.fixture(scope="module")
def server() -> Iterator[ExecutorProcess]:
    """Tight call-back limits, so that each bound is reached quickly."""
    proc = start_executor(
        "--slots", "2", "--timeout", "5", "--max-timeout", "20", "--memory-mb", "512",
        "--max-processes", str(sandbox_uid_tasks() + 48),
        "--max-query-bytes", str(MAX_QUERY_BYTES), "--max-query-total-bytes", str(4 * MAX_QUERY_BYTES),
        "--max-queries", str(MAX_QUERIES), "--max-query-chars", "4096", "--query-timeout", "1.5",
    )
    yield proc
    proc.stop()


def parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf)
    return buf.getvalue()


def post_answer(server: ExecutorProcess, event: dict[str, Any], body: bytes, ctype: str = PARQUET,
                seq: int | None = None, headers: dict[str, str] | None = None) -> Any:
    path = f"/v1/executions/{event['execution']}/queries/{event['query']['seq'] if seq is None else seq}"
    return server.request("POST", path, body, {"Content-Type": ctype, **(headers or {})})


def run(server: ExecutorProcess, code: str, answer: Callable[[dict[str, Any]], tuple[bytes, str]],
        **fields: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One call-back execution answered by ``answer(query)``; the final response and the queries."""
    event = server.run(code, sql_callback=True, **fields)
    asked = []
    while event["status"] == "query":
        asked.append(event["query"])
        body, ctype = answer(event["query"])
        r = post_answer(server, event, body, ctype)
        assert r.status == 200, (r.status, r.body[:300])
        event = r.json()
    return event, asked


def by_number(query: dict[str, Any]) -> tuple[bytes, str]:
    """Answers ``SELECT <n> ...`` with a frame of one row {"n": n}."""
    return parquet(pd.DataFrame({"n": [int(query["sql"].split()[1])]})), PARQUET


def error(kind: str, message: str) -> tuple[bytes, str]:
    return json.dumps({"error": {"type": kind, "message": message}}).encode(), "application/json"


def clean(server: ExecutorProcess, poller: HealthPoller) -> None:
    assert server.wait_no_leftovers() == []
    assert not poller.failures, poller.failures
    assert server.proc.poll() is None


def test_each_query_is_asked_once_in_order_while_the_code_waits(server: ExecutorProcess) -> None:
    code = ("print('start')\ntotal = 0\n"
            "for i in range(12):\n    total += int(execute_sql_query(f'SELECT {i} AS n')['n'].iloc[0])\n"
            "    print('got', i)\nresult = {'type': 'number', 'value': total}\n")
    with HealthPoller(server) as poller:
        final, asked = run(server, code, by_number)
    assert final["status"] == "ok", final
    assert final["result"] == {"type": "number", "value": sum(range(12)), "number_type": "builtins.int"}
    assert [q["seq"] for q in asked] == list(range(1, 13))
    assert [q["sql"] for q in asked] == [f"SELECT {i} AS n" for i in range(12)]
    assert final["stdout"] == "start\n" + "".join(f"got {i}\n" for i in range(12))  # once: no re-run
    assert all(q["max_bytes"] <= MAX_QUERY_BYTES and q["timeout_s"] == 1.5 for q in asked)
    clean(server, poller)


def test_the_dtypes_and_index_of_an_answer_reach_the_code(server: ExecutorProcess) -> None:
    frame = pd.DataFrame({"i": pd.array([1, None], dtype="Int64"), "c": pd.Categorical(["a", "b"]),
                          "t": pd.date_range("2024-01-01", periods=2, tz="UTC")},
                         index=pd.Index(["x", "y"], name="key"))
    code = ("df = execute_sql_query('SELECT *')\n"
            "result = {'type': 'string', 'value': repr((dict(df.dtypes.astype(str)), list(df.index), df.index.name))}")
    final, _ = run(server, code, lambda q: (parquet(frame), PARQUET))
    assert final["status"] == "ok", final
    assert final["result"]["value"] == repr((dict(frame.dtypes.astype(str)), ["x", "y"], "key"))


def test_a_host_error_is_raised_inside_the_code_under_its_own_name(server: ExecutorProcess) -> None:
    caught = ("try:\n    execute_sql_query('SELECT profit')\nexcept Exception as exc:\n"
              "    name = f'{type(exc).__module__}.{type(exc).__qualname__}: {exc}'\n"
              "result = {'type': 'string', 'value': name}\n")
    final, _ = run(server, caught, lambda q: error("_duckdb.BinderException", "Binder Error: no profit"))
    assert final["result"]["value"] == "_duckdb.BinderException: Binder Error: no profit"
    final, _ = run(server, "execute_sql_query('SELECT profit')",
                   lambda q: error("_duckdb.BinderException", "Binder Error: no profit"))
    assert final["status"] == "error" and final["error"]["type"] == "BinderException", final
    assert final["error"]["traceback"].rstrip().endswith("_duckdb.BinderException: Binder Error: no profit")
    final, _ = run(server, "execute_sql_query('x')", lambda q: error("KeyError", "'k'"))
    assert final["error"]["type"] == "KeyError"  # a builtin stays the builtin class


def test_a_body_that_is_not_parquet_fails_inside_the_code(server: ExecutorProcess) -> None:
    code = ("try:\n    execute_sql_query('SELECT 1')\nexcept Exception as exc:\n    kind = type(exc).__name__\n"
            "result = {'type': 'string', 'value': kind}\n")
    with HealthPoller(server) as poller:
        final, _ = run(server, code, lambda q: (b"PAR1 not really", PARQUET))
    assert final["status"] == "ok" and final["result"]["value"] == "ArrowInvalid", final
    clean(server, poller)


def test_an_oversized_answer_is_refused_and_the_query_stays_pending(server: ExecutorProcess) -> None:
    event = server.run("df = execute_sql_query('SELECT 7 AS n')\nresult = {'type': 'number', 'value': int(df.n[0])}",
                       sql_callback=True)
    assert event["status"] == "query" and event["query"]["max_bytes"] == MAX_QUERY_BYTES
    too_big = b"x" * (MAX_QUERY_BYTES + 1)
    assert post_answer(server, event, too_big).status == 413
    r = post_answer(server, event, by_number(event["query"])[0])
    assert r.status == 200 and r.json()["result"]["value"] == 7, r.body[:300]


def test_the_answers_of_one_execution_share_a_byte_budget(server: ExecutorProcess) -> None:
    code = ("for i in range(8):\n    execute_sql_query(f'SELECT {i}')\nresult = {'type': 'number', 'value': 1}")
    blob = parquet(pd.DataFrame({"b": [os.urandom(MAX_QUERY_BYTES // 2)]}))  # incompressible
    event = server.run(code, sql_callback=True)
    budgets = []
    while event["status"] == "query":
        budgets.append(event["query"]["max_bytes"])
        body = blob if len(blob) <= event["query"]["max_bytes"] else error("pod_sandbox.QueryResultTooLarge", "x")[0]
        r = post_answer(server, event, body, PARQUET if body is blob else "application/json")
        assert r.status == 200, r.body[:200]
        event = r.json()
    assert budgets[0] == MAX_QUERY_BYTES and budgets[-1] < MAX_QUERY_BYTES and budgets == sorted(budgets, reverse=True)
    assert event["status"] == "error" and event["error"]["type"] == "QueryResultTooLarge"


def test_more_than_max_queries_raise_in_the_code_without_asking_the_client(server: ExecutorProcess) -> None:
    code = ("raised = []\nfor i in range(30):\n    try:\n        execute_sql_query(f'SELECT {i}')\n"
            "    except Exception as exc:\n        raised.append(f'{type(exc).__module__}.{type(exc).__name__}')\n"
            "result = {'type': 'string', 'value': ','.join(sorted(set(raised))) + f':{len(raised)}'}\n")
    final, asked = run(server, code, by_number)
    assert len(asked) == MAX_QUERIES
    assert final["result"]["value"] == f"pod_sandbox.TooManyQueries:{30 - MAX_QUERIES}", final


def test_a_client_that_never_answers_meets_the_query_deadline(server: ExecutorProcess) -> None:
    code = ("try:\n    execute_sql_query('SELECT 1')\nexcept TimeoutError as exc:\n    why = str(exc)\n"
            "result = {'type': 'string', 'value': why}\n")
    with HealthPoller(server) as poller:
        event = server.run(code, sql_callback=True)
        assert event["status"] == "query"
        deadline = time.monotonic() + 15
        while server.run("result = {'type': 'number', 'value': 1}")["status"] != "ok" \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        late = post_answer(server, event, by_number(event["query"])[0])
        # the code got TimeoutError after query_timeout_s, ended, and its execution is forgotten
        for _ in range(50):
            if late.status == 404:
                break
            time.sleep(0.1)
            late = post_answer(server, event, by_number(event["query"])[0])
        assert late.status == 404, late.status
        both = [threading.Thread(target=server.run, args=("result = {'type': 'number', 'value': 1}",))
                for _ in range(2)]
        for t in both:
            t.start()
        for t in both:
            t.join(30)
    clean(server, poller)  # both slots came back


def test_the_code_clock_stops_while_the_host_answers(server: ExecutorProcess) -> None:
    def slow(query: dict[str, Any]) -> tuple[bytes, str]:
        time.sleep(1.2)  # below query_timeout_s, and 3 of them above the code's timeout_s
        return by_number(query)

    code = "for i in range(3):\n    execute_sql_query(f'SELECT {i}')\nresult = {'type': 'number', 'value': 3}"
    final, asked = run(server, code, slow, timeout_s=2)
    assert final["status"] == "ok" and len(asked) == 3, final


def test_the_absolute_cap_ends_a_code_that_keeps_asking(server: ExecutorProcess) -> None:
    code = "while True:\n    try:\n        execute_sql_query('SELECT 1')\n    except Exception:\n        pass\n"
    with HealthPoller(server) as poller:
        # the client answers every query slowly; max_timeout_s (20 s) ends it whatever it waits for
        final, asked = run(server, code, lambda q: (time.sleep(0.9), by_number(q))[1], timeout_s=1)
    assert final["status"] in ("timeout", "error"), final
    assert len(asked) <= MAX_QUERIES
    clean(server, poller)


def test_answers_reach_only_their_own_execution(server: ExecutorProcess) -> None:
    code = ("import time\nvals = []\nfor i in range(5):\n    vals.append(int(execute_sql_query(f'SELECT {i}')['n'][0]))\n"
            "    time.sleep(0.01)\nresult = {'type': 'string', 'value': repr(vals)}\n")
    out: dict[int, dict[str, Any]] = {}

    def one(k: int) -> None:
        out[k] = run(server, code, lambda q: (parquet(pd.DataFrame({"n": [1000 * k + int(q["sql"].split()[1])]})),
                                              PARQUET))[0]

    threads = [threading.Thread(target=one, args=(k,)) for k in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for k in (1, 2):
        assert out[k]["result"]["value"] == repr([1000 * k + i for i in range(5)]), out[k]


HOSTILE_CHILD = {
    "garbage_on_the_result_pipe": "import os\nos.write(4, b'X' * 100)\nimport time\ntime.sleep(3)",
    "a_second_query_before_the_answer": ("import os, struct\nq = b'SELECT 1'\n"
                                         "os.write(4, b'Q' + struct.pack('!I', len(q)) + q + b'Q')\n"
                                         "import time\ntime.sleep(3)"),
    "a_query_longer_than_the_cap": ("import os, struct\nos.write(4, b'Q' + struct.pack('!I', 1 << 30))\n"
                                    "os.write(4, b'x' * 65536)\nimport time\ntime.sleep(3)"),
    "a_query_that_is_not_utf8": ("import os, struct\nos.write(4, b'Q' + struct.pack('!I', 2) + b'\\xff\\xfe')\n"
                                 "import time\ntime.sleep(3)"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_CHILD))
def test_a_child_breaking_the_protocol_is_killed(server: ExecutorProcess, name: str) -> None:
    with HealthPoller(server) as poller:
        event = server.run(HOSTILE_CHILD[name], sql_callback=True)
        while event["status"] == "query":  # a well-formed first query is answered
            event = post_answer(server, event, by_number(event["query"])[0]).json()
    assert event["status"] == "error" and event["error"]["type"] == "ProtocolViolation", event
    clean(server, poller)


def test_a_child_that_closed_its_answer_pipe_gets_an_error_not_a_hang(server: ExecutorProcess) -> None:
    code = ("import os\nos.close(3)\ntry:\n    execute_sql_query('SELECT 1')\nexcept Exception as exc:\n"
            "    kind = type(exc).__name__\nresult = {'type': 'string', 'value': kind}\n")
    with HealthPoller(server) as poller:
        final, _ = run(server, code, by_number)
    # the code got OSError (EBADF) and went on; if it wrote its result while the fork-server still
    # waited for the host's answer, that is a protocol violation: killed, never a hang
    assert (final["status"], final["result"]["value"]) == ("ok", "OSError") or \
        (final["status"], final["error"]["type"]) == ("error", "ProtocolViolation"), final
    clean(server, poller)


def test_a_child_flooding_questions_is_bounded(server: ExecutorProcess) -> None:
    code = "while True:\n    try:\n        execute_sql_query('SELECT 1')\n    except Exception:\n        pass\n"
    with HealthPoller(server) as poller:
        final, asked = run(server, code, by_number, timeout_s=2)
    assert final["status"] == "timeout", final
    assert len(asked) == MAX_QUERIES
    clean(server, poller)


BAD_ANSWERS = [
    ("wrong_content_type", "text/plain", b"x", 415),
    ("json_not_an_error", "application/json", b'{"rows": []}', 400),
    ("json_invalid", "application/json", b"{", 400),
    ("error_type_not_a_name", "application/json", json.dumps({"error": {"type": "a b;c", "message": ""}}).encode(), 400),
    ("error_message_too_long", "application/json",
     json.dumps({"error": {"type": "E", "message": "m" * 9000}}).encode(), 400),
]


@pytest.mark.parametrize("ctype,body,status", [b[1:] for b in BAD_ANSWERS], ids=[b[0] for b in BAD_ANSWERS])
def test_malformed_answers_are_refused_and_the_query_stays_pending(server: ExecutorProcess, ctype: str,
                                                                   body: bytes, status: int) -> None:
    event = server.run("result = {'type': 'number', 'value': int(execute_sql_query('SELECT 5').n[0])}",
                       sql_callback=True)
    assert post_answer(server, event, body, ctype).status == status
    r = post_answer(server, event, by_number(event["query"])[0])
    assert r.status == 200 and r.json()["result"]["value"] == 5


def test_answer_routes_refuse_the_wrong_execution_seq_or_token(server: ExecutorProcess) -> None:
    event = server.run("result = {'type': 'number', 'value': int(execute_sql_query('SELECT 5').n[0])}",
                       sql_callback=True)
    body = by_number(event["query"])[0]
    assert post_answer(server, event, body, headers={"Authorization": "Bearer " + "x" * 40}).status == 401
    assert post_answer(server, event, body, seq=2).status == 409
    assert post_answer(server, event, body, seq=0).status == 409
    other = dict(event, execution="e-" + "0" * 32)
    assert post_answer(server, other, body).status == 404
    assert server.request("POST", "/v1/executions/..%2F/queries/1", body, {"Content-Type": PARQUET}).status == 404
    assert post_answer(server, event, body).status == 200
    assert post_answer(server, event, body).status == 404  # answered and finished: gone
