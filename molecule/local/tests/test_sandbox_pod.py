"""A sandbox pod made from the published template, as the client makes it: Ready on the labelled
and tainted node, counted by the quota, and through a port-forward /health answers and one
/v1/execute (after POST /v1/claim with a token) returns a correct typed result."""

from __future__ import annotations

import secrets
import time
from typing import Any, Iterator

import pytest
import yaml
from kubernetes import client

from sandbox_http import forwarded

READY_TIMEOUT_S = 180


def _ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))


@pytest.fixture(scope="module")
def pod_manifest(live_template: client.V1ConfigMap) -> dict[str, Any]:
    return yaml.safe_load(live_template.data["pod.yaml"])


@pytest.fixture(scope="module")
def sandbox_pod(core: client.CoreV1Api, namespace: str, pod_manifest: dict[str, Any]) -> Iterator[tuple[client.V1Pod, float]]:
    """Create a pod from the template, wait until Ready; yield it with its seconds to Ready; delete it."""
    manifest = dict(pod_manifest)
    manifest["metadata"] = dict(manifest["metadata"], labels=dict(manifest["metadata"].get("labels", {}),
                                                                   **{"pandasai.io/session": "molecule-verify"}))
    started = time.monotonic()
    pod = core.create_namespaced_pod(namespace, manifest)
    name = pod.metadata.name
    try:
        deadline = started + READY_TIMEOUT_S
        while True:
            pod = core.read_namespaced_pod(name, namespace)
            if _ready(pod):
                break
            if pod.status.phase in ("Failed", "Succeeded") or time.monotonic() > deadline:
                events = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
                pytest.fail(f"pod {name} not Ready ({pod.status.phase}): " + "; ".join(e.message or "" for e in events))
            time.sleep(0.2)
        yield pod, time.monotonic() - started
    finally:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)


def test_pod_ready_on_the_labelled_and_tainted_node(
    core: client.CoreV1Api, sandbox_pod: tuple[client.V1Pod, float], pod_manifest: dict[str, Any], inventory_vars: dict[str, Any]
) -> None:
    pod, seconds = sandbox_pod
    print(f"sandbox pod Ready after {seconds:.2f} s")
    node = core.read_node(pod.spec.node_name)
    wanted_nodes = inventory_vars.get("pod_sandbox_nodes", [])
    selector = pod_manifest["spec"].get("nodeSelector") or {}
    if str(inventory_vars.get("pod_sandbox_node_placement_enabled", False)).lower() == "true":
        assert pod.spec.node_name in wanted_nodes
        assert selector, "node placement is on but the template has no nodeSelector"
        taints = [t for t in (node.spec.taints or []) if t.key.startswith("pandasai.io/")]
        assert taints, f"node {node.metadata.name} carries no sandbox taint"
        tolerated = {(t["key"], t.get("effect")) for t in pod_manifest["spec"].get("tolerations", [])}
        assert {(t.key, t.effect) for t in taints} <= tolerated
    for key, value in selector.items():
        assert (node.metadata.labels or {}).get(key) == value


def test_pod_runs_hardened(sandbox_pod: tuple[client.V1Pod, float]) -> None:
    pod, _ = sandbox_pod
    assert pod.spec.automount_service_account_token is False
    assert not any(v.projected or v.secret for v in pod.spec.volumes or [])
    context = pod.spec.containers[0].security_context
    assert context.read_only_root_filesystem and context.allow_privilege_escalation is False
    assert context.capabilities.drop == ["ALL"]
    assert pod.spec.security_context.seccomp_profile.type == "RuntimeDefault"


def test_quota_usage_is_visible(core: client.CoreV1Api, namespace: str, sandbox_pod: tuple[client.V1Pod, float]) -> None:
    deadline = time.monotonic() + 30
    while True:
        quota = core.read_namespaced_resource_quota("sandbox-quota", namespace)
        used = quota.status.used or {}
        if int(used.get("pods", "0")) >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert int(used.get("pods", "0")) >= 1, used
    assert quota.status.hard, "quota has no hard limits in its status"
    assert set(used) <= set(quota.status.hard)


def test_health_claim_and_one_execution(core: client.CoreV1Api, namespace: str, sandbox_pod: tuple[client.V1Pod, float]) -> None:
    pod, _ = sandbox_pod
    token = secrets.token_urlsafe(32)
    with forwarded(core, pod.metadata.name, namespace, 8080) as http:
        status, body = http.call("GET", "/health")
        assert status == 200, body
        status, body = http.call("POST", "/v1/execute", {"code": "result = 1"})
        assert status == 401, f"an unclaimed pod ran code without a token: {status} {body}"
    # The executor answers a refused request with Connection: close (transport.py): a new one.
    with forwarded(core, pod.metadata.name, namespace, 8080) as http:
        status, body = http.call("POST", "/v1/claim", {"token": token})
        assert status == 200, body
        status, body = http.call("POST", "/v1/claim", {"token": secrets.token_urlsafe(32)})
        assert status == 409, body
        code = (
            "import pandas as pd\n"
            "df = pd.DataFrame({'city': ['a', 'b', 'a'], 'sales': [1.5, 2.0, 3.5]})\n"
            "result = {'type': 'number', 'value': float(df.groupby('city').sales.sum()['a'])}\n"
        )
        status, body = http.call("POST", "/v1/execute", {"code": code, "timeout_s": 30}, token=token)
        assert status == 200, body
        assert body["status"] == "ok", body
        assert body["result"] == {"type": "number", "value": 5.0, "number_type": "builtins.float"}, body
