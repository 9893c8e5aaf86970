"""sandbox_audit's run over a faked API: what it reads, whom it impersonates, how answers become findings."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from plugin_loader import load_plugin

module = load_plugin("modules", "sandbox_audit")
K8sJSONError = module.K8sJSONError

NS = "qa"
TEMPLATE = {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "python-sandbox-"}, "spec": {
    "automountServiceAccountToken": False,
    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{"name": "executor", "image": "img:1@sha256:" + "b" * 64, "securityContext": {
        "runAsNonRoot": True, "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}}}]}}


class FakeAPI:
    """GETs answered from ``objects`` (path to body); dry-run POSTs answered by ``admit``."""

    def __init__(self, objects: dict[str, Any], admit: Any) -> None:
        self.objects = objects
        self.admit = admit
        self.posts: list[tuple[str, dict[str, str], dict[str, Any]]] = []

    def __call__(self, _client: Any, method: str, path: str, body: Any = None, query: Any = None,
                 headers: Any = None, **_: Any) -> Any:
        if method == "GET":
            if path not in self.objects:
                raise K8sJSONError(method, path, 404, "Not Found", "")
            answer = self.objects[path]
            if isinstance(answer, Exception):
                raise answer
            return copy.deepcopy(answer)
        assert method == "POST" and query == {"dryRun": "All"}, (method, path, query)
        self.posts.append((path, dict(headers or {}), body))
        return self.admit(body, headers)


def cluster() -> dict[str, Any]:
    base = f"/api/v1/namespaces/{NS}"
    rbac = "/apis/rbac.authorization.k8s.io/v1/"
    restricted = {f"pod-security.kubernetes.io/{m}": "restricted" for m in ("enforce", "audit", "warn")}
    return {
        "/version": {"gitVersion": "v1.20.2"},
        base: {"metadata": {"name": NS, "labels": restricted}},
        base + "/serviceaccounts": {"items": [{"metadata": {"name": "default"}}, {"metadata": {"name": "sa"}}]},
        base + "/pods": {"items": []},
        f"/apis/apps/v1/namespaces/{NS}/replicasets": {"items": []},
        f"/apis/apps/v1/namespaces/{NS}/deployments": {"items": []},
        base + "/configmaps/pandasai-sandbox-pod-template": {"data": {"pod.yaml": yaml.safe_dump(TEMPLATE)}},
        f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies": {"items": [
            {"metadata": {"name": "deny"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}]},
        rbac + f"namespaces/{NS}/roles": {"items": []},
        rbac + f"namespaces/{NS}/rolebindings": {"items": [{"metadata": {"name": "b"}, "roleRef": {"kind": "Role", "name": "r"},
                                                             "subjects": [{"kind": "Group", "name": "devs"}]}]},
        rbac + "clusterrolebindings": K8sJSONError("GET", "crb", 403, "Forbidden", '{"kind":"Status","message":"nope"}'),
        base + "/resourcequotas": {"items": [{"spec": {"hard": {"pods": "1", "cpu": "1", "memory": "1Gi"}}}]},
        base + "/limitranges": {"items": [{"spec": {"limits": [{"type": "Container", "default": {"cpu": "1"}}]}}]},
    }


PARAMS = {"namespace": NS, "pss_level": "restricted", "template_configmap": "pandasai-sandbox-pod-template",
          "probe_admission": True, "waive": []}


def refuse(status: int, message: str) -> K8sJSONError:
    return K8sJSONError("POST", "pods", status, "Forbidden", '{"kind":"Status","message":"%s"}' % message.replace('"', "'"))


def run(monkeypatch: pytest.MonkeyPatch, api: FakeAPI) -> dict[str, Any]:
    monkeypatch.setattr(module, "call", api)
    return module.run_audit(object(), dict(PARAMS))


def test_enforcing_admission_and_an_unreadable_list_give_only_the_incomplete_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    def admit(pod: dict[str, Any], headers: dict[str, str]) -> Any:
        if headers["Impersonate-User"] == f"system:serviceaccount:{NS}:default":
            raise refuse(403, f"pods is forbidden: User 'x' cannot create resource 'pods' in namespace {NS}")
        if pod["metadata"]["labels"]["pandasai.io/audit-probe"] != "true":
            raise refuse(403, "pods 'p' is forbidden: unable to validate against any pod security policy: []")
        return pod

    api = FakeAPI(cluster(), admit)
    result = run(monkeypatch, api)
    assert [(f["check"], f["object"]) for f in result["findings"]] == [("audit-incomplete", "ClusterRoleBindings")]
    assert result["probes"][f"system:serviceaccount:{NS}:default"] == {"compliant": "refused-rbac"}
    sa = result["probes"][f"system:serviceaccount:{NS}:sa"]
    assert sa["compliant"] == "admitted" and set(sa.values()) == {"admitted", "refused-security"} and len(sa) == 9
    groups = [h for _, h, _ in api.posts if h.get("Impersonate-Group") == "devs"]
    assert groups and all(h["Impersonate-User"] == "pandasai-audit-probe" for h in groups)
    # the probes start from the namespace's template
    assert all(body["spec"]["containers"][0]["image"] == TEMPLATE["spec"]["containers"][0]["image"]
               for _, _, body in api.posts)


def test_admitted_violations_are_findings_unless_admission_made_them_compliant(monkeypatch: pytest.MonkeyPatch) -> None:
    def admit(pod: dict[str, Any], headers: dict[str, str]) -> Any:
        if pod["metadata"]["labels"]["pandasai.io/audit-probe"] == "no-seccomp":
            fixed = copy.deepcopy(pod)  # a defaulting policy puts the profile back
            fixed["spec"]["securityContext"]["seccompProfile"] = {"type": "RuntimeDefault"}
            fixed["spec"]["containers"][0]["securityContext"]["seccompProfile"] = {"type": "RuntimeDefault"}
            return fixed
        return pod

    result = run(monkeypatch, FakeAPI(cluster(), admit))
    admitted = [f for f in result["findings"] if f["check"] == "admission"]
    assert len(admitted) == 3 * 7  # three identities, seven rules admitted as they were
    assert not any("no-seccomp" in f["message"] for f in admitted)
    assert result["probes"][f"system:serviceaccount:{NS}:sa"]["no-seccomp"] == "admitted-made-compliant"
    lines = module.report_lines(NS, dict(result, waived=[]))
    assert lines[0].startswith(f"Security audit of namespace {NS} (Kubernetes v1.20.2): 22 finding(s) - 21 high, 0 medium, 1 low")


def test_a_missing_namespace_is_one_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = cluster()
    del objects[f"/api/v1/namespaces/{NS}"]
    result = run(monkeypatch, FakeAPI(objects, lambda pod, headers: pod))
    assert [f["check"] for f in result["findings"]] == ["namespace-missing"]
