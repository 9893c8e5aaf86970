"""Unit tests of module_utils.diagnosis: each known failure recognised from plain API JSON, a
healthy namespace reported clean, and the toleration matching Kubernetes does."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from ansible_collections.pandasai.pod_sandbox.plugins.module_utils import diagnosis

IMAGE = "pandasai-sandbox-pod:abc123"


def pod(name: str, phase: str = "Running", ready: bool = True, **status: Any) -> dict[str, Any]:
    conditions = [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True" if ready else "False"}]
    return {"metadata": {"name": name}, "spec": {"nodeName": "node-1"},
            "status": {"phase": phase, "conditions": conditions, **status}}


def healthy() -> dict[str, Any]:
    return {
        "namespace": "ns",
        "pods": [pod("sandbox-1")],
        "events": [],
        "quotas": [{"metadata": {"name": "sandbox-quota"},
                    "status": {"hard": {"pods": "20", "limits.memory": "16Gi"}, "used": {"pods": "1", "limits.memory": "1Gi"}}}],
        "nodes": [{"metadata": {"name": "node-1", "labels": {"pandasai.io/sandbox": "true"}},
                   "spec": {"taints": [{"key": "pandasai.io/sandbox", "value": "true", "effect": "NoSchedule"}]}}],
        "template": {"spec": {"nodeSelector": {"pandasai.io/sandbox": "true"},
                              "tolerations": [{"key": "pandasai.io/sandbox", "operator": "Equal", "value": "true",
                                               "effect": "NoSchedule"}],
                              "containers": [{"image": IMAGE}]}},
        "template_image": IMAGE,
        "image_present": True,
        "logs": {},
        "rbac": {"subject": "system:serviceaccount:ns:sa", "objects": {"RoleBinding/pod-manager-binding": True},
                 "reviews": [{"verb": "create", "resource": "pods", "subresource": "", "allowed": True}]},
        "monitoring": {"enabled": True, "service_present": True, "prometheus_url": "http://127.0.0.1:9090",
                       "prometheus_ready": True, "running_pods": 1, "targets_up": 1},
    }


def ids(snap: dict[str, Any]) -> set[str]:
    return {f["id"] for f in diagnosis.diagnose(snap)}


def test_healthy_namespace_has_no_finding() -> None:
    assert diagnosis.diagnose(healthy()) == []
    assert diagnosis.report_lines("ns", []) == ["ns: no known failure found."]


def test_untolerated_taint_from_nodes_and_from_pending_pods() -> None:
    snap = healthy()
    snap["nodes"][0]["spec"]["taints"].append({"key": "dedicated", "value": "gpu", "effect": "NoSchedule"})
    found = {f["id"]: f for f in diagnosis.diagnose(snap)}
    assert "untolerated-taint" in found and "dedicated=gpu:NoSchedule" in found["untolerated-taint"]["cause"]
    # Only the scheduler's verdict (the node list may be out of reach of a narrow identity).
    snap = healthy()
    snap["pods"] = [pod("p", phase="Pending", ready=False)]
    snap["pods"][0]["status"]["conditions"][0] = {
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 node(s) had taint {x: y}, that the pod didn't tolerate."}
    assert "untolerated-taint" in ids(snap)


def test_prefer_no_schedule_taints_do_not_block() -> None:
    snap = healthy()
    snap["nodes"][0]["spec"]["taints"].append({"key": "soft", "effect": "PreferNoSchedule"})
    assert ids(snap) == set()


@pytest.mark.parametrize("toleration, taint, expected", [
    ({"operator": "Exists"}, {"key": "a", "value": "b", "effect": "NoSchedule"}, True),
    ({"key": "a", "operator": "Exists"}, {"key": "a", "value": "b", "effect": "NoExecute"}, True),
    ({"key": "a", "operator": "Exists", "effect": "NoSchedule"}, {"key": "a", "effect": "NoExecute"}, False),
    ({"key": "a", "value": "b"}, {"key": "a", "value": "b", "effect": "NoSchedule"}, True),
    ({"key": "a", "value": "c"}, {"key": "a", "value": "b", "effect": "NoSchedule"}, False),
    ({"key": "b", "operator": "Exists"}, {"key": "a", "effect": "NoSchedule"}, False),
])
def test_toleration_matching(toleration: dict[str, Any], taint: dict[str, Any], expected: bool) -> None:
    assert diagnosis.tolerates([toleration], taint) is expected


def test_node_selector_without_matching_node() -> None:
    snap = healthy()
    snap["nodes"][0]["metadata"]["labels"] = {}
    found = ids(snap)
    assert "node-selector-mismatch" in found and "untolerated-taint" not in found


@pytest.mark.parametrize("hard, used", [({"pods": "2"}, {"pods": "2"}), ({"limits.memory": "4Gi"}, {"limits.memory": "4096Mi"}),
                                        ({"limits.cpu": "2"}, {"limits.cpu": "2500m"})])
def test_quota_exhausted(hard: dict[str, str], used: dict[str, str]) -> None:
    snap = healthy()
    snap["quotas"][0]["status"] = {"hard": hard, "used": used}
    found = {f["id"]: f for f in diagnosis.diagnose(snap)}
    assert "quota-exhausted" in found
    assert list(hard)[0] in found["quota-exhausted"]["cause"]


def test_quota_exceeded_event_alone_is_enough() -> None:
    snap = healthy()
    snap["events"] = [{"reason": "FailedCreate", "message": 'pods "x" is forbidden: exceeded quota: sandbox-quota'}]
    assert "quota-exhausted" in ids(snap)


@pytest.mark.parametrize("reason", ["ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull"])
def test_image_missing_from_waiting_pods(reason: str) -> None:
    snap = healthy()
    snap["pods"] = [pod("p", phase="Pending", ready=False, containerStatuses=[
        {"name": "executor", "state": {"waiting": {"reason": reason, "message": "no such image"}}}])]
    found = {f["id"]: f for f in diagnosis.diagnose(snap)}
    assert reason in found["image-missing"]["cause"] and found["image-missing"]["objects"] == ["p"]


def test_image_missing_from_node_images() -> None:
    snap = healthy()
    snap["image_present"] = False
    assert "image-missing" in ids(snap)
    snap["image_present"] = None  # pulled from a registry: unknown, not a failure
    assert "image-missing" not in ids(snap)


def test_rbac_binding_removed() -> None:
    snap = healthy()
    snap["rbac"]["objects"]["RoleBinding/pod-manager-binding"] = False
    snap["rbac"]["reviews"][0]["allowed"] = False
    found = {f["id"]: f for f in diagnosis.diagnose(snap)}
    assert "RoleBinding/pod-manager-binding" in found["rbac-missing"]["cause"]
    assert "create pods" in found["rbac-missing"]["cause"]


def test_executor_not_ready_shows_the_log() -> None:
    snap = healthy()
    snap["pods"] = [pod("p", ready=False)]
    snap["logs"] = {"p": ["starting", "ImportError: no module named pandas"]}
    found = {f["id"]: f for f in diagnosis.diagnose(snap)}
    assert "ImportError" in " ".join(found["executor-not-ready"]["evidence"])
    crash = healthy()
    crash["pods"] = [pod("c", ready=False, containerStatuses=[{"name": "e", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])]
    assert "executor-not-ready" in ids(crash)


def test_pending_pod_not_ready_is_no_readiness_failure() -> None:
    snap = healthy()
    snap["pods"] = [pod("p", phase="Pending", ready=False)]
    assert ids(snap) == set()


def test_pod_security_rejection_and_leaks() -> None:
    snap = healthy()
    snap["events"] = [{"reason": "FailedCreate", "message": 'pods "x" is forbidden: violates PodSecurity "restricted:latest"'}]
    snap["pods"].append(pod("old", phase="Failed", ready=False, reason="DeadlineExceeded"))
    found = ids(snap)
    assert {"pod-security-rejected", "pods-leaked"} <= found


def test_monitoring_pipeline() -> None:
    snap = healthy()
    snap["monitoring"]["targets_up"] = 0
    assert ids(snap) == {"monitoring-no-targets"}
    snap["monitoring"]["prometheus_ready"] = False
    assert ids(snap) == {"prometheus-unreachable"}
    snap["monitoring"] = {"enabled": True, "service_present": False, "prometheus_url": "", "operator": False}
    assert ids(snap) == {"monitoring-service-missing", "monitoring-no-operator"}
    snap["monitoring"]["enabled"] = False
    assert ids(snap) == set()


def test_errors_come_first_and_report_names_cause_and_fix() -> None:
    snap = copy.deepcopy(healthy())
    snap["monitoring"]["targets_up"] = 0
    snap["quotas"][0]["status"]["used"]["pods"] = "20"
    findings = diagnosis.diagnose(snap)
    assert [f["severity"] for f in findings] == ["error", "warning"]
    lines = diagnosis.report_lines("ns", findings)
    assert lines[0].startswith("[ERROR] quota-exhausted:") and lines[1].startswith("    fix: ")


@pytest.mark.parametrize("text, value", [("100m", 0.1), ("2", 2.0), ("1Gi", 2.0 ** 30), ("1.5k", 1500.0), ("x", None)])
def test_parse_quantity(text: str, value: float | None) -> None:
    assert diagnosis.parse_quantity(text) == value
