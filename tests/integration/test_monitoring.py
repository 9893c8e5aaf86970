"""The local cluster's Prometheus (started by cluster_prep, configured by the monitoring role):
loopback only, scraping the sandbox pods found through the discovery adapter, the kubelet's
cAdvisor and the pod state; real executions show up in it, every dashboard query returns data,
the alerts are loaded; and the monitoring teardown leaves no cluster-scoped object behind.

Runs against the namespace `make deploy` / test-cluster.sh step 2 converged with inventories/local
(SANDBOX_MONITORED_NAMESPACE, default pandasai-sandbox; a warm pool of one)."""

from __future__ import annotations

import json
import math
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
from kubernetes import client

from conftest import playbook

pytestmark = pytest.mark.cluster

PROMETHEUS = os.environ.get("SANDBOX_PROMETHEUS_URL", "http://127.0.0.1:9090")
MONITORED = os.environ.get("SANDBOX_MONITORED_NAMESPACE", "pandasai-sandbox")
JOB = "pandasai-sandbox"
ALERTS = {"PandasaiSandboxWarmPoolEmpty", "PandasaiSandboxWarmPoolHitRatioLow", "PandasaiSandboxExecutionsFailingHard",
          "PandasaiSandboxPodsLeaked", "PandasaiSandboxPodPastDeadline", "PandasaiSandboxQuotaNearlyFull",
          "PandasaiSandboxExecutorNotReady"}


def prom(path: str, **query: str) -> Any:
    url = PROMETHEUS + path + ("?" + urllib.parse.urlencode(query) if query else "")
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    assert body.get("status") == "success", body
    return body["data"]


