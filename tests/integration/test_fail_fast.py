"""Fail fast on the live cluster: the client and verify stop at the scheduler's or the kubelet's own
verdict, with its words and the fix, long before their timeout.

Each case seeds one failure class: unschedulable (Insufficient cpu; an untolerated taint on the
node), quota exceeded, image pull error, an executor that exits at start. Time to the error is
measured in the same run as the timeout it is compared with: the ratio must stay below 20 %.
The client runs in a scratch namespace without quota (made and deleted here) from the template
the `deployed` fixture published; the node taint lives only for its one case and goes in a finally.
"""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Any, Iterator

import pytest
import yaml
from kubernetes import client

from conftest import KUBECONFIG, NAMESPACE, playbook

from pod_sandbox.client import KubernetesSandbox, SandboxStartError

pytestmark = pytest.mark.cluster

SCRATCH = os.environ.get("SANDBOX_IT_FAILFAST_NAMESPACE", f"{NAMESPACE}-failfast")
CLIENT_TIMEOUT_S = 120.0
VERIFY_TIMEOUT_S = 300
RATIO = 0.20
TAINT_KEY = "pandasai.io/it-fail-fast"


@pytest.fixture(scope="module")
def template(deployed: str, core: client.CoreV1Api) -> dict[str, Any]:
    published = core.read_namespaced_config_map("pandasai-sandbox-pod-template", deployed)
    return yaml.safe_load(published.data["pod.yaml"])


@pytest.fixture(scope="module")
def scratch(core: client.CoreV1Api) -> Iterator[str]:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=SCRATCH)))
    try:
        yield SCRATCH
    finally:
        core.delete_namespace(SCRATCH, grace_period_seconds=0)


def broken(template: dict[str, Any], case: str) -> dict[str, Any]:
    """The published template with one failure seeded."""
    pod = copy.deepcopy(template)
    container = pod["spec"]["containers"][0]
    if case == "cpu":
        # 2 x 2 CPUs: within the LimitRange's per-container max (2), more than the 2-core node has
        container["resources"]["requests"]["cpu"] = container["resources"]["limits"]["cpu"] = "2"
        ballast = copy.deepcopy(container)
        ballast["name"] = "ballast"
        ballast.pop("ports", None)
        ballast.pop("livenessProbe", None)
        ballast.pop("readinessProbe", None)
        pod["spec"]["containers"].append(ballast)
    elif case == "image":
        container["image"] = "127.0.0.1:1/pandasai-no-such-image:none"  # nothing listens: a pull error at once
        container["imagePullPolicy"] = "IfNotPresent"
    elif case == "crash":
        container["args"] = ["--no-such-option"]  # the executor refuses it and exits
    return pod


def client_start(namespace: str, pod: dict[str, Any]) -> tuple[float, str]:
    """Seconds until start() raised, and its message (the cluster's admin identity, no warm pool)."""
    box = KubernetesSandbox(namespace, kubeconfig=KUBECONFIG, pod_template=pod, warm_pool=False,
                            connection="port-forward", startup_timeout_s=CLIENT_TIMEOUT_S)
    started = time.monotonic()
    with pytest.raises(SandboxStartError) as info:
        box.start()
    elapsed = time.monotonic() - started
    box.stop()
    return elapsed, str(info.value)


def assert_fast(elapsed: float, timeout: float) -> None:
    assert elapsed / timeout < RATIO, f"the error took {elapsed:.1f} s, {elapsed / timeout:.0%} of the {timeout:.0f} s timeout"


@pytest.mark.parametrize(("case", "said", "fix"), [
    ("cpu", "Insufficient cpu", "pod_template_cpu_request"),
    ("image", "ErrImagePull", "--tags image,template"),
    ("crash", "exited", "container log"),
])
def test_the_client_fails_at_the_clusters_verdict(template: dict[str, Any], scratch: str, core: client.CoreV1Api,
                                                  case: str, said: str, fix: str) -> None:
    elapsed, message = client_start(scratch, broken(template, case))
    assert said in message and "fix: " in message and fix in message, message
    assert_fast(elapsed, CLIENT_TIMEOUT_S)
    left = core.list_namespaced_pod(scratch, label_selector="pandasai.io/session").items
    assert [p.metadata.name for p in left if p.metadata.deletion_timestamp is None] == []


def test_the_client_fails_at_an_untolerated_taint(template: dict[str, Any], scratch: str,
                                                  core: client.CoreV1Api) -> None:
    node = core.list_node().items[0].metadata.name
    taint = {"key": TAINT_KEY, "value": "x", "effect": "NoSchedule"}
    original = core.read_node(node).spec.taints or []
    core.patch_node(node, {"spec": {"taints": [t.to_dict() for t in original] + [taint]}})
    try:
        elapsed, message = client_start(scratch, broken(template, "none"))
    finally:
        now = core.read_node(node).spec.taints or []
        core.patch_node(node, {"spec": {"taints": [t.to_dict() for t in now if t.key != TAINT_KEY]}})
    assert "didn't tolerate" in message and TAINT_KEY in message and "teardown.yml --tags nodes" in message, message
    assert_fast(elapsed, CLIENT_TIMEOUT_S)


def test_the_client_names_the_quota_fix(template: dict[str, Any], scratch: str, core: client.CoreV1Api) -> None:
    quota = client.V1ResourceQuota(metadata=client.V1ObjectMeta(name="it-full"), spec=client.V1ResourceQuotaSpec(hard={"pods": "0"}))
    core.create_namespaced_resource_quota(scratch, quota)
    try:
        deadline = time.monotonic() + 30  # the quota controller fills in status.hard first
        while not (core.read_namespaced_resource_quota("it-full", scratch).status.hard or {}) and time.monotonic() < deadline:
            time.sleep(0.2)
        elapsed, message = client_start(scratch, broken(template, "none"))
    finally:
        core.delete_namespaced_resource_quota("it-full", scratch)
    assert "exceeded quota" in message and "resource_limits_quota_hard" in message, message
    assert_fast(elapsed, CLIENT_TIMEOUT_S)


@pytest.mark.parametrize(("case", "said"), [
    ("cpu", "unschedulable: 0/1 nodes are available: 1 Insufficient cpu."),
    ("crash", "exited"),
])
def test_verify_fails_at_the_clusters_verdict(template: dict[str, Any], core: client.CoreV1Api, case: str, said: str) -> None:
    extra = json.dumps({"verify_pod_manifest": broken(template, case), "verify_ready_timeout": VERIFY_TIMEOUT_S})
    run = playbook("playbooks/verify.yml", "-e", extra)
    assert run.rc != 0, run.output[-3000:]
    assert "will not become Ready" in run.output and said in run.output and "Fix: " in run.output, run.output[-3000:]
    assert_fast(run.seconds, VERIFY_TIMEOUT_S)
    left = core.list_namespaced_pod(NAMESPACE, label_selector="pandasai.io/verify=true").items
    assert [p.metadata.name for p in left if p.metadata.deletion_timestamp is None] == []
