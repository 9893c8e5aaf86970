"""playbooks/diagnose.yml on the real cluster: each known failure is seeded in a scratch namespace
(a copy of the tests' deployment: ServiceAccount, Role, RoleBinding, quota, limits, template) and
diagnose.yml must name it; a healthy copy gets no error. Nothing of a seed outlives its test: the
node taint is removed in a finally, the scratch namespace is deleted at the end."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml
from kubernetes import client

from conftest import NAMESPACE, playbook

pytestmark = pytest.mark.cluster

SCRATCH = "pandasai-sandbox-diag"
TEMPLATE = "pandasai-sandbox-pod-template"
TAINT = {"key": "pandasai.io/diagnose-test", "value": "seeded", "effect": "NoSchedule"}


def clean(obj: Any, api_client: client.ApiClient) -> dict[str, Any]:
    """A read object as a body to create in SCRATCH (server fields dropped)."""
    body = api_client.sanitize_for_serialization(obj)
    meta = body["metadata"]
    body["metadata"] = {"name": meta["name"], "namespace": SCRATCH, "labels": meta.get("labels") or {}}
    body.pop("status", None)
    return body


def wait_for(what: str, probe: Callable[[], Any], timeout: float = 90) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout} s (last: {value!r})")


@pytest.fixture(scope="module")
def scratch(deployed: str, api_client: client.ApiClient, core: client.CoreV1Api) -> Iterator[str]:
    rbac = client.RbacAuthorizationV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=SCRATCH, labels={
        "app.kubernetes.io/managed-by": "pandasai-pod-sandbox"})))
    try:
        core.create_namespaced_service_account(SCRATCH, {"metadata": {"name": "pandasai-sandbox-sa", "namespace": SCRATCH},
                                                         "automountServiceAccountToken": False})
        rbac.create_namespaced_role(SCRATCH, clean(rbac.read_namespaced_role("pod-manager", NAMESPACE), api_client))
        binding = clean(rbac.read_namespaced_role_binding("pod-manager-binding", NAMESPACE), api_client)
        for subject in binding["subjects"]:
            if subject.get("namespace") == NAMESPACE:
                subject["namespace"] = SCRATCH
        rbac.create_namespaced_role_binding(SCRATCH, binding)
        for quota in core.list_namespaced_resource_quota(NAMESPACE).items:
            core.create_namespaced_resource_quota(SCRATCH, clean(quota, api_client))
        for limits in core.list_namespaced_limit_range(NAMESPACE).items:
            core.create_namespaced_limit_range(SCRATCH, clean(limits, api_client))
        core.create_namespaced_config_map(SCRATCH, clean(core.read_namespaced_config_map(TEMPLATE, NAMESPACE), api_client))
        yield SCRATCH
    finally:
        core.delete_namespace(SCRATCH, grace_period_seconds=0)
        wait_for(f"namespace {SCRATCH} deleted", lambda: SCRATCH not in {
            n.metadata.name for n in core.list_namespace().items}, timeout=180)


def template_pod(core: client.CoreV1Api, name: str) -> dict[str, Any]:
    pod = yaml.safe_load(core.read_namespaced_config_map(TEMPLATE, SCRATCH).data["pod.yaml"])
    pod["metadata"] = {"name": name, "namespace": SCRATCH, "labels": dict(pod["metadata"].get("labels") or {})}
    return pod


def delete_pods(core: client.CoreV1Api) -> None:
    core.delete_collection_namespaced_pod(SCRATCH, grace_period_seconds=0)
    wait_for("scratch pods gone", lambda: not core.list_namespaced_pod(SCRATCH).items, timeout=60)


def diagnose(tmp_path: Path) -> dict[str, dict[str, Any]]:
    out = tmp_path / "diagnosis.json"
    run = playbook("playbooks/diagnose.yml", "-e", f"pod_sandbox_namespace={SCRATCH}",
                   "-e", "pod_sandbox_monitoring_enabled=false", "-e", f"diagnose_json={out}")
    assert run.rc == 0, run.output[-4000:]
    document = json.loads(out.read_text(encoding="utf-8"))
    found = {f["id"]: f for f in document["findings"]}
    # The short report names each finding's cause and fix on the console too.
    for fid, f in found.items():
        assert f"{fid}: " in run.output and "fix: " in run.output, run.output[-3000:]
    return found


def errors(found: dict[str, dict[str, Any]]) -> set[str]:
    return {fid for fid, f in found.items() if f["severity"] == "error"}


def test_a_healthy_namespace_has_no_error(scratch: str, core: client.CoreV1Api, tmp_path: Path) -> None:
    core.create_namespaced_pod(SCRATCH, template_pod(core, "diag-healthy"))
    try:
        wait_for("the pod Ready", lambda: any(c.type == "Ready" and c.status == "True" for c in (
            core.read_namespaced_pod("diag-healthy", SCRATCH).status.conditions or [])))
        assert errors(diagnose(tmp_path)) == set()
    finally:
        delete_pods(core)


def test_untolerated_taint_is_named(scratch: str, core: client.CoreV1Api, api_client: client.ApiClient,
                                    tmp_path: Path) -> None:
    node = core.list_node().items[0].metadata.name

    def taints() -> list[dict[str, Any]]:
        return api_client.sanitize_for_serialization(core.read_node(node).spec.taints or [])
    original = taints()
    try:
        core.patch_node(node, {"spec": {"taints": original + [TAINT]}})
        core.create_namespaced_pod(SCRATCH, template_pod(core, "diag-taint"))
        wait_for("the pod unschedulable", lambda: any(
            c.type == "PodScheduled" and c.reason == "Unschedulable"
            for c in (core.read_namespaced_pod("diag-taint", SCRATCH).status.conditions or [])))
        found = diagnose(tmp_path)
    finally:
        core.patch_node(node, {"spec": {"taints": [t for t in taints() if t["key"] != TAINT["key"]] or None}})
        delete_pods(core)
    assert "untolerated-taint" in found, found
    assert "pandasai.io/diagnose-test=seeded:NoSchedule" in found["untolerated-taint"]["cause"]
    assert "diag-taint" in found["untolerated-taint"]["objects"]
    assert TAINT["key"] not in {t.key for t in (core.read_node(node).spec.taints or [])}


def test_exhausted_quota_is_named(scratch: str, core: client.CoreV1Api, tmp_path: Path) -> None:
    quota = core.list_namespaced_resource_quota(SCRATCH).items[0]
    hard = dict(quota.spec.hard)
    try:
        core.patch_namespaced_resource_quota(quota.metadata.name, SCRATCH, {"spec": {"hard": {**hard, "pods": "1"}}})
        core.create_namespaced_pod(SCRATCH, template_pod(core, "diag-quota-1"))
        wait_for("the quota's pods counted", lambda: core.read_namespaced_resource_quota(
            quota.metadata.name, SCRATCH).status.used.get("pods") == "1")
        with pytest.raises(client.ApiException) as refused:
            core.create_namespaced_pod(SCRATCH, template_pod(core, "diag-quota-2"))
        assert refused.value.status == 403 and "exceeded quota" in refused.value.body
        found = diagnose(tmp_path)
    finally:
        delete_pods(core)
        core.patch_namespaced_resource_quota(quota.metadata.name, SCRATCH, {"spec": {"hard": hard}})
    assert "quota-exhausted" in found, found
    assert f"{quota.metadata.name}/pods" in found["quota-exhausted"]["cause"]


def test_missing_image_is_named(scratch: str, core: client.CoreV1Api, tmp_path: Path) -> None:
    pod = template_pod(core, "diag-image")
    pod["spec"]["containers"][0]["image"] = "pandasai-sandbox-pod:diagnose-no-such-build"
    pod["spec"]["containers"][0]["imagePullPolicy"] = "Never"  # no registry is asked
    try:
        core.create_namespaced_pod(SCRATCH, pod)
        wait_for("ErrImageNeverPull", lambda: any(
            s.state.waiting and s.state.waiting.reason == "ErrImageNeverPull"
            for s in (core.read_namespaced_pod("diag-image", SCRATCH).status.container_statuses or [])))
        found = diagnose(tmp_path)
    finally:
        delete_pods(core)
    assert "image-missing" in found, found
    assert found["image-missing"]["objects"] == ["diag-image"]
    assert "ErrImageNeverPull" in found["image-missing"]["cause"]


def test_removed_rolebinding_is_named(scratch: str, api_client: client.ApiClient, tmp_path: Path) -> None:
    rbac = client.RbacAuthorizationV1Api(api_client)
    binding = clean(rbac.read_namespaced_role_binding("pod-manager-binding", SCRATCH), api_client)
    rbac.delete_namespaced_role_binding("pod-manager-binding", SCRATCH)
    try:
        found = diagnose(tmp_path)
    finally:
        rbac.create_namespaced_role_binding(SCRATCH, copy.deepcopy(binding))
    assert "rbac-missing" in found, found
    assert "RoleBinding/pod-manager-binding" in found["rbac-missing"]["cause"]
    assert "create pods/portforward" in found["rbac-missing"]["cause"]


def test_executor_not_ready_is_named_with_its_log(scratch: str, core: client.CoreV1Api, tmp_path: Path) -> None:
    pod = template_pod(core, "diag-not-ready")
    # The container runs, but no executor answers /ready on port api.
    pod["spec"]["containers"][0]["command"] = ["/bin/sh", "-c", "echo executor replaced by the diagnose test; sleep 3600"]
    pod["spec"]["containers"][0].pop("args", None)
    try:
        core.create_namespaced_pod(SCRATCH, pod)
        wait_for("the pod Running", lambda: core.read_namespaced_pod("diag-not-ready", SCRATCH).status.phase == "Running")
        found = diagnose(tmp_path)
    finally:
        delete_pods(core)
    assert "executor-not-ready" in found, found
    assert "diag-not-ready" in found["executor-not-ready"]["objects"]
    assert "executor replaced by the diagnose test" in " ".join(found["executor-not-ready"]["evidence"])
