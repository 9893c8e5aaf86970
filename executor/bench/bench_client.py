"""Benchmark of the pod sandbox client: session start, kept-alive executions, and PandasAI's chat.

Prints, from one run, p50/p95 of:
  * baseline: ``kubectl create`` of the same sandbox pod and ``kubectl wait --for=condition=Ready``
    (no execution at all: what a user scripting kubectl would wait before being able to start);
  * cold: ``KubernetesSandbox.start()`` creating a new pod (image present) + first execution;
  * warm: ``start()`` claiming a Ready pod of the warm pool + first execution;
  * kept-alive executions over the session's one port-forward;
  * chat: PandasAI 3.0.0's ``Agent.chat`` end to end with a fixed-code LLM on an open session,
    against the same chat with local execution, interleaved (local, sandbox, sandbox, local, ...)
    so both see the same machine load, and the overhead (per-pair difference). ``--profile``
    adds where the sandbox chat's time goes (the client's steps, timed around its calls).
  * burst (``--only burst``): 2 x N ``start()`` calls back to back (sessions kept open, as 2 x N
    users arriving at once would) on the warm_pool role's ReplicaSet, three rounds: N pods and
    no claim of starting pods (the same-run baseline: misses make cold pods), N pods with the
    client claiming pods the pool is still starting, N + surge pods (``--pool N --surge S``):
    warm hit ratio (Ready pods), claims of starting pods, cold starts, claim p50/p95
    (``start()``) and refill time (from the burst's end until the pool is full again). The
    ReplicaSet's size is restored afterwards.
Baseline and cold runs alternate so that both see the same machine load. Targets: cold p50 <= 3 s,
warm p50 <= 150 ms, chat overhead p50 <= 20 ms for a small query, a 2 x N burst all warm with
surge N.

    python executor/bench/bench_client.py [--namespace pandasai-sandbox] [--kubeconfig PATH]
        [--runs 10] [--kubectl PATH] [--only start|chat|burst] [--chat-runs 200] [--profile]
        [--pool 2] [--surge 2]
        [--url http://127.0.0.1:PORT] [--json]

``--url`` runs the chat section against an executor you started (``pod-sandbox-executor
--claimable``), without a cluster.
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
#: The chat's small query, in the shape PandasAI's code generator emits; ``{n}`` makes every
#: question's SQL new (as a user's next question is), or stays 0 for the same question again.
CHAT_CODE = """
sql_query = "SELECT region, SUM(units) AS units, AVG(revenue) AS revenue FROM sales WHERE units > {n} % 5 GROUP BY region ORDER BY region"
df = execute_sql_query(sql_query)
result = {{"type": "dataframe", "value": df}}
"""


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
    p.add_argument("--only", choices=("start", "chat", "burst"), default=None,
                   help="run only the session-start benchmarks, the chat overhead or the warm-pool burst")
    p.add_argument("--pool", type=int, default=2, help="burst: warm_pool_replicas N [2]; the burst is 2 x N")
    p.add_argument("--surge", type=int, default=None, help="burst: warm_pool_surge compared with 0 [N]")
    p.add_argument("--chat-runs", type=int, default=200, help="interleaved chat pairs [200]")
    p.add_argument("--profile", action="store_true", help="also time the client's steps of the sandbox chat")
    p.add_argument("--url", default=None, help="chat against the executor at this URL (no cluster)")
    args = p.parse_args(argv)
    if args.url or args.only == "chat":
        return chat_main(args)
    if args.only == "burst":
        return burst_main(args)
    status = start_main(args)
    if args.only is None:
        status |= chat_main(args)
    return status


def start_main(args: argparse.Namespace) -> int:
    """Session start, cold and warm, and kept-alive executions (the cluster's sandbox namespace)."""
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



# -- a burst of claims on the warm pool ---------------------------------------------------------------


def warm_replicaset(apps: Any, namespace: str) -> dict[str, Any]:
    """The warm_pool role's ReplicaSet in the namespace (as a dict)."""
    found = apps.list_namespaced_replica_set(
        namespace, label_selector="app.kubernetes.io/managed-by=pandasai-pod-sandbox,app.kubernetes.io/component=warm-pool")
    if not found.items:
        raise SystemExit(f"bench_client: no warm-pool ReplicaSet in {namespace}: run site.yml with "
                         "-e warm_pool_enabled=true -e warm_pool_replicas=1 first")
    return found.items[0].to_dict()


def pool_ready(kube: KubeApi, template_hash: str) -> int:
    from datetime import datetime, timezone  # noqa: PLC0415

    pods = kube.list_pods(label_selector=f"{WARM_SELECTOR},pandasai.io/template-hash={template_hash}")["items"]
    now = datetime.now(timezone.utc)
    return sum(1 for p in pods if claimable(p, now, 60))


def wait_pool(kube: KubeApi, template_hash: str, want: int, timeout_s: float = 300) -> float:
    """Seconds until ``want`` warm pods of the ReplicaSet are Ready and claimable."""
    t0 = time.perf_counter()
    while pool_ready(kube, template_hash) < want:
        if time.perf_counter() - t0 > timeout_s:
            raise RuntimeError(f"warm pool did not reach {want} Ready pods in {timeout_s:.0f} s")
        time.sleep(0.2)
    return time.perf_counter() - t0


def burst(args: argparse.Namespace, kube: KubeApi, apps: Any, name: str, template_hash: str,
          surge: int, claim_starting: bool) -> dict[str, Any]:
    """2 x N back-to-back claims on a pool of N + surge; figures of this round. ``claim_starting``:
    the client may claim a warm pod the ReplicaSet is still starting (else it makes a cold one)."""
    size = args.pool + surge
    apps.patch_namespaced_replica_set(name, args.namespace, {"spec": {"replicas": size}})
    wait_pool(kube, template_hash, size)
    time.sleep(1.0)  # let the API settle: every pod of the round starts from the same state
    boxes: list[KubernetesSandbox] = []
    starts: list[float] = []
    warm = starting = 0
    try:
        for _ in range(2 * args.pool):
            box = KubernetesSandbox(args.namespace, kubeconfig=args.kubeconfig, warm_pool=True,
                                    connection="port-forward", warm_claim_starting=claim_starting)
            boxes.append(box)
            t0 = time.perf_counter()
            box.start()
            starts.append(time.perf_counter() - t0)
            assert box.execute(CODE, {}) == {"type": "number", "value": 2}
            if box.session and box.session.warm:
                starting += "warm_starting" in box.session.timings
                warm += "warm_starting" not in box.session.timings
        burst_end = time.perf_counter()
    finally:
        for box in boxes:
            box.stop()
    wait_pool(kube, template_hash, size)
    refill_s = time.perf_counter() - burst_end
    return {
        "pool": args.pool, "surge": surge, "claim_starting": claim_starting, "claims": len(starts),
        "warm": warm, "warm_starting": starting, "cold": len(starts) - warm - starting,
        "warm_hit_ratio": warm / len(starts),
        "claim_p50_ms": percentile(starts, 50) * 1000, "claim_p95_ms": percentile(starts, 95) * 1000,
        "refill_s": refill_s,
    }


def burst_main(args: argparse.Namespace) -> int:
    """The burst with surge 0 (the same-run baseline), then with the surge."""
    from kubernetes import client as k8s_client  # noqa: PLC0415
    from kubernetes import config as k8s_config  # noqa: PLC0415

    surge = args.pool if args.surge is None else args.surge
    kube = KubeApi.from_kubeconfig(args.namespace, args.kubeconfig)
    api = k8s_config.new_client_from_config(config_file=args.kubeconfig)
    apps = k8s_client.AppsV1Api(api)
    rs = warm_replicaset(apps, args.namespace)
    name, original = rs["metadata"]["name"], rs["spec"]["replicas"]
    template_hash = rs["spec"]["selector"]["match_labels"]["pandasai.io/template-hash"]
    try:
        rounds = [burst(args, kube, apps, name, template_hash, s, starting)
                  for s, starting in ((0, False), (0, True), (surge, True))]
    finally:
        apps.patch_namespaced_replica_set(name, args.namespace, {"spec": {"replicas": original}})
        kube.close()
        api.close()
    if args.json:
        print(json.dumps({"burst": rounds}, indent=2))
        return 0
    print(f"warm pool burst: {2 * args.pool} start() back to back (sessions kept open) on ReplicaSet {name}, "
          f"namespace {args.namespace} ({time.strftime('%Y-%m-%d %H:%M:%S')})")
    for r in rounds:
        print(f"  replicas {r['pool']} + surge {r['surge']}, claim starting pods {r['claim_starting']}: "
              f"warm (Ready) {r['warm']}/{r['claims']} ({r['warm_hit_ratio']:.0%}), warm (starting) "
              f"{r['warm_starting']}, cold {r['cold']}; claim p50 {r['claim_p50_ms']:.0f} ms "
              f"p95 {r['claim_p95_ms']:.0f} ms, refill {r['refill_s']:.1f} s")
    return 0


# -- PandasAI's chat, with and without the sandbox ---------------------------------------------------------


def chat_frame() -> Any:
    """1,000 orders in 4 regions: a small table, as most PandasAI questions are about."""
    import numpy as np  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415
    import pandasai as pai  # noqa: PLC0415

    rng = np.random.default_rng(3)
    frame = pd.DataFrame({
        "region": rng.choice(["north", "south", "east", "west"], 1000),
        "units": rng.integers(1, 10, 1000),
        "revenue": rng.normal(50, 10, 1000).round(2),
    })
    return pai.DataFrame(frame, _table_name="sales")


def fixed_code_llm(template: str) -> Any:
    """PandasAI's LLM base class answering with prepared code, as a chat model's Markdown block:
    ``template`` with ``{n}`` set to the LLM's ``n`` (the benchmark sets it per question)."""
    from pandasai.llm.base import LLM  # noqa: PLC0415

    class FixedCodeLLM(LLM):
        n = 0

        @property
        def type(self) -> str:
            return "fixed-code"

        def call(self, instruction: Any, context: Any = None) -> str:
            return "```python\n" + template.format(n=self.n).strip() + "\n```"

    return FixedCodeLLM()


class StepTimer:
    """Wall time of the client's steps inside ``sandbox.execute``, timed around its own calls."""

    STEPS = (
        ("parse", "pod_sandbox.client.datasets", "parse"),
        ("host SQL (PandasAI's connector)", "pandasai.agent.base", "Agent._execute_sql_query"),
        ("SQL guard (sqlguard.Verdicts, cached)", "pod_sandbox.client.sqlguard", "Verdicts.refusal"),
        ("  of which sqlglot's check (a new query)", "pod_sandbox.client.sqlguard", "refusal"),
        ("Parquet encode", "pod_sandbox.client.datasets", "to_parquet"),
        ("content hash", "pod_sandbox.client.datasets", "digest"),
        ("upload (PUT /v1/files)", "pod_sandbox.client.protocol", "ExecutorClient.put_file"),
        ("execute round trip (POST /v1/execute, to the query)", "pod_sandbox.client.protocol", "ExecutorClient.execute"),
        ("answer round trip (POST /v1/executions/.../queries)", "pod_sandbox.client.protocol",
         "ExecutorClient.answer_query"),
        ("result decode", "pod_sandbox.wire", "decode_result"),
        ("output echo", "pod_sandbox.client.output", "echo"),
    )

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {name: [] for name, _, _ in self.STEPS}
        self.server_ms: list[float] = []
        self.execute_s: list[float] = []
        self._undo: list[Callable[[], None]] = []

    def _wrap(self, name: str, owner: Any, attr: str) -> None:
        original = getattr(owner, attr)

        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*a, **kw)
            finally:
                self.times[name].append(time.perf_counter() - t0)

        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, original))

    def __enter__(self) -> "StepTimer":
        import importlib  # noqa: PLC0415

        for name, module, attr in self.STEPS:
            owner: Any = importlib.import_module(module)
            if "." in attr:
                cls, attr = attr.split(".")
                owner = getattr(owner, cls)
            self._wrap(name, owner, attr)
        return self

    def __exit__(self, *exc: Any) -> None:
        for undo in reversed(self._undo):
            undo()


