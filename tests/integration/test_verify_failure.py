"""The verify step on a test pod that cannot start: it fails early with the reason, the pod's
events and log in the message, and leaves no test pod behind."""

from __future__ import annotations

import json

import pytest
import yaml
from kubernetes import client

from conftest import NAMESPACE, playbook

pytestmark = pytest.mark.cluster

READY_TIMEOUT_S = 150


def test_unstartable_test_pod_fails_early_with_diagnostics_and_is_deleted(deployed: str, core: client.CoreV1Api) -> None:
    template = core.read_namespaced_config_map("pandasai-sandbox-pod-template", NAMESPACE)
    pod = yaml.safe_load(template.data["pod.yaml"])
    container = pod["spec"]["containers"][0]
    container["image"] = "pandasai-sandbox-pod:no-such-build"
    container["imagePullPolicy"] = "Never"  # the kubelet reports ErrImageNeverPull at once
    extra = json.dumps({"verify_pod_manifest": pod, "verify_ready_timeout": READY_TIMEOUT_S})

    run = playbook("site.yml", "--tags", "verify", "-e", extra)

    assert run.rc != 0, run.output[-3000:]
    assert "will not become Ready" in run.output and "ErrImageNeverPull" in run.output, run.output[-3000:]
    assert "Events:" in run.output, run.output[-3000:]
    # Early: the module saw the container's waiting reason instead of waiting out ready_timeout.
    assert run.seconds < READY_TIMEOUT_S, run.seconds
    left = core.list_namespaced_pod(NAMESPACE, label_selector="pandasai.io/verify=true").items
    assert [p.metadata.name for p in left if p.metadata.deletion_timestamp is None] == []
