"""Benchmark of the pod sandbox client: start() to the first successful execution, cold and warm.

Prints, from one run, p50/p95 of:
  * baseline: ``kubectl create`` of the same sandbox pod and ``kubectl wait --for=condition=Ready``
    (no execution at all: what a user scripting kubectl would wait before being able to start);
  * cold: ``KubernetesSandbox.start()`` creating a new pod (image present) + first execution;
  * warm: ``start()`` claiming a Ready pod of the warm pool + first execution;
  * kept-alive executions over the session's one port-forward.
Baseline and cold runs alternate so that both see the same machine load. Targets: cold p50 <= 3 s,
warm p50 <= 150 ms.

    python executor/bench/bench_client.py [--namespace pandasai-sandbox] [--kubeconfig PATH]
        [--runs 10] [--kubectl PATH] [--json]
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

from pod_sandbox.client import KubernetesSandbox
from pod_sandbox.client.kube import KubeApi
from pod_sandbox.client.pods import PodLauncher
from pod_sandbox.client.pool import DEADLINE_ANNOTATION, WARM_SELECTOR, claimable
from pod_sandbox.client.template import (
    CLAIMED_AT_ANNOTATION,
    POOL_LABEL,
    SESSION_LABEL,
    Owner,
    load_template,
    session_pod,
)

CACHE = "/var/cache/pandasai-pod-sandbox"
BENCH_LABEL = "pandasai.io/bench"
CODE = "result = {'type': 'number', 'value': 1 + 1}"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: with few runs it is an observed value)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def find_kubectl(explicit: str | None) -> str | None:
    """The kubectl built with the local cluster (the machine's /usr/bin/kubectl is a dispatcher)."""
    if explicit:
        return explicit
    for pattern in (f"{CACHE}/bin/kubectl", f"{CACHE}/**/_output/**/kubectl", f"{CACHE}/**/kubectl"):
        for path in sorted(glob.glob(pattern, recursive=True)):
            if os.path.isfile(path) and os.access(path, os.X_OK):
                return path
    return shutil.which("kubectl")


def bench_manifest(kube: KubeApi, tag: str) -> dict[str, Any]:
    manifest = session_pod(load_template(None, kube), kube.namespace, f"bench-{tag}", Owner.current())
    manifest["metadata"]["labels"][BENCH_LABEL] = tag
    return manifest


def kubectl_create_ready(kubectl: str, kubeconfig: str, kube: KubeApi, run: int) -> float:
    """Seconds from ``kubectl create`` to ``kubectl wait`` returning Ready; the pod is deleted after."""
    manifest = json.dumps(bench_manifest(kube, f"kubectl-{run}"))
    base = [kubectl, "--kubeconfig", kubeconfig, "-n", kube.namespace]
    t0 = time.perf_counter()
    created = subprocess.run(base + ["create", "-f", "-", "-o", "jsonpath={.metadata.name}"],
                             input=manifest, capture_output=True, text=True, timeout=60, check=True)
    name = created.stdout.strip()
    try:
        subprocess.run(base + ["wait", "--for=condition=Ready", f"pod/{name}", "--timeout=120s"],
                       capture_output=True, text=True, timeout=150, check=True)
        return time.perf_counter() - t0
    finally:
        kube.delete_pod(name, grace_period_seconds=0)


def sandbox_first_execution(make: Callable[[], KubernetesSandbox]) -> tuple[float, dict[str, float], bool]:
    """Seconds from start() to the first successful execution; the session's timings; warm or not."""
    box = make()
    try:
        t0 = time.perf_counter()
        box.start()
        result = box.execute(CODE, {})
        elapsed = time.perf_counter() - t0
        assert result == {"type": "number", "value": 2}, result
        session = box.session
        assert session is not None
        return elapsed, dict(session.timings), session.warm
    finally:
        box.stop()


def ensure_warm(kube: KubeApi, launcher: PodLauncher, want: int, created: list[str]) -> None:
    """Top the pool up to ``want`` Ready warm pods: the deployed ReplicaSet's, else our own bare ones
    (labelled like the warm_pool role's pods). Off the clock."""
    from datetime import datetime, timezone  # noqa: PLC0415

    deadline = time.monotonic() + 180
    while True:
        pods = kube.list_pods(label_selector=WARM_SELECTOR)["items"]
        now = datetime.now(timezone.utc)
        ready = [p for p in pods if claimable(p, now, 60)]
        if len(ready) >= want:
            return
        pending = [p for p in pods if p not in ready and not p["metadata"].get("deletionTimestamp")]
        if len(ready) + len(pending) < want:
            manifest = bench_manifest(kube, "warm")
            labels = manifest["metadata"]["labels"]
            labels.pop(SESSION_LABEL)
            labels[POOL_LABEL] = "warm"
            notes = manifest["metadata"]["annotations"]
            notes.pop(CLAIMED_AT_ANNOTATION)
            notes[DEADLINE_ANNOTATION] = str(manifest["spec"].pop("activeDeadlineSeconds", 3600))
            pod = launcher.create(manifest)
            created.append(pod["metadata"]["name"])
            continue
        if time.monotonic() > deadline:
            raise RuntimeError(f"warm pool did not reach {want} Ready pods")
        time.sleep(0.25)


def row(name: str, values: list[float], unit: float = 1.0, suffix: str = "s") -> dict[str, Any]:
    return {
        "what": name,
        "n": len(values),
        "p50": percentile(values, 50) * unit,
        "p95": percentile(values, 95) * unit,
        "mean": statistics.fmean(values) * unit,
        "unit": suffix,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--namespace", default=os.environ.get("POD_SANDBOX_NAMESPACE", "pandasai-sandbox"))
    p.add_argument("--kubeconfig", default=os.environ.get("POD_SANDBOX_KUBECONFIG", f"{CACHE}/kubeconfig"))
    p.add_argument("--runs", type=int, default=10, help="cold and baseline runs each [10]")
    p.add_argument("--warm-runs", type=int, default=20, help="warm runs [20]")
    p.add_argument("--keepalive-runs", type=int, default=200, help="executions in one session [200]")
    p.add_argument("--kubectl", default=None, help="kubectl binary (default: the one built under /var/cache)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)

    kube = KubeApi.from_kubeconfig(args.namespace, args.kubeconfig)
    launcher = PodLauncher(kube)
    kubectl = find_kubectl(args.kubectl)
    if kubectl is None:
        print("bench_client: no kubectl found (pass --kubectl)", file=sys.stderr)
        return 2

    def cold() -> KubernetesSandbox:
        return KubernetesSandbox(args.namespace, kubeconfig=args.kubeconfig, warm_pool=False,
                                 connection="port-forward")

    def warm() -> KubernetesSandbox:
        return KubernetesSandbox(args.namespace, kubeconfig=args.kubeconfig, warm_pool=True,
                                 connection="port-forward")

    created: list[str] = []
    baseline: list[float] = []
    cold_runs: list[float] = []
    cold_ready: list[float] = []
    warm_runs: list[float] = []
    warm_misses = 0
    keepalive: list[float] = []
    try:
        # one untimed round of each so the image, the page cache and the API are warm
        kubectl_create_ready(kubectl, args.kubeconfig, kube, -1)
        sandbox_first_execution(cold)
        for i in range(args.runs):
            baseline.append(kubectl_create_ready(kubectl, args.kubeconfig, kube, i))
            elapsed, timings, _ = sandbox_first_execution(cold)
            cold_runs.append(elapsed)
            cold_ready.append(timings.get("ready_s", float("nan")))
        for _ in range(args.warm_runs):
            ensure_warm(kube, launcher, 1, created)
            elapsed, _, was_warm = sandbox_first_execution(warm)
            if was_warm:
                warm_runs.append(elapsed)
            else:
                warm_misses += 1
        with cold() as box:
            for _ in range(args.keepalive_runs):
                t0 = time.perf_counter()
                box.execute(CODE, {})
                keepalive.append(time.perf_counter() - t0)
            connections = box.session.http.connections_opened if box.session else -1
    finally:
        for name in created:
            kube.delete_pod(name, grace_period_seconds=0)
        for pod in kube.list_pods(label_selector=BENCH_LABEL)["items"]:
            kube.delete_pod(pod["metadata"]["name"], grace_period_seconds=0)
        kube.close()

    rows = [
        row("baseline: kubectl create + wait Ready", baseline),
        row("cold: start() + first execution", cold_runs),
        row("  of which pod Ready (watch)", cold_ready),
        row("warm: start() + first execution", warm_runs, 1000, "ms"),
        row("kept-alive execution over port-forward", keepalive, 1000, "ms"),
    ]
    summary = {
        "rows": rows,
        "cold_vs_kubectl_p50": percentile(cold_runs, 50) / percentile(baseline, 50),
        "warm_vs_kubectl_p50": percentile(warm_runs, 50) / percentile(baseline, 50) if warm_runs else None,
        "warm_misses": warm_misses,
        "keepalive_connections": connections,
        "targets": {
            "cold_p50_le_3s": percentile(cold_runs, 50) <= 3.0,
            "warm_p50_le_150ms": bool(warm_runs) and percentile(warm_runs, 50) <= 0.150,
        },
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"pod sandbox client benchmark, namespace {args.namespace}, one run ({time.strftime('%Y-%m-%d %H:%M:%S')})")
    print(f"{'what':44s} {'n':>4s} {'p50':>10s} {'p95':>10s} {'mean':>10s}")
    for r in rows:
        print(f"{r['what']:44s} {r['n']:4d} {r['p50']:9.3f}{r['unit']:<1s} {r['p95']:9.3f}{r['unit']:<1s} {r['mean']:9.3f}{r['unit']}")
    print(f"cold p50 / kubectl p50 = {summary['cold_vs_kubectl_p50']:.2f}")
    if summary["warm_vs_kubectl_p50"] is not None:
        print(f"warm p50 / kubectl p50 = {summary['warm_vs_kubectl_p50']:.3f}")
    print(f"warm runs that found no warm pod: {warm_misses}; port-forward connections for "
          f"{args.keepalive_runs} executions: {connections}")
    print(f"targets: cold p50 <= 3 s: {summary['targets']['cold_p50_le_3s']}; "
          f"warm p50 <= 150 ms: {summary['targets']['warm_p50_le_150ms']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