def instant(expr: str) -> list[dict[str, Any]]:
    return prom("/api/v1/query", query=expr)["result"]


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 120, every: float = 2) -> Any:
    """Poll until probe() is truthy; fail naming `what` and the last value."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout} s (last: {value!r})")


def listeners(port: int) -> set[str]:
    """Local addresses listening on TCP `port` (IPv4 and IPv6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text(encoding="ascii").splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


@pytest.mark.parametrize("port", [9090, 9099])
def test_prometheus_and_adapter_listen_on_loopback_only(port: int) -> None:
    addresses = listeners(port)
    # 0100007F is 127.0.0.1 in /proc's byte order; nothing on 0.0.0.0 or ::.
    assert addresses == {"0100007F"}, f"port {port} listens on {addresses}"


def test_every_job_has_live_targets() -> None:
    def jobs_up() -> dict[str, int]:
        targets = prom("/api/v1/targets", state="active")["activeTargets"]
        up: dict[str, int] = {}
        for t in targets:
            if t["health"] == "up":
                up[t["labels"]["job"]] = up.get(t["labels"]["job"], 0) + 1
        return up if {JOB, JOB + "-cadvisor", JOB + "-state"} <= set(up) else {}
    up = wait_for("a live target in every job", jobs_up, timeout=90)
    assert up[JOB] >= 1, up


def test_alerts_are_loaded_and_healthy() -> None:
    groups = prom("/api/v1/rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert {r["name"] for r in rules if r["type"] == "alerting"} == ALERTS
    bad = [(r["name"], r.get("lastError")) for r in rules if r.get("health") not in ("ok", "unknown")]
    assert not bad, bad


@pytest.fixture(scope="module")
def session() -> Any:
    from pod_sandbox.client import KubernetesSandbox

    kubeconfig = os.environ.get("KUBECONFIG", "/var/cache/pandasai-pod-sandbox/kubeconfig")
    sandbox = KubernetesSandbox(namespace=MONITORED, kubeconfig=kubeconfig)
    sandbox.start()
    try:
        yield sandbox
    finally:
        sandbox.stop()


def samples(expr: str) -> dict[str, float]:
    return {r["metric"].get("status", r["metric"].get("pod", "")): float(r["value"][1]) for r in instant(expr)}


def test_real_executions_show_up_and_every_dashboard_query_returns_data(session: Any,
                                                                         core: client.CoreV1Api) -> None:
    pod = session.pod_name
    selector = f'job="{JOB}",namespace="{MONITORED}",pod="{pod}"'
    # A first scrape of this session's pod, before it ran anything of ours.
    before = wait_for(f"a scrape of {pod}", lambda: samples(f"pandasai_executor_executions_total{{{selector}}}"), 90, 1)
    runs = 3
    for i in range(runs):
        session.execute(f"result = {{'type': 'number', 'value': {i}}}", {})
    with pytest.raises(Exception):  # noqa: B017 - PandasAI's exception family; the status is what counts
        session.execute("raise ValueError('counted as an error')", {})

    def counted() -> dict[str, float]:
        now = samples(f"pandasai_executor_executions_total{{{selector}}}")
        grew = now.get("ok", 0) - before.get("ok", 0) >= runs and now.get("error", 0) - before.get("error", 0) >= 1
        return now if grew else {}
    wait_for(f"{runs} ok and 1 error execution of {pod} in Prometheus", counted, 90, 1)
    # The latency histogram's series appear with its first observation: executions after that
    # scrape give the rate (and so the percentiles) something to grow on.
    for i in range(runs):
        session.execute(f"result = {{'type': 'number', 'value': {i}}}", {})

    dashboard = json.loads(core.read_namespaced_config_map("pandasai-sandbox-dashboard", MONITORED)
                           .data["pandasai-sandbox.json"])
    queries = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    assert len(queries) >= 8

    def empty_panels() -> list[str]:
        missing = []
        for title, expr in queries:
            values = [float(r["value"][1]) for r in instant(expr)]
            if not values or all(math.isnan(v) for v in values):
                missing.append(f"{title}: {expr}")
        return missing
    # Rates need two scrapes, recording rules an evaluation: poll until every query has data.
    deadline = time.monotonic() + 150
    missing = empty_panels()
    while missing and time.monotonic() < deadline:
        time.sleep(5)
        missing = empty_panels()
    assert not missing, "dashboard queries without data:\n" + "\n".join(missing)
    # The claim of this session's warm pod is counted.
    claims = instant(f'pandasai_sandbox:warm_pool_claims:increase5m{{namespace="{MONITORED}"}}')
    assert claims and float(claims[0]["value"][1]) >= 1, claims


SCRATCH = "pandasai-sandbox-mon"


def test_teardown_removes_the_cluster_scoped_monitoring_objects(api_client: client.ApiClient) -> None:
    rbac = client.RbacAuthorizationV1Api(api_client)
    name = f"pandasai-sandbox-prometheus-{SCRATCH}"
    args = ("-e", f"pod_sandbox_namespace={SCRATCH}")
    try:
        run = playbook("site.yml", "--tags", "namespace,monitoring", *args)
        assert run.rc == 0, run.output[-4000:]
        assert rbac.read_cluster_role(name).rules
        assert rbac.read_cluster_role_binding(name).subjects
        # The namespace-scoped run did not touch the deployment's Prometheus configuration.
        config = (Path("/var/cache/pandasai-pod-sandbox/prometheus/prometheus.yml")).read_text(encoding="utf-8")
        assert SCRATCH not in config
    finally:
        run = playbook("playbooks/teardown.yml", "--tags", "monitoring,namespace", *args)
    assert run.rc == 0, run.output[-4000:]
    left = [c.metadata.name for c in rbac.list_cluster_role().items if SCRATCH in c.metadata.name]
    left += [c.metadata.name for c in rbac.list_cluster_role_binding().items if SCRATCH in c.metadata.name]
    assert left == [], left


def test_the_monitoring_role_is_idempotent_on_the_local_prometheus() -> None:
    run = playbook("site.yml", "--tags", "monitoring", "-e", f"pod_sandbox_namespace={MONITORED}")
    assert run.rc == 0, run.output[-4000:]
    assert run.changed == 0, run.output[-4000:]
