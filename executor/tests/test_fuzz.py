"""Fuzz every documented operation from the served OpenAPI document with schemathesis: no 5xx."""

from __future__ import annotations

import os
from typing import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from pod_sandbox.executor.app import load_openapi
from server_process import ExecutorProcess, start_executor

EXAMPLES = int(os.environ.get("SANDBOX_FUZZ_EXAMPLES", "60"))
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[ExecutorProcess]:
    proc = start_executor("--slots", "2", "--timeout", "2", "--max-timeout", "5",
                          "--max-upload-bytes", str(1 << 20))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_server: ExecutorProcess):
    return schemathesis.openapi.from_url(f"http://127.0.0.1:{fuzz_server.port}/openapi.json")


def test_no_server_errors(api_schema, fuzz_server: ExecutorProcess) -> None:
    headers = {"Authorization": f"Bearer {fuzz_server.token}"}
    fuzzed = []
    calls = {"n": 0, "statuses": set()}
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/v1/shutdown":
            continue  # would end the server under test; covered by test_http_api
        fuzzed.append(f"{operation.method.upper()} {operation.path}")

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def run(case) -> None:
            response = case.call(headers=headers, timeout=30)
            calls["n"] += 1
            calls["statuses"].add(response.status_code)
            case.validate_response(response, checks=(not_a_server_error,))
            assert fuzz_server.proc.poll() is None

        run()
    # Every documented operation but /v1/shutdown; schemathesis leaves out the schema's own URL
    # (/openapi.json), which it has just fetched.
    assert set(fuzzed) == {f"{m.upper()} {p}" for p, ops in load_openapi()["paths"].items() for m in ops} \
        - {"POST /v1/shutdown", "GET /openapi.json"}, fuzzed
    print(f"\nfuzz: {calls['n']} requests over {len(fuzzed)} operations, statuses {sorted(calls['statuses'])}")
    assert calls["n"] >= len(fuzzed) and max(calls["statuses"]) < 500


def test_fuzzed_server_left_nothing_behind(fuzz_server: ExecutorProcess) -> None:
    assert fuzz_server.request("GET", "/health").status == 200
    assert fuzz_server.wait_no_leftovers() == []
