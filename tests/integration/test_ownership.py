"""Ownership on the live cluster: teardown removes what the collection made and nothing else.

- A namespace that existed before (with its owner's ConfigMap and labels) is adopted: site.yml
  labels it and records the labels' earlier values on it; teardown.yml deletes the collection's
  objects, keeps the namespace and the owner's ConfigMap, and gives the labels back.
- Node labels and taints the collection set are removed by teardown.yml without pod_sandbox_nodes,
  from the record on the Node; the node's own labels and taints stay. The test's taints are
  PreferNoSchedule (nothing else on the shared node is kept off it) and a finally removes them.
"""

from __future__ import annotations

import json
import os
from typing import Iterator

import pytest
from kubernetes import client

from conftest import playbook

pytestmark = pytest.mark.cluster

FOREIGN = os.environ.get("SANDBOX_IT_FOREIGN_NAMESPACE", "pandasai-it-foreign")
STEPS = "namespace,network,rbac,limits,template"
OURS = "pandasai.io/it-sandbox"
THEIRS = "pandasai.io/it-owner"


@pytest.fixture
def foreign(core: client.CoreV1Api) -> Iterator[str]:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=FOREIGN, labels={"team": "qa", "pod-security.kubernetes.io/enforce": "baseline"},
        annotations={"owner": "qa-team"})))
    core.create_namespaced_config_map(FOREIGN, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="owner-data"), data={"keep": "me"}))
    try:
        yield FOREIGN
    finally:
        core.delete_namespace(FOREIGN, grace_period_seconds=0)


def test_teardown_of_an_adopted_namespace_keeps_it_and_what_is_not_ours(foreign: str, core: client.CoreV1Api,
                                                                        api_client: client.ApiClient) -> None:
    deploy = playbook("site.yml", "--tags", STEPS, "-e", f"pod_sandbox_namespace={foreign}")
    assert deploy.rc == 0, deploy.output[-4000:]
    ns = core.read_namespace(foreign)
    assert ns.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert "pandasai.io/created-by" not in (ns.metadata.annotations or {})
    assert "app.kubernetes.io/managed-by" not in ns.metadata.labels
    record = json.loads(ns.metadata.annotations["pandasai.io/adopted"])
    assert record["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    assert record["labels"]["pod-security.kubernetes.io/audit"] is None

    again = playbook("site.yml", "--tags", STEPS, "-e", f"pod_sandbox_namespace={foreign}")
    assert again.rc == 0 and again.changed == 0, again.output[-4000:]

    down = playbook("playbooks/teardown.yml", "-e", f"pod_sandbox_namespace={foreign}")
    assert down.rc == 0, down.output[-4000:]
    ns = core.read_namespace(foreign)
    assert ns.status.phase == "Active" and ns.metadata.deletion_timestamp is None
    assert {k: v for k, v in ns.metadata.labels.items() if k != "kubernetes.io/metadata.name"} == {
        "team": "qa", "pod-security.kubernetes.io/enforce": "baseline"}
    assert ns.metadata.annotations == {"owner": "qa-team"}
    assert core.read_namespaced_config_map("owner-data", foreign).data == {"keep": "me"}
    assert [c.metadata.name for c in core.list_namespaced_config_map(foreign).items
            if c.metadata.name != "kube-root-ca.crt"] == ["owner-data"]
    assert core.list_namespaced_resource_quota(foreign).items == []
    assert client.RbacAuthorizationV1Api(api_client).list_namespaced_role(foreign).items == []
    assert client.NetworkingV1Api(api_client).list_namespaced_network_policy(foreign).items == []


def test_a_namespace_the_collection_created_is_deleted(core: client.CoreV1Api) -> None:
    name = FOREIGN + "-new"
    try:
        deploy = playbook("site.yml", "--tags", "namespace", "-e", f"pod_sandbox_namespace={name}")
        assert deploy.rc == 0, deploy.output[-4000:]
        assert core.read_namespace(name).metadata.annotations["pandasai.io/created-by"] == "pandasai-pod-sandbox"
        down = playbook("playbooks/teardown.yml", "--tags", "namespace", "-e", f"pod_sandbox_namespace={name}")
        assert down.rc == 0, down.output[-4000:]
        assert name not in [n.metadata.name for n in core.list_namespace().items
                            if n.metadata.deletion_timestamp is None]
    finally:
        try:
            core.delete_namespace(name, grace_period_seconds=0)
        except client.ApiException as exc:
            assert exc.status == 404


def _taints(core: client.CoreV1Api, node: str) -> list[dict[str, str]]:
    return [{"key": t.key, "value": t.value, "effect": t.effect} for t in core.read_node(node).spec.taints or []]


def test_node_labels_and_taints_go_without_naming_the_nodes_and_foreign_ones_stay(core: client.CoreV1Api) -> None:
    node = core.list_node().items[0].metadata.name
    before_labels = dict(core.read_node(node).metadata.labels)
    before_taints = _taints(core, node)
    theirs_taint = {"key": THEIRS, "value": "keep", "effect": "PreferNoSchedule"}
    ours_taint = {"key": OURS, "value": "true", "effect": "PreferNoSchedule"}
    core.patch_node(node, {"metadata": {"labels": {THEIRS: "keep", OURS: "theirs-before"}},
                           "spec": {"taints": before_taints + [theirs_taint]}})
    placement = json.dumps({
        "pod_sandbox_node_placement_enabled": True, "pod_sandbox_nodes": [node],
        "pod_sandbox_node_labels": {OURS: "true", OURS + "-zone": "a"},
        "pod_sandbox_node_taints": [ours_taint, theirs_taint]})
    try:
        up = playbook("site.yml", "--tags", "nodes", "-e", placement)
        assert up.rc == 0, up.output[-4000:]
        labels = core.read_node(node).metadata.labels
        assert labels[OURS] == "true" and labels[OURS + "-zone"] == "a"
        assert ours_taint in _taints(core, node)
        again = playbook("site.yml", "--tags", "nodes", "-e", placement)
        assert again.rc == 0 and again.changed == 0, again.output[-4000:]

        down = playbook("playbooks/teardown.yml", "--tags", "nodes")  # no pod_sandbox_nodes
        assert down.rc == 0, down.output[-4000:]
        after = core.read_node(node)
        assert after.metadata.labels[THEIRS] == "keep"
        assert after.metadata.labels[OURS] == "theirs-before"  # its earlier value, given back
        assert OURS + "-zone" not in after.metadata.labels
        assert "pandasai.io/placement" not in (after.metadata.annotations or {})
        assert _taints(core, node) == before_taints + [theirs_taint]
        repeat = playbook("playbooks/teardown.yml", "--tags", "nodes")
        assert repeat.rc == 0 and repeat.changed == 0, repeat.output[-4000:]
    finally:
        now = core.read_node(node)
        labels = {k: None for k in (now.metadata.labels or {}) if k.startswith((OURS, THEIRS)) and k not in before_labels}
        core.patch_node(node, {"metadata": {"labels": labels, "annotations": {"pandasai.io/placement": None}},
                               "spec": {"taints": before_taints}})
