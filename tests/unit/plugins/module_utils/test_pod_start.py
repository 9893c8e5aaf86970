"""pod_start: which starting pods cannot become Ready by waiting, with the cluster's words and the fix.

The client ships its own copy (it is installed without the collection): both must stay one file.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from ansible_collections.pandasai.pod_sandbox.plugins.module_utils import pod_start

REPO = Path(__file__).resolve().parents[4]
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def pending(message: str, *, since: datetime = NOW, **status: Any) -> dict[str, Any]:
    """A pod the scheduler refused with ``message`` (the condition 1.20's scheduler writes)."""
    return {
        "metadata": {"name": "p"},
        "spec": {"restartPolicy": "Never", "nodeSelector": {"pandasai.io/sandbox": "true"}},
        "status": {"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastTransitionTime": stamp(since)}], **status},
    }


def container(state: dict[str, Any], restart_policy: str = "Never", **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": {"restartPolicy": restart_policy},
            "status": {"phase": "Running" if "running" in state else "Pending",
                       "containerStatuses": [{"name": "executor", "state": state, **extra}]}}


def test_the_client_carries_the_same_file() -> None:
    ours = (REPO / "plugins" / "module_utils" / "pod_start.py").read_bytes()
    client = (REPO / "executor" / "src" / "pod_sandbox" / "client" / "pod_start.py").read_bytes()
    assert ours == client, "copy plugins/module_utils/pod_start.py to executor/src/pod_sandbox/client/"


@pytest.mark.parametrize(("message", "fix_words"), [
    ("0/1 nodes are available: 1 Insufficient cpu.", ["cpu", "pod_template_cpu_request"]),
    ("0/3 nodes are available: 1 Insufficient memory, 2 Insufficient cpu.", ["cpu and memory"]),
    ("0/1 nodes are available: 1 node(s) had taint {pandasai.io/sandbox: true}, that the pod didn't tolerate.",
     ["pandasai.io/sandbox: true", "teardown.yml --tags nodes"]),
    ("0/1 nodes are available: 1 node(s) didn't match node selector.",
     ["pandasai.io/sandbox=true", "--tags nodes"]),
    ("0/1 nodes are available: 1 node(s) didn't find available persistent volumes to bind.", ["scheduler"]),
])
def test_unschedulable_pods_fail_with_the_schedulers_words_and_a_fix(message: str, fix_words: list[str]) -> None:
    said, fix = pod_start.start_problem(pending(message), now=NOW)
    assert said == "unschedulable: " + message
    for word in fix_words:
        assert word in fix


def test_unschedulable_waits_out_its_grace_and_a_nomination() -> None:
    young = pending("0/1 nodes are available: 1 Insufficient cpu.", since=NOW - timedelta(seconds=5))
    assert pod_start.start_problem(young, unschedulable_grace_s=30, now=NOW) is None
    assert pod_start.start_problem(young, unschedulable_grace_s=4, now=NOW) is not None
    assert pod_start.start_problem(young, now=NOW) is not None
    preempting = pending("0/1 nodes are available: 1 Insufficient cpu.", nominatedNodeName="node-a")
    assert pod_start.start_problem(preempting, now=NOW) is None


@pytest.mark.parametrize("reason", sorted(pod_start.IMAGE_REASONS))
def test_image_errors_name_the_image_fix(reason: str) -> None:
    said, fix = pod_start.start_problem(container({"waiting": {"reason": reason, "message": "no such image"}}))
    assert said == f"container executor: {reason}: no such image"
    assert "--tags image,template" in fix


def test_crashes_fail_by_restart_policy() -> None:
    exited = {"terminated": {"reason": "Error", "exitCode": 3}}
    assert "exit code 3" in pod_start.start_problem(container(exited))[0]
    # restartPolicy Always: the first exit is restarted; from the second start it is a crash loop
    assert pod_start.start_problem(container(exited, "Always")) is None
    looping = container({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}, "Always",
                        restartCount=2)
    said, fix = pod_start.start_problem(looping)
    assert "CrashLoopBackOff" in said and "log" in fix
    restarted = container({"running": {}}, "Always", restartCount=1,
                          lastState={"terminated": {"reason": "Error", "exitCode": 1}})
    assert "exit code 1" in pod_start.start_problem(restarted)[0]


def test_healthy_starting_pods_have_no_problem() -> None:
    assert pod_start.start_problem(container({"waiting": {"reason": "ContainerCreating"}})) is None
    assert pod_start.start_problem(container({"running": {}})) is None
    assert pod_start.start_problem({"metadata": {}, "status": {"phase": "Pending"}}) is None
    ended = {"status": {"phase": "Failed", "reason": "DeadlineExceeded", "containerStatuses": [
        {"name": "executor", "state": {"terminated": {"reason": "Error", "exitCode": 137}}}]}}
    assert "DeadlineExceeded" in pod_start.start_problem(ended)[0]
    crashed = container({"terminated": {"reason": "Error", "exitCode": 2}})
    crashed["status"]["phase"] = "Failed"
    said, fix = pod_start.start_problem(crashed)
    assert "exit code 2" in said and fix == pod_start.FIX_CRASH


@pytest.mark.parametrize(("message", "fix_word"), [
    ('pods "x" is forbidden: exceeded quota: sandbox-quota, requested: pods=1, used: pods=10, limited: pods=10',
     "resource_limits_quota_hard"),
    ('pods "x" is forbidden: unable to validate against any pod security policy: []', "Pod Security"),
    ('pods "x" is forbidden: violates PodSecurity "restricted:latest": runAsNonRoot != true', "Pod Security"),
    ('pods is forbidden: User "system:serviceaccount:ns:sa" cannot create resource "pods"', "pod-manager"),
    ('pods "x" is forbidden: maximum cpu usage per Container is 2, but limit is 64', "resource_limits_container_min/_max"),
])
def test_create_refusals_name_their_fix(message: str, fix_word: str) -> None:
    assert fix_word in pod_start.create_refusal_fix(message)
