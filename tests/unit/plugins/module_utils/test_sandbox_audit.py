"""The audit's checks over plain API objects: each misconfiguration class is found, the shipped
manifests are not (the live cluster tests are tests/integration/test_audit.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ansible_collections.pandasai.pod_sandbox.plugins.module_utils import sandbox_audit as audit

RESTRICTED_POD: dict[str, Any] = {
    "metadata": {"name": "p"},
    "spec": {
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "executor", "image": "reg.example/pandasai-sandbox-pod:1@sha256:" + "a" * 64,
                        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}}],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    },
}


def aspects(pod: dict[str, Any], accounts: dict[str, Any] | None = None) -> set[str]:
    return {aspect for aspect, _ in audit.pod_problems(pod, accounts)}


def test_a_restricted_pod_has_no_problem() -> None:
    assert audit.pod_problems(RESTRICTED_POD) == []


@pytest.mark.parametrize(("name", "aspect", "why", "pod"), audit.violating_pods(RESTRICTED_POD),
                         ids=[v[0] for v in audit.VIOLATIONS])
def test_every_probe_pod_breaks_exactly_its_rule(name: str, aspect: str, why: str, pod: dict[str, Any]) -> None:
    found = aspects(pod)
    assert aspect in found
    assert found - {aspect} <= {"privilege-escalation"}, found  # privileged implies escalation allowed
    assert pod["metadata"]["labels"][audit.PROBE_LABEL] == name and why


def test_the_probe_base_without_a_template_is_restricted_apart_from_its_image() -> None:
    assert aspects(audit.compliant_pod(None)) == {"image-digest"}


def test_token_automount_follows_the_service_account() -> None:
    pod = copy.deepcopy(RESTRICTED_POD)
    del pod["spec"]["automountServiceAccountToken"]
    assert "token-automount" in aspects(pod, {})
    assert "token-automount" not in aspects(pod, {"default": {"automountServiceAccountToken": False}})


def test_workload_findings_name_the_object_and_the_fix() -> None:
    pod = copy.deepcopy(RESTRICTED_POD)
    pod["spec"]["hostPID"] = True
    pod["spec"]["containers"][0]["image"] = "busybox:latest"
    found = {f["check"]: f for f in audit.workload_findings("Pod", "p", pod, {})}
    assert found["pod-security-context"]["object"] == "Pod/p" and "hostPID" in found["pod-security-context"]["message"]
    assert "busybox:latest" in found["image-digest"]["message"] and "@sha256" in found["image-digest"]["fix"]


def ns(**labels: str) -> dict[str, Any]:
    return {"metadata": {"name": "qa", "labels": labels}}


def test_namespace_labels() -> None:
    full = {audit.PSS_LABEL + m: "restricted" for m in ("enforce", "audit", "warn")}
    assert audit.namespace_findings(ns(**full), "restricted") == []
    weak = dict(full, **{audit.PSS_LABEL + "enforce": "baseline"})
    [only] = audit.namespace_findings(ns(**weak), "restricted")
    assert only["severity"] == "high" and "'baseline'" in only["message"]
    assert len(audit.namespace_findings(ns(), "restricted")) == 3


DENY = {"metadata": {"name": "deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
ALLOW = {"metadata": {"name": "allow"}, "spec": {
    "podSelector": {"matchLabels": {"app": "python-sandbox"}}, "policyTypes": ["Ingress"],
    "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"pandasai.io/sandbox-client": "true"}}},
                          {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
                           "podSelector": {}}],
                 "ports": [{"protocol": "TCP", "port": "api"}]}]}}


def test_the_shipped_network_policies_pass() -> None:
    assert audit.network_findings("qa", [DENY, ALLOW]) == []


@pytest.mark.parametrize(("rule", "words"), [
    ({"ports": [{"port": 8080}]}, "no 'from'"),
    ({"from": [{}], "ports": [{"port": 8080}]}, "empty peer"),
    ({"from": [{"namespaceSelector": {}}], "ports": [{"port": 8080}]}, "every pod of every namespace"),
    ({"from": [{"podSelector": {}}], "ports": [{"port": 8080}]}, "every pod of the namespace"),
    ({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"port": 8080}]}, "0.0.0.0/0"),
    ({"from": [{"podSelector": {"matchLabels": {"a": "b"}}}]}, "every port"),
])
def test_broad_network_rules_are_found(rule: dict[str, Any], words: str) -> None:
    broad = copy.deepcopy(ALLOW)
    broad["spec"]["ingress"] = [rule]
    found = audit.network_findings("qa", [DENY, broad])
    assert any(f["check"] == "network-broad" and words in f["message"] for f in found), found


def test_a_missing_default_deny_is_found_per_direction() -> None:
    ingress_only = copy.deepcopy(DENY)
    ingress_only["spec"]["policyTypes"] = ["Ingress"]
    found = audit.network_findings("qa", [ingress_only, ALLOW])
    assert [f["message"].split()[4] for f in found if f["check"] == "network-default-deny"] == ["egress"]
    assert len([f for f in audit.network_findings("qa", []) if f["check"] == "network-default-deny"]) == 2


POD_MANAGER = {"metadata": {"name": "pod-manager"}, "rules": [
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list", "watch", "delete", "patch"]},
    {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create", "get"]},
    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["pandasai-sandbox-pod-template"], "verbs": ["get"]},
]}


@pytest.mark.parametrize(("rule", "check"), [
    ({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, "rbac-wildcard"),
    ({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}, "rbac-secrets"),
    ({"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}, "rbac-exec"),
    ({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate"]}, "rbac-escalation"),
    ({"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]}, "rbac-escalation"),
])
def test_broad_rbac_is_found(rule: dict[str, Any], check: str) -> None:
    assert audit.rbac_findings("qa", [POD_MANAGER], [], {}, []) == []
    role = copy.deepcopy(POD_MANAGER)
    role["rules"].append(rule)
    assert check in {f["check"] for f in audit.rbac_findings("qa", [role], [], {}, [])}


def test_cluster_roles_bound_in_the_namespace_and_cluster_bindings_are_found() -> None:
    binding = {"metadata": {"name": "edit-all"}, "roleRef": {"kind": "ClusterRole", "name": "edit"}}
    edit = {"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}]}
    [found] = audit.rbac_findings("qa", [], [binding], {"edit": edit}, [])
    assert found["object"] == "RoleBinding/edit-all" and "ClusterRole edit" in found["message"]
    crb = {"metadata": {"name": "sa-admin"}, "roleRef": {"name": "cluster-admin"},
           "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "qa"}]}
    other = {"metadata": {"name": "x"}, "roleRef": {"name": "view"},
             "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "elsewhere"}]}
    [found] = audit.rbac_findings("qa", [], [], {}, [crb, other])
    assert found["check"] == "rbac-cluster-binding" and "cluster-admin" in found["message"]


def test_quota_and_limits() -> None:
    quota = {"spec": {"hard": {"pods": "10", "requests.cpu": "4", "limits.memory": "8Gi"}}}
    limits = {"spec": {"limits": [{"type": "Container", "default": {"cpu": "1"}}]}}
    assert audit.limits_findings("qa", [quota], [limits]) == []
    checks = [f["check"] for f in audit.limits_findings("qa", [], [])]
    assert checks == ["resource-quota", "limit-range"]
    partial = {"spec": {"hard": {"pods": "10"}}}
    assert {f["message"] for f in audit.limits_findings("qa", [partial], [limits])} == {
        "no ResourceQuota caps cpu", "no ResourceQuota caps memory"}


@pytest.mark.parametrize(("status", "message", "kind"), [
    (403, 'pods "x" is forbidden: unable to validate against any pod security policy: []', "security"),
    (403, 'pods "x" is forbidden: violates PodSecurity "restricted:latest": privileged', "security"),
    (403, 'pods is forbidden: User "system:serviceaccount:qa:default" cannot create resource "pods"', "rbac"),
    (403, 'users "system:serviceaccount:qa:x" is forbidden: User "bob" cannot impersonate resource', "impersonation"),
    (403, 'pods "x" is forbidden: exceeded quota: q, requested: pods=1', "other"),
])
def test_refusals_are_read_by_their_cause(status: int, message: str, kind: str) -> None:
    assert audit.refusal_kind(status, message) == kind
