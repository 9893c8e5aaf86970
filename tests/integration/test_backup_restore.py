"""Backups: a sandbox namespace holds no state, so render.yml's output (with the deployed image)
is the backup. Deploy a scratch namespace, render it, tear it down, restore it from the rendered
manifests alone, and compare: the same template, quota, limits and RBAC, and a warm pod Ready
again from the restored ReplicaSet."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, utils

from conftest import playbook

pytestmark = pytest.mark.cluster

SCRATCH = "pandasai-sandbox-restore"
ARGS = ("-e", f"pod_sandbox_namespace={SCRATCH}", "-e", "warm_pool_enabled=true", "-e", "warm_pool_replicas=1")


def state(api_client: client.ApiClient) -> dict[str, Any]:
    """What the deployment consists of, without server-set fields."""
    core, rbac = client.CoreV1Api(api_client), client.RbacAuthorizationV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    return {
        "template": core.read_namespaced_config_map("pandasai-sandbox-pod-template", SCRATCH).data,
        "quotas": {q.metadata.name: q.spec.hard for q in core.list_namespaced_resource_quota(SCRATCH).items},
        "limits": {lr.metadata.name: api_client.sanitize_for_serialization(lr.spec)
                   for lr in core.list_namespaced_limit_range(SCRATCH).items},
        "roles": {r.metadata.name: api_client.sanitize_for_serialization(r.rules)
                  for r in rbac.list_namespaced_role(SCRATCH).items},
        "bindings": {b.metadata.name: api_client.sanitize_for_serialization(b.subjects)
                     for b in rbac.list_namespaced_role_binding(SCRATCH).items},
        "policies": sorted(p.metadata.name for p in client.NetworkingV1Api(api_client).list_namespaced_network_policy(SCRATCH).items),
        "replicasets": sorted(rs.metadata.name for rs in apps.list_namespaced_replica_set(SCRATCH).items),
        "namespace_labels": core.read_namespace(SCRATCH).metadata.labels,
    }


def served(api_client: client.ApiClient) -> set[str]:
    versions = {"v1"}
    for group in client.ApisApi(api_client).get_api_versions().groups:
        versions |= {v.group_version for v in group.versions}
    return versions


def warm_pod_ready(core: client.CoreV1Api) -> bool:
    pods = core.list_namespaced_pod(SCRATCH, label_selector="pandasai.io/pool=warm").items
    return any(any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or [])) for p in pods)


def wait_for(what: str, probe: Any, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(2)
    raise AssertionError(f"{what}: not within {timeout} s")


def test_a_namespace_is_restored_from_the_rendered_manifests(deployed: str, api_client: client.ApiClient,
                                                             core: client.CoreV1Api, tmp_path: Path) -> None:
    try:
        run = playbook("site.yml", "--skip-tags", "verify", *ARGS)
        assert run.rc == 0, run.output[-4000:]
        before = state(api_client)
        image = yaml.safe_load(before["template"]["pod.yaml"])["spec"]["containers"][0]["image"]
        backup = tmp_path / "backup"
        run = playbook("playbooks/render.yml", *ARGS, "-e", f"pod_sandbox_image_ref={image}", "-e", f"render_dir={backup}")
        assert run.rc == 0, run.output[-4000:]

        run = playbook("playbooks/teardown.yml", *ARGS)
        assert run.rc == 0, run.output[-4000:]
        assert SCRATCH not in {n.metadata.name for n in core.list_namespace().items}

        available = served(api_client)
        restored, skipped = [], []
        # 51-sandbox-pod.yaml is the pod sessions get, for reference: no object of the deployment.
        for path in sorted(p for p in backup.glob("*.yaml") if p.name != "51-sandbox-pod.yaml"):
            for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
                if not doc:
                    continue
                if doc["apiVersion"] not in available:
                    skipped.append(f"{doc['apiVersion']}/{doc['kind']}")
                    continue
                utils.create_from_dict(api_client, doc)
                restored.append(f"{doc['kind']}/{doc['metadata']['name']}")
        # 1.20 serves neither autoscaling/v2 nor the operator's kinds; everything else came back.
        assert set(skipped) <= {"autoscaling/v2/HorizontalPodAutoscaler", "monitoring.coreos.com/v1/ServiceMonitor",
                                "monitoring.coreos.com/v1/PodMonitor", "monitoring.coreos.com/v1/PrometheusRule"}, skipped
        assert any(r.startswith("ReplicaSet/") for r in restored), restored

        after = state(api_client)
        assert after == before
        wait_for("a warm pod Ready from the restored ReplicaSet", lambda: warm_pod_ready(core))
    finally:
        playbook("playbooks/teardown.yml", *ARGS)
