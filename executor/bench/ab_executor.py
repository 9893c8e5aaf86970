"""A/B benchmark of two executor source trees, interleaved so both see the same machine load.

Starts one executor from each tree (``PYTHONPATH=<tree>``), warms both with the same preloaded
100k-row dataset, then alternates: one sequential request to A, one to B, ... (query and trivial
code), and throughput bursts of trivial code at concurrency 8, A then B, repeated. On a shared
machine whose load moves by the minute this compares like with like; separate runs do not.

    .venv/bin/python executor/bench/ab_executor.py --a /tmp/base/executor/src --b executor/src \
        [--queries 300] [--bursts 6] [--burst 300] [--scratch tmpfs|disk] [--json out.json]

To get a tree for a commit: ``git archive COMMIT executor/src | tar -x -C /tmp/base``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_executor import (  # noqa: E402
    QUERY_CODE, QUERY_SQL, TRIVIAL_CODE, Client, burst, free_port, make_dataset, pct, scratch_root,
)


def start(tree: str, concurrency: int, tmp: str, label: str, scratch: str) -> tuple[subprocess.Popen, Client]:
    """One executor from ``tree`` on a free port; waits until /ready."""
    root = os.path.join(tmp, label)
    os.makedirs(root)
    port = free_port()
    env = {**os.environ, "TMPDIR": root, "MPLCONFIGDIR": os.path.join(root, "mpl"),
           "PYTHONPATH": os.path.abspath(tree)}
    log = open(os.path.join(root, "server.log"), "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(
        [sys.executable, "-m", "pod_sandbox.executor", "--host", "127.0.0.1", "--port", str(port),
         "--workspace", os.path.join(root, "ws"), "--scratch-root", scratch,
         "--slots", str(concurrency), "--threads", str(concurrency + 4)],
        stdout=log, stderr=subprocess.STDOUT, env=env)
    client = Client(port)
    deadline = time.monotonic() + 90
    while True:
        try:
            if client.request("GET", "/ready")[0] == 200:
                return proc, client
        except OSError:
            client.local.conn = None
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"executor from {tree} did not become ready (see {root}/server.log)")
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="source tree A (the directory holding pod_sandbox/)")
    parser.add_argument("--b", required=True, help="source tree B")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--bursts", type=int, default=6)
    parser.add_argument("--burst", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--scratch", choices=("tmpfs", "disk"), default="tmpfs",
                        help="scratch directories on tmpfs (as in the pod) or on disk")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args()

    tmp = tempfile.mkdtemp(prefix="pod-sandbox-ab-")
    scratches: list[str] = []
    servers: dict[str, tuple[subprocess.Popen, Client]] = {}
    try:
        for label, tree in (("A", args.a), ("B", args.b)):
            scratch, _medium = scratch_root(args.scratch, os.path.join(tmp, f"{label}-scratch"))
            scratches.append(scratch)
            servers[label] = start(tree, args.concurrency, tmp, label, scratch)
        frame = make_dataset(100_000)
        buf = io.BytesIO()
        frame.to_parquet(buf)
        datasets = {QUERY_SQL: "sales.parquet"}
        for _proc, client in servers.values():
            status, _ = client.request("PUT", "/v1/files/sales.parquet", buf.getvalue(),
                                       {"Content-Type": "application/octet-stream"})
            assert status == 201, status
            for _ in range(20):
                client.execute(QUERY_CODE, datasets=datasets)
        load_start = os.getloadavg()[0]
        rtt: dict[str, dict[str, list[float]]] = {k: {"query": [], "trivial": []} for k in servers}
        child: dict[str, list[float]] = {k: [] for k in servers}
        for i in range(args.queries):
            order = ("A", "B") if i % 2 == 0 else ("B", "A")
            for kind, code, fields in (("query", QUERY_CODE, {"datasets": datasets}), ("trivial", TRIVIAL_CODE, {})):
                for label in order:
                    t0 = time.perf_counter()
                    out = servers[label][1].execute(code, **fields)
                    rtt[label][kind].append((time.perf_counter() - t0) * 1000)
                    if kind == "query":
                        child[label].append(out["duration_ms"])
        throughput: dict[str, list[float]] = {k: [] for k in servers}
        for i in range(args.bursts):
            for label in (("A", "B") if i % 2 == 0 else ("B", "A")):
                throughput[label].append(burst(servers[label][1], args.burst, args.concurrency))
        load_end = os.getloadavg()[0]
    finally:
        for proc, _client in servers.values():
            proc.terminate()
        for proc, _client in servers.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for path in (tmp, *scratches):
            shutil.rmtree(path, ignore_errors=True)
    figures: dict[str, Any] = {"load_average_1m": [round(load_start, 2), round(load_end, 2)]}
    for label in servers:
        figures[label] = {
            "query_p50_ms": round(statistics.median(rtt[label]["query"]), 2),
            "query_p95_ms": round(pct(rtt[label]["query"], 0.95), 2),
            "query_child_p50_ms": round(statistics.median(child[label]), 2),
            "trivial_p50_ms": round(statistics.median(rtt[label]["trivial"]), 2),
            "throughput_median_per_s": round(statistics.median(throughput[label]), 1),
            "throughput_bursts": [round(x, 1) for x in throughput[label]],
        }
    for label in servers:
        f = figures[label]
        print(f"{label}: query p50 {f['query_p50_ms']} ms p95 {f['query_p95_ms']} ms "
              f"(child {f['query_child_p50_ms']}), "
              f"trivial p50 {f['trivial_p50_ms']} ms, concurrency {args.concurrency}: "
              f"{f['throughput_median_per_s']}/s (bursts {f['throughput_bursts']})")
    print(f"1-min load average at start / end: {figures['load_average_1m']}")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as fh:
            json.dump(figures, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
