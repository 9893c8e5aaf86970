"""playbooks/audit.yml on the live cluster: every seeded misconfiguration is reported, a namespace the
collection deployed audits clean apart from what this cluster cannot give, and the audit changes
nothing (check mode gives the same report).

The seeded namespace is made here, not by the collection (the audit must work on any namespace),
and deleted afterwards with the one cluster-scoped object it needs (a ClusterRoleBinding).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
from kubernetes import client

from conftest import playbook

pytestmark = pytest.mark.cluster

SEEDED = os.environ.get("SANDBOX_IT_AUDIT_NAMESPACE", "pandasai-it-audit")
CLUSTER_BINDING = f"{SEEDED}-view"
#: Each seeded misconfiguration and the check that must report it.
SEEDED_CHECKS = {
    "pss-labels", "network-default-deny", "network-broad", "rbac-wildcard", "rbac-secrets", "rbac-exec",
    "rbac-escalation", "rbac-cluster-binding", "pod-security-context", "image-digest", "token-automount",
    "resource-quota", "limit-range",
}


def psp_admission_on() -> bool:
    """Whether this machine's kube-apiserver runs the PodSecurityPolicy admission plugin."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"kube-apiserver"):
            return any(b"PodSecurityPolicy" in a for a in argv if a.startswith(b"--enable-admission-plugins"))
    return False


def audit(namespace: str, report: Path, *args: str) -> tuple[Any, dict[str, Any]]:
    run = playbook("playbooks/audit.yml", "-e", f"audit_namespace={namespace}", "-e", f"audit_report_path={report}", *args)
    return run, json.loads(report.read_text())


@pytest.fixture(scope="module")
def seeded(core: client.CoreV1Api, api_client: client.ApiClient) -> Iterator[str]:
    rbac = client.RbacAuthorizationV1Api(api_client)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=SEEDED)))
    try:
        client.NetworkingV1Api(api_client).create_namespaced_network_policy(SEEDED, {
            "metadata": {"name": "allow-all-in"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": [{}]}})
        rbac.create_namespaced_role(SEEDED, {"metadata": {"name": "too-much"}, "rules": [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["escalate", "bind"]}]})
        rbac.create_namespaced_role_binding(SEEDED, {
            "metadata": {"name": "too-much"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "too-much"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": SEEDED}]})
        rbac.create_cluster_role_binding({
            "metadata": {"name": CLUSTER_BINDING}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": SEEDED}]})
        core.create_namespaced_pod(SEEDED, {"metadata": {"name": "rooted"}, "spec": {
            "hostPID": True, "containers": [{"name": "c", "image": "127.0.0.1:1/never-pulled:latest",
                                             "securityContext": {"runAsUser": 0}}]}})
        yield SEEDED
    finally:
        try:
            rbac.delete_cluster_role_binding(CLUSTER_BINDING)
        except client.ApiException as exc:
            assert exc.status == 404
        core.delete_namespace(SEEDED, grace_period_seconds=0)


def test_every_seeded_misconfiguration_is_reported(seeded: str, tmp_path: Path) -> None:
    run, report = audit(seeded, tmp_path / "audit.json")
    assert run.rc != 0, run.output[-3000:]
    checks = {f["check"] for f in report["findings"]}
    assert SEEDED_CHECKS <= checks, sorted(SEEDED_CHECKS - checks)
    probes = report["probes"][f"system:serviceaccount:{seeded}:default"]
    # the local API server runs with --allow-privileged=false: privileged pods are refused everywhere
    assert probes["privileged"] == "refused-security"
    if not psp_admission_on():  # nothing else enforces the profile here: those probes are admitted
        assert "admission" in checks
        admitted = {f["message"].split(" rule ")[1].split()[0] for f in report["findings"] if f["check"] == "admission"}
        assert admitted == {"root", "privilege-escalation", "capabilities", "no-seccomp",
                            "host-path", "host-namespaces", "secret-volume"}
    pod = [f for f in report["findings"] if f["object"] == "Pod/rooted" and f["check"] == "pod-security-context"]
    assert any("hostPID" in f["message"] for f in pod) and any("uid 0" in f["message"] for f in pod)
    assert "[high] rbac-cluster-binding ClusterRoleBinding/%s" % CLUSTER_BINDING in run.output
    assert "fix:" in run.output


def test_the_audit_changes_nothing_and_check_mode_reports_the_same(seeded: str, tmp_path: Path,
                                                                    core: client.CoreV1Api) -> None:
    pods = sorted(p.metadata.name for p in core.list_namespaced_pod(seeded).items)
    _, first = audit(seeded, tmp_path / "a.json")
    checked, second = audit(seeded, tmp_path / "b.json", "--check")
    assert checked.rc != 0
    assert first["findings"] == second["findings"]
    assert sorted(p.metadata.name for p in core.list_namespaced_pod(seeded).items) == pods  # dry runs only


def test_a_deployed_namespace_audits_clean_but_for_what_this_cluster_cannot_give(deployed: str, tmp_path: Path) -> None:
    # Inherent here: image-digest - the local provider loads images into the node's Docker engine and
    # there is no registry to give a digest (image_target registry pins name:tag@sha256); admission -
    # Kubernetes 1.20 has no Pod Security admission, so without the PodSecurityPolicy plugin the labels
    # are inert. Waived by check id, the rest must be clean.
    inherent = ["image-digest"] + ([] if psp_admission_on() else ["admission"])
    run, report = audit(deployed, tmp_path / "deployed.json", "-e", json.dumps({"audit_waive": inherent}))
    assert run.rc == 0 and report["findings"] == [], run.output[-4000:]
    assert {f["check"] for f in report["waived"]} <= set(inherent)
    assert report["checked"]["identities probed"] >= 1
