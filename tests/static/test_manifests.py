"""Rendered manifests (playbooks/render.yml) are valid Kubernetes objects for every version from
1.25 to the newest kubernetes-validate carries (strict: unknown fields fail), hold the security
properties the local 1.20 cluster does not enforce (Pod Security admission, NetworkPolicy
semantics), and pass checkov with no failed check."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

import pss
from conftest import REPO, rendered_variant
from manifests import Manifest

CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
CHECKOV_CONFIG = Path(__file__).parent / "checkov.yaml"
# Kinds served by CRDs (Prometheus operator): no schema in kubernetes-validate, checked by hand.
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}
VERSIONS = sorted({v for v in kv_utils.all_versions() if tuple(map(int, v.split(".")[:2])) >= (1, 25)},
                  key=lambda v: tuple(map(int, v.split("."))))


def of_kind(found: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in found if m.kind == kind]


def test_versions_cover_125_to_newest() -> None:
    assert VERSIONS[0].startswith("1.25.")
    assert VERSIONS[-1] == kv_utils.latest_version()


def test_strict_validation_catches_a_misspelt_field() -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
           "spec": {"containers": [{"name": "c", "image": "i:1", "securityContxt": {}}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, VERSIONS[-1], strict=True)


def test_expected_kinds_rendered(rendered: tuple[Path, list[Manifest]]) -> None:
    kinds = {m.kind for m in rendered[1]}
    expected = {"Namespace", "NetworkPolicy", "ServiceAccount", "Role", "RoleBinding", "ResourceQuota",
                "LimitRange", "ConfigMap", "Pod"}
    assert expected <= kinds, f"missing kinds: {sorted(expected - kinds)}"


@pytest.mark.parametrize("version", VERSIONS)
def test_strict_schema_validation(rendered: tuple[Path, list[Manifest]], version: str) -> None:
    errors: list[str] = []
    for manifest in rendered[1]:
        try:
            kubernetes_validate.validate(manifest.obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            # Only CRD kinds may lack a schema (test_crd_objects_are_well_formed checks them);
            # any other kind without one is an error, not the library's mere warning.
            if manifest.kind not in CRD_KINDS:
                errors.append(f"{manifest}: no schema for {manifest.obj.get('apiVersion')}/{manifest.kind} in {version}")
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            errors.append(f"{manifest}: {path}: {exc.message}")
    assert not errors, f"Kubernetes {version}:\n" + "\n".join(errors)


def test_crd_objects_are_well_formed(rendered: tuple[Path, list[Manifest]]) -> None:
    for monitor in [m for m in rendered[1] if m.kind in CRD_KINDS]:
        assert monitor.obj["apiVersion"] == "monitoring.coreos.com/v1", monitor
        if monitor.kind == "PrometheusRule":
            assert monitor.obj["spec"]["groups"], monitor  # the rules themselves: test_prometheus.py
            continue
        spec = monitor.obj["spec"]
        assert spec["selector"]["matchLabels"], monitor
        endpoints = spec.get("endpoints") or spec.get("podMetricsEndpoints")
        assert endpoints and all(e.get("port") == "api" for e in endpoints), monitor


def test_every_namespaced_object_names_its_namespace(rendered: tuple[Path, list[Manifest]]) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "Node"}
    for manifest in rendered[1]:
        if manifest.kind in cluster_scoped or "#configmap/" in manifest.source:
            continue
        assert (manifest.obj.get("metadata") or {}).get("namespace"), f"{manifest} has no metadata.namespace"


def test_namespace_enforces_restricted(rendered: tuple[Path, list[Manifest]]) -> None:
    namespaces = of_kind(rendered[1], "Namespace")
    assert namespaces
    for ns in namespaces:
        labels = ns.obj["metadata"].get("labels") or {}
        for mode in ("enforce", "audit", "warn"):
            assert labels.get(f"pod-security.kubernetes.io/{mode}") == "restricted", (ns, labels)


def test_pods_meet_restricted_pod_security(rendered: tuple[Path, list[Manifest]]) -> None:
    """What Pod Security admission (absent in 1.20) would enforce, plus the guide's hardening."""
    pods = [(m, pss.pod_spec_of(m.obj)) for m in rendered[1]]
    pods = [(m, spec) for m, spec in pods if spec is not None]
    assert pods, "no Pod or pod-owning workload rendered"
    for manifest, spec in pods:
        assert pss.violations(spec) == [], f"{manifest}: {pss.violations(spec)}"
        assert spec.get("automountServiceAccountToken") is False, f"{manifest}: service account token mounted"
        for container in spec["containers"]:
            sc = container.get("securityContext") or {}
            assert sc.get("readOnlyRootFilesystem") is True, f"{manifest}: root filesystem writable"
            limits = (container.get("resources") or {}).get("limits") or {}
            assert {"cpu", "memory"} <= set(limits), f"{manifest}: container without cpu/memory limits"
            image = container["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", f"{manifest}: image {image} must carry a fixed tag"
            for env in container.get("env") or []:
                assert "TOKEN" not in env["name"].upper() or "value" not in env, f"{manifest}: token in the pod spec"
        if manifest.kind == "Pod":
            assert spec.get("activeDeadlineSeconds"), f"{manifest}: no activeDeadlineSeconds"


def test_default_deny_and_narrow_ingress(rendered: tuple[Path, list[Manifest]]) -> None:
    """What a policy-capable CNI would enforce: all ingress and egress denied in the namespace,
    ingress to the sandbox pods only on port api, only from the listed sources."""
    policies = of_kind(rendered[1], "NetworkPolicy")
    deny = [p for p in policies if p.obj["spec"].get("podSelector") in ({}, None)
            and set(p.obj["spec"].get("policyTypes") or []) == {"Ingress", "Egress"}
            and not p.obj["spec"].get("ingress") and not p.obj["spec"].get("egress")]
    assert deny, f"no default-deny policy (empty podSelector, Ingress+Egress, no rules) in {[str(p) for p in policies]}"
    for policy in policies:
        spec = policy.obj["spec"]
        assert not spec.get("egress"), f"{policy}: opens egress"
        for rule in spec.get("ingress") or []:
            assert rule.get("from"), f"{policy}: ingress rule open to every source"
            for peer in rule["from"]:
                assert "ipBlock" not in peer, f"{policy}: ipBlock source"
                assert peer.get("podSelector") or peer.get("namespaceSelector"), f"{policy}: empty peer"
            ports = rule.get("ports") or []
            assert ports and all(p.get("port") in ("api", 8080) for p in ports), f"{policy}: ports {ports}"


def test_rbac_is_least_privilege(rendered: tuple[Path, list[Manifest]]) -> None:
    roles = of_kind(rendered[1], "Role")
    assert roles
    # The sandbox needs no ClusterRole; a Prometheus without the operator reads nodes and the
    # kubelets' metrics (never nodes/proxy: through the kubelet API that reaches exec).
    cluster_roles = of_kind(rendered[1], "ClusterRole")
    assert [c.name for c in cluster_roles] == ["pandasai-sandbox-prometheus-pandasai-sandbox"], cluster_roles
    assert cluster_roles[0].obj["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["nodes/metrics"], "verbs": ["get"]},
    ]
    for role in roles + cluster_roles:
        for rule in role.obj.get("rules") or []:
            assert "*" not in rule.get("verbs", []) and "*" not in rule.get("resources", []), f"{role}: wildcard"
            assert "secrets" not in rule.get("resources", []), f"{role}: grants secrets"
            assert not {"escalate", "bind", "impersonate"} & set(rule.get("verbs", [])), f"{role}: {rule}"


def test_pods_exec_only_behind_its_flag(tmp_path_factory: pytest.TempPathFactory) -> None:
    defaults = rendered_variant("defaults", tmp_path_factory)[1]
    with_exec = rendered_variant("all-features", tmp_path_factory)[1]
    granted = [role for role in of_kind(defaults, "Role")
               for rule in role.obj.get("rules") or [] if "pods/exec" in rule.get("resources", [])]
    assert not granted, f"pods/exec granted by default: {granted}"
    assert any("pods/exec" in rule.get("resources", [])
               for role in of_kind(with_exec, "Role") for rule in role.obj.get("rules") or []), \
        "rbac_allow_exec=true did not grant pods/exec"


def scan_dir(rendered: tuple[Path, list[Manifest]], dest: Path) -> Path:
    """Copy the render and write each embedded manifest (the pod template) as its own file, so
    checkov scans the pod that actually runs, not only the ConfigMap that carries it."""
    render_dir, found = rendered
    shutil.copytree(render_dir, dest)
    for index, manifest in enumerate(m for m in found if "#configmap/" in m.source):
        (dest / f"embedded-{index}-{manifest.kind.lower()}.yaml").write_text(yaml.safe_dump(manifest.obj))
    return dest


def run_checkov(target: Path) -> tuple[list[dict], int, str]:
    assert CHECKOV.exists(), f"{CHECKOV} missing: scripts/test-static.sh makes .venv-checkov"
    proc = subprocess.run(
        [str(CHECKOV), "-d", str(target), "--framework", "kubernetes", "--config-file", str(CHECKOV_CONFIG),
         "-o", "json"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov gave no JSON report: {proc.stdout[:2000]} {proc.stderr[-2000:]}")
    reports = report if isinstance(report, list) else [report]
    failed = [c for r in reports for c in (r.get("results") or {}).get("failed_checks", [])]
    passed = sum((r.get("summary") or {}).get("passed", 0) for r in reports)
    return failed, passed, proc.stderr


def test_checkov_finds_no_failed_check(rendered: tuple[Path, list[Manifest]], tmp_path: Path) -> None:
    failed, passed, stderr = run_checkov(scan_dir(rendered, tmp_path / "scan"))
    assert passed > 0, f"checkov checked nothing: {stderr[-2000:]}"
    assert not failed, "checkov failed checks:\n" + "\n".join(
        f"{c['check_id']} {c['check_name']} in {c['resource']} ({c['file_path']})" for c in failed)


def test_checkov_config_still_catches_a_bad_pod(tmp_path: Path) -> None:
    """The skips in checkov.yaml must not blind the scan: a privileged root pod fails it."""
    bad = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad", "namespace": "pandasai-sandbox"},
           "spec": {"hostNetwork": True, "containers": [{"name": "c", "image": "python:3.11",
                                                         "securityContext": {"privileged": True, "runAsUser": 0}}]}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    failed, _, _ = run_checkov(tmp_path)
    ids = {c["check_id"] for c in failed}
    assert {"CKV_K8S_16", "CKV_K8S_19"} <= ids, f"checkov missed a privileged hostNetwork pod: {sorted(ids)}"
