"""Load: SANDBOX_LOAD_N executions (default 10,000) at concurrency 16: none lost, no 5xx, memory stable."""

from __future__ import annotations

import os
import threading
import time
from typing import Iterator

import psutil
import pytest

from server_process import ExecutorProcess, HealthPoller, start_executor

N = int(os.environ.get("SANDBOX_LOAD_N", "10000"))
CONCURRENCY = 16
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def load_server() -> Iterator[ExecutorProcess]:
    proc = start_executor("--slots", str(CONCURRENCY), "--threads", str(CONCURRENCY + 4))
    yield proc
    proc.stop()


def _server_rss(server: ExecutorProcess) -> int:
    """RSS of the HTTP process, the fork-server and the zygote (the long-lived processes)."""
    total = 0
    for p in server.long_lived():
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def test_load_no_loss_no_5xx_memory_stable(load_server: ExecutorProcess) -> None:
    counter = iter(range(N))
    lock = threading.Lock()
    answered: dict[int, int] = {}
    problems: list[str] = []
    retries = [0]
    rss_samples: list[tuple[int, int]] = []

    def worker() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            code = f"result = {{'type': 'number', 'value': {i} * 2}}"
            for _attempt in range(1000):
                r = load_server.execute(code, request_id=f"r{i}")
                if r.status != 429:
                    break
                with lock:
                    retries[0] += 1
                time.sleep(0.01)
            if r.status != 200:
                with lock:
                    problems.append(f"{i}: HTTP {r.status} {r.body[:200]!r}")
                continue
            body = r.json()
            if body["status"] != "ok" or body["result"]["value"] != i * 2 or body["request_id"] != f"r{i}":
                with lock:
                    problems.append(f"{i}: {body}")
                continue
            with lock:
                answered[i] = body["result"]["value"]
                done = len(answered)
            if done % max(1, N // 10) == 0:
                with lock:
                    rss_samples.append((done, _server_rss(load_server)))

    with HealthPoller(load_server, interval_s=0.2) as poller:
        t0 = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
    print(f"\nload: {N} executions at concurrency {CONCURRENCY} in {elapsed:.1f}s = {N / elapsed:.0f}/s, "
          f"429 retries {retries[0]}, server RSS samples (done, bytes) {rss_samples}")
    assert not problems, problems[:5]
    assert len(answered) == N
    assert not poller.failures, poller.failures[:5]
    text = load_server.request("GET", "/metrics", auth=False).body.decode()
    assert 'pandasai_executor_executions_total{status="ok"}' in text
    if len(rss_samples) >= 3:
        first = rss_samples[1][1]  # after warm-up (10% of the run)
        last = rss_samples[-1][1]
        assert last - first < 32 * 1024 * 1024, rss_samples
    assert load_server.wait_no_leftovers() == []