def chat_overhead(box: KubernetesSandbox, runs: int, profile: bool, vary: bool) -> dict[str, Any]:
    """Interleaved ``Agent.chat`` pairs, local execution and the sandbox, on one open session.

    ``vary``: every chat's SQL is new (the usual case: a user's next question); else the same
    question again. With the SQL call-back both run the query on the host while the code waits."""
    import tempfile  # noqa: PLC0415

    import pandas as pd  # noqa: PLC0415
    import pandasai as pai  # noqa: PLC0415
    from pandasai import Agent  # noqa: PLC0415

    saved_cwd = os.getcwd()
    saved_config = pai.config.get()
    with tempfile.TemporaryDirectory(prefix="bench-chat-") as workdir:
        os.chdir(workdir)  # PandasAI makes exports/charts in the working directory
        try:
            llm = fixed_code_llm(CHAT_CODE)
            pai.config.set({"llm": llm, "save_logs": False, "verbose": False})
            frame = chat_frame()
            local, boxed = Agent(frame), Agent(frame, sandbox=box)
            question = "Units and average revenue per region?"
            for _ in range(10):  # untimed: imports, DuckDB, the staged query's upload, spares
                local.chat(question)
                boxed.chat(question)
            pairs: list[tuple[float, float]] = []
            for i in range(runs):
                llm.n = i + 100 if vary else 0  # a question not asked before, or the same one
                seconds, answers = {}, {}
                for name, agent in ((("local", local), ("sandbox", boxed)) if i % 2 == 0
                                    else (("sandbox", boxed), ("local", local))):
                    t0 = time.perf_counter()
                    answers[name] = agent.chat(question)
                    seconds[name] = time.perf_counter() - t0
                assert type(answers["sandbox"]).__name__ == "DataFrameResponse", answers["sandbox"]
                pd.testing.assert_frame_equal(answers["sandbox"].value, answers["local"].value)
                pairs.append((seconds["local"], seconds["sandbox"]))
            steps: dict[str, Any] = {}
            if profile:
                timer = StepTimer()
                execute = box.execute
                with timer:
                    def timed_execute(code: str, environment: dict) -> dict:
                        t0 = time.perf_counter()
                        try:
                            return execute(code, environment)
                        finally:
                            timer.execute_s.append(time.perf_counter() - t0)
                            if box.last_response:
                                timer.server_ms.append(float(box.last_response.get("duration_ms", 0)))
                    box.execute = timed_execute  # type: ignore[method-assign]
                    try:
                        for i in range(max(20, runs // 4)):
                            llm.n = runs + 100 + i if vary else 0
                            boxed.chat(question)
                    finally:
                        del box.execute
                steps = {name: statistics.median(v) * 1000 for name, v in timer.times.items() if v}
                steps["sandbox.execute in all"] = statistics.median(timer.execute_s) * 1000
                steps["  of which the executor's own duration_ms"] = statistics.median(timer.server_ms)
        finally:
            os.chdir(saved_cwd)
            pai.config._config = saved_config  # noqa: SLF001 - put back what was there
    local_s = [a for a, _ in pairs]
    sandbox_s = [b for _, b in pairs]
    overhead = [b - a for a, b in pairs]
    return {
        "pairs": runs,
        "new_sql_each_chat": vary,
        "local_p50_ms": percentile(local_s, 50) * 1000,
        "local_p95_ms": percentile(local_s, 95) * 1000,
        "sandbox_p50_ms": percentile(sandbox_s, 50) * 1000,
        "sandbox_p95_ms": percentile(sandbox_s, 95) * 1000,
        "overhead_p50_ms": statistics.median(overhead) * 1000,
        "overhead_p95_ms": percentile(overhead, 95) * 1000,
        "target_overhead_p50_le_20ms": statistics.median(overhead) <= 0.020,
        "steps_p50_ms": steps,
    }


def chat_main(args: argparse.Namespace) -> int:
    """The chat overhead on an open session: a pod of the namespace, or the executor at --url."""
    if args.url:
        box = KubernetesSandbox(connection="url", url=args.url)
        where = f"executor at {args.url}"
    else:
        box = KubernetesSandbox(args.namespace, kubeconfig=args.kubeconfig, warm_pool=False,
                                connection="port-forward")
        where = f"a pod of namespace {args.namespace} over a port-forward"
    with box:
        results = [chat_overhead(box, args.chat_runs, args.profile, vary) for vary in (True, False)]
    if args.json:
        print(json.dumps({"chat": results}, indent=2))
        return 0
    print(f"PandasAI Agent.chat, fixed-code LLM, small query, {args.chat_runs} interleaved pairs each, "
          f"sandbox: {where} ({time.strftime('%Y-%m-%d %H:%M:%S')})")
    for figures in results:
        what = "a new query each chat" if figures["new_sql_each_chat"] else "the same query again"
        print(f"  {what}:")
        print(f"    local execution   p50 {figures['local_p50_ms']:7.1f} ms   p95 {figures['local_p95_ms']:7.1f} ms")
        print(f"    KubernetesSandbox p50 {figures['sandbox_p50_ms']:7.1f} ms   p95 {figures['sandbox_p95_ms']:7.1f} ms")
        print(f"    overhead (pairwise) p50 {figures['overhead_p50_ms']:5.1f} ms   p95 "
              f"{figures['overhead_p95_ms']:5.1f} ms   target p50 <= 20 ms: {figures['target_overhead_p50_le_20ms']}")
        for name, ms in figures["steps_p50_ms"].items():
            print(f"      {name:44s} p50 {ms:7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
