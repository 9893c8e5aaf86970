"""Every object site.yml applied exists on the cluster with the spec the settings ask for
(compared with render.yml's manifests for the same inventory), and the optional parts are
present exactly when they are switched on."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client, dynamic
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from k8s_compare import differences

# Manifests render.yml writes that site.yml does not apply as such: the bare sandbox pod is
# what clients create per session; the monitors need the Prometheus operator's API.
NOT_APPLIED_KINDS = {"Pod", "HorizontalPodAutoscaler"}  # render.yml only: site.yml applies no HPA
OPERATOR_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}  # need the Prometheus operator's CRDs


def _enabled(inventory_vars: dict[str, Any], name: str) -> bool:
    return str(inventory_vars.get(name, False)).lower() in ("true", "1", "yes")


@pytest.fixture(scope="module")
def dyn(api_client: client.ApiClient) -> dynamic.DynamicClient:
    return dynamic.DynamicClient(api_client)


def _live(dyn: dynamic.DynamicClient, doc: dict[str, Any]) -> dict[str, Any] | None:
    resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    try:
        return resource.get(name=doc["metadata"]["name"], namespace=doc["metadata"].get("namespace")).to_dict()
    except NotFoundError:
        return None


def _expected_docs(rendered: dict[str, list[dict[str, Any]]], inventory_vars: dict[str, Any]) -> list[dict[str, Any]]:
    docs = []
    for stem, items in rendered.items():
        for doc in items:
            if doc["kind"] in NOT_APPLIED_KINDS or doc["kind"] in OPERATOR_KINDS:
                continue
            if stem.startswith("40-monitoring") and not _enabled(inventory_vars, "pod_sandbox_monitoring_enabled"):
                continue
            if stem.startswith("60-warm-pool") and not _enabled(inventory_vars, "warm_pool_enabled"):
                continue
            # render.yml writes the RBAC of a Prometheus without the operator; site.yml applies
            # it only with monitoring_prometheus_rbac_enabled (off unless the inventory says so).
            rbac_name = str(inventory_vars.get("monitoring_prometheus_rbac_name", "pandasai-sandbox-prometheus"))
            if (doc["kind"] in {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
                    and doc["metadata"]["name"].startswith(rbac_name)
                    and not _enabled(inventory_vars, "monitoring_prometheus_rbac_enabled")):
                continue
            docs.append(doc)
    return docs


def test_render_covers_every_step(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {doc["kind"] for items in rendered.values() for doc in items}
    assert {"Namespace", "NetworkPolicy", "ServiceAccount", "Role", "RoleBinding", "ResourceQuota",
            "LimitRange", "ConfigMap"} <= kinds, kinds


def test_every_object_exists_with_the_spec_asked(
    dyn: dynamic.DynamicClient, rendered: dict[str, list[dict[str, Any]]], inventory_vars: dict[str, Any]
) -> None:
    problems = []
    for doc in _expected_docs(rendered, inventory_vars):
        label = f"{doc['kind']}/{doc['metadata']['name']}"
        live = _live(dyn, doc)
        if live is None:
            problems.append(f"{label}: not found")
            continue
        problems.extend(f"{label}{diff}" for diff in differences(doc, live))
    assert not problems, "\n".join(problems)


def test_namespace_carries_pod_security_labels(core: client.CoreV1Api, namespace: str) -> None:
    labels = core.read_namespace(namespace).metadata.labels or {}
    for mode in ("enforce", "audit", "warn"):
        assert labels.get(f"pod-security.kubernetes.io/{mode}") in ("baseline", "restricted"), labels
        assert f"pod-security.kubernetes.io/{mode}-version" in labels, labels


def test_network_policies_deny_by_default(api_client: client.ApiClient, namespace: str) -> None:
    policies = client.NetworkingV1Api(api_client).list_namespaced_network_policy(namespace).items
    deny = [p for p in policies if p.spec.pod_selector.match_labels in (None, {}) and not p.spec.ingress and not p.spec.egress]
    assert deny, [p.metadata.name for p in policies]
    assert set(deny[0].spec.policy_types) == {"Ingress", "Egress"}


def test_monitors_follow_the_operator_api(
    dyn: dynamic.DynamicClient, rendered: dict[str, list[dict[str, Any]]], namespace: str
) -> None:
    """ServiceMonitor/PodMonitor exist only where the monitoring.coreos.com API does."""
    try:
        monitors = dyn.resources.get(api_version="monitoring.coreos.com/v1", kind="ServiceMonitor")
    except ResourceNotFoundError:
        pytest.skip("no monitoring.coreos.com API on this cluster: the monitoring role skips the monitors")
    names = {doc["metadata"]["name"] for items in rendered.values() for doc in items if doc["kind"] == "ServiceMonitor"}
    live = {item.metadata.name for item in monitors.get(namespace=namespace).items}
    assert names <= live
