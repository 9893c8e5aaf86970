"""Pod template, readiness watch, warm-pool claims and the reaper, against a fake Kubernetes API."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta, timezone

import pytest
import yaml
from fakes import FakeKube, pod

from pod_sandbox.client.errors import KubernetesAPIError, PodTemplateError, SandboxLostError, SandboxStartError
from pod_sandbox.client.kube import WatchEvent
from pod_sandbox.client.pods import PodLauncher, failure_reason, is_ready
from pod_sandbox.client.pool import WarmPool, claim_patch, remaining_lifetime_s
from pod_sandbox.client.reaper import plan
from pod_sandbox.client.template import (
    MANAGED_BY_LABEL,
    POOL_LABEL,
    SESSION_LABEL,
    Owner,
    api_port,
    label_value,
    load_template,
    session_pod,
)

TEMPLATE = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "generateName": "python-sandbox-",
        "labels": {"app": "python-sandbox", MANAGED_BY_LABEL: "pandasai-pod-sandbox"},
    },
    "spec": {
        "activeDeadlineSeconds": 3600,
        "containers": [{"name": "executor", "image": "pandasai-sandbox-pod:abc",
                        "args": ["--claimable"], "ports": [{"name": "api", "containerPort": 8080}]}],
    },
}
OWNER = Owner(host="laptop.example", pid=4242)
WARM = {"app": "python-sandbox", MANAGED_BY_LABEL: "pandasai-pod-sandbox", POOL_LABEL: "warm"}


# -- template ---------------------------------------------------------------------------------------

def test_session_pod_adds_session_labels_and_no_secret():
    manifest = session_pod({**TEMPLATE, "metadata": {**TEMPLATE["metadata"], "labels": {**WARM}}},
                           "ns", "abc123", OWNER)
    labels = manifest["metadata"]["labels"]
    assert labels[SESSION_LABEL] == "abc123"
    assert labels["pandasai.io/owner"] == "laptop.example"
    assert POOL_LABEL not in labels
    assert manifest["metadata"]["generateName"] == "python-sandbox-"
    assert manifest["metadata"]["namespace"] == "ns"
    assert manifest["spec"]["restartPolicy"] == "Never"
    assert "token" not in yaml.safe_dump(manifest).lower()
    assert TEMPLATE["metadata"]["labels"].get(SESSION_LABEL) is None  # template untouched


def test_label_values_are_sanitised():
    assert label_value("my host/with spaces!") == "my-host-with-spaces"
    assert len(label_value("x" * 100)) == 63
    assert label_value("---") == "unknown"


def test_api_port_prefers_the_named_port():
    assert api_port(TEMPLATE) == 8080
    assert api_port({"spec": {"containers": [{"ports": [{"containerPort": 9000}]}]}}) == 9000
    assert api_port({"spec": {"containers": [{}]}}) == 8080


def test_template_from_configmap_file_and_dict(tmp_path):
    kube = FakeKube()
    kube.configmaps["pandasai-sandbox-pod-template"] = {"data": {"pod.yaml": yaml.safe_dump(TEMPLATE)}}
    assert load_template(None, kube)["spec"]["activeDeadlineSeconds"] == 3600
    path = tmp_path / "pod.yaml"
    path.write_text(yaml.safe_dump(TEMPLATE))
    assert load_template(str(path), kube)["metadata"]["generateName"] == "python-sandbox-"
    assert load_template(TEMPLATE, kube) == TEMPLATE


def test_template_errors_name_the_culprit(tmp_path):
    kube = FakeKube("sandbox-ns")
    with pytest.raises(PodTemplateError, match="ConfigMap sandbox-ns/pandasai-sandbox-pod-template not found"):
        load_template(None, kube)
    kube.configmaps["pandasai-sandbox-pod-template"] = {"data": {}}
    with pytest.raises(PodTemplateError, match="has no key 'pod.yaml'"):
        load_template(None, kube)
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Deployment\nspec: {}\n")
    with pytest.raises(PodTemplateError, match="kind 'Deployment'"):
        load_template(str(bad), kube)
    with pytest.raises(PodTemplateError, match="cannot read"):
        load_template(str(tmp_path / "missing.yaml"), kube)


# -- readiness ----------------------------------------------------------------------------------------

def test_failure_reasons():
    assert failure_reason(pod("a")) is None
    assert "Failed" in failure_reason(pod("a", phase="Failed", status__reason="DeadlineExceeded"))
    waiting = pod("a", phase="Pending", ready=False, status__containerStatuses=[
        {"name": "executor", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no registry"}}}])
    assert "ImagePullBackOff" in failure_reason(waiting)
    terminated = pod("a", ready=False, status__containerStatuses=[
        {"name": "executor", "state": {"terminated": {"reason": "Error", "exitCode": 3}}}])
    assert "exit code 3" in failure_reason(terminated)
    deleting = pod("a")
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert "deleted" in failure_reason(deleting)
    assert is_ready(pod("a")) and not is_ready(pod("a", ready=False))


def test_wait_ready_follows_the_watch_until_ready():
    kube = FakeKube()
    created = kube.create_pod(session_pod(TEMPLATE, "ns", "s1", OWNER))
    name = created["metadata"]["name"]
    running = pod(name, ready=False)
    ready = pod(name)
    kube.watch_script = [[WatchEvent("BOOKMARK", {"metadata": {"resourceVersion": "7"}}),
                          WatchEvent("MODIFIED", running), WatchEvent("MODIFIED", ready)]]
    assert is_ready(PodLauncher(kube).wait_ready(created, 5))


def test_wait_ready_fails_fast_with_events():
    kube = FakeKube()
    created = kube.create_pod(session_pod(TEMPLATE, "ns", "s1", OWNER))
    name = created["metadata"]["name"]
    kube.events[name] = [{"type": "Warning", "reason": "Failed", "message": "pull access denied"}]
    broken = pod(name, phase="Pending", ready=False, status__containerStatuses=[
        {"name": "executor", "state": {"waiting": {"reason": "ErrImagePull", "message": "nope"}}}])
    kube.watch_script = [[WatchEvent("MODIFIED", broken)]]
    with pytest.raises(SandboxStartError, match="(?s)ErrImagePull.*pull access denied"):
        PodLauncher(kube).wait_ready(created, 5)


def test_wait_ready_fails_at_the_schedulers_verdict_naming_the_fix():
    kube = FakeKube()
    created = kube.create_pod(session_pod(TEMPLATE, "ns", "s1", OWNER))
    name = created["metadata"]["name"]
    refused = pod(name, phase="Pending", ready=False)
    refused["status"]["conditions"] = [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 node(s) had taint {dedicated: gpu}, that the pod didn't tolerate.",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    kube.watch_script = [[WatchEvent("MODIFIED", refused)]]
    ticks = iter(float(t) for t in range(100))
    with pytest.raises(SandboxStartError,
                       match=r"(?s)cannot start: unschedulable: 0/1 nodes.*dedicated: gpu.*fix: .*tolerat"):
        PodLauncher(kube, clock=lambda: next(ticks)).wait_ready(created, 120)
    # a grace keeps waiting on the same verdict (an autoscaler may add a node), then times out
    kube.watch_script = [[WatchEvent("MODIFIED", refused)]]
    ticks = iter([0.0, 0.0, 1.0, 200.0, 200.0, 200.0])
    with pytest.raises(SandboxStartError, match="not Ready after 120 s"):
        PodLauncher(kube, clock=lambda: next(ticks), unschedulable_grace_s=1e9).wait_ready(created, 120)


def test_a_refused_create_names_the_quota_fix():
    kube = FakeKube()

    def refuse(manifest):
        raise KubernetesAPIError("POST", "pods", 403, "Forbidden",
                                 'pods "x" is forbidden: exceeded quota: sandbox-quota, requested: pods=1, '
                                 "used: pods=4, limited: pods=4")

    kube.create_pod = refuse
    with pytest.raises(SandboxStartError, match=r"(?s)exceeded quota.*fix: .*pod-sandbox-reaper"):
        PodLauncher(kube).create(session_pod(TEMPLATE, "ns", "s1", OWNER))


def test_wait_ready_reports_deletion_and_recovers_from_expired_watches():
    kube = FakeKube()
    created = kube.create_pod(session_pod(TEMPLATE, "ns", "s1", OWNER))
    name = created["metadata"]["name"]
    kube.pods[name] = pod(name)  # ready by the time the watch expired
    kube.watch_script = [[WatchEvent("ERROR", {"code": 410, "reason": "Expired"})]]
    assert is_ready(PodLauncher(kube).wait_ready(created, 5))
    kube.watch_script = [[WatchEvent("DELETED", pod(name))]]
    with pytest.raises(SandboxLostError, match="deleted while starting"):
        PodLauncher(kube).wait_ready(created, 5)


def test_wait_ready_times_out_with_a_description():
    kube = FakeKube()
    created = kube.create_pod(session_pod(TEMPLATE, "ns", "s1", OWNER))
    ticks = iter([0.0, 0.0, 10.0, 10.0, 10.0])
    launcher = PodLauncher(kube, clock=lambda: next(ticks))
    with pytest.raises(SandboxStartError, match="not Ready after 5 s"):
        launcher.wait_ready(created, 5)


# -- warm pool ------------------------------------------------------------------------------------------

def test_claim_patch_is_guarded_by_a_test_on_the_pool_label():
    ops = claim_patch(pod("w1", labels=WARM), "s1", OWNER)
    assert ops[0] == {"op": "test", "path": "/metadata/labels/pandasai.io~1pool", "value": "warm"}
    assert {"op": "replace", "path": "/metadata/labels/pandasai.io~1pool", "value": "claimed"} in ops
    assert {"op": "add", "path": "/metadata/labels/pandasai.io~1session", "value": "s1"} in ops


def test_a_claimed_pod_cannot_be_claimed_again():
    kube = FakeKube()
    kube.add_pod(pod("w1", labels=WARM))
    assert WarmPool(kube).claim("s1", OWNER)["metadata"]["labels"][SESSION_LABEL] == "s1"
    assert WarmPool(kube).claim("s2", OWNER) is None
    # a stale view (listed while still warm) is refused by the guard, not overwritten
    stale = pod("w1", labels=WARM)
    with pytest.raises(Exception, match="422"):
        kube.patch_pod_json("w1", claim_patch(stale, "s3", OWNER))
    assert kube.pods["w1"]["metadata"]["labels"][SESSION_LABEL] == "s1"


@pytest.mark.parametrize("pods,clients", [(1, 8), (3, 8), (8, 8)])
def test_racing_clients_never_share_a_pod(pods, clients):
    kube = FakeKube()
    for i in range(pods):
        kube.add_pod(pod(f"w{i}", labels=WARM))
    barrier = threading.Barrier(clients)
    won: dict[str, str] = {}
    lock = threading.Lock()

    def client(i: int) -> None:
        pool = WarmPool(kube, rng=random.Random(i))
        candidates = pool.candidates()  # everyone sees every pod as warm
        barrier.wait()
        for cand in candidates:
            try:
                got = kube.patch_pod_json(cand["metadata"]["name"], claim_patch(cand, f"s{i}", OWNER))
            except Exception:  # noqa: BLE001 - 422 from the guard
                continue
            with lock:
                assert got["metadata"]["name"] not in won
                won[got["metadata"]["name"]] = f"s{i}"
            return

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == min(pods, clients)
    assert len(set(won.values())) == len(won)
    for name, session in won.items():
        assert kube.pods[name]["metadata"]["labels"][SESSION_LABEL] == session


def test_pool_skips_unready_and_nearly_expired_pods():
    now = datetime(2026, 1, 1, 1, 0, tzinfo=timezone.utc)
    old = pod("old", labels=WARM, spec__activeDeadlineSeconds=3700, status__startTime="2026-01-01T00:00:00Z")
    assert remaining_lifetime_s(old, now) == pytest.approx(100)
    kube = FakeKube()
    kube.add_pod(old)
    kube.add_pod(pod("unready", labels=WARM, ready=False))
    kube.add_pod(pod("fresh", labels=WARM))
    names = [p["metadata"]["name"] for p in WarmPool(kube, now=lambda: now).candidates()]
    assert names == ["fresh"]


# -- reaper ----------------------------------------------------------------------------------------------

def test_reaper_plan():
    now = datetime(2026, 1, 1, 2, 0, tzinfo=timezone.utc)
    managed = {MANAGED_BY_LABEL: "pandasai-pod-sandbox"}
    pods = [
        pod("old-session", labels={**managed, SESSION_LABEL: "a"}),
        pod("new-session", labels={**managed, SESSION_LABEL: "b"}),
        pod("warm", labels={**managed, POOL_LABEL: "warm"}),
        pod("done", phase="Succeeded", labels=managed),
        pod("failed", phase="Failed", labels=managed),
        pod("foreign", phase="Failed", labels={"app": "other"}),
        pod("claimed-long-ago", labels={**managed, POOL_LABEL: "claimed"}),
    ]
    pods[1]["metadata"]["annotations"] = {"pandasai.io/claimed-at": (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    doomed = {d.name: d.reason for d in plan(pods, now, ttl_s=3600)}
    assert set(doomed) == {"old-session", "done", "failed", "claimed-long-ago"}
    assert "ttl" in doomed["old-session"] and "Succeeded" in doomed["done"]


def test_claim_sets_the_session_deadline_on_warm_pods():
    now = datetime(2026, 1, 1, 0, 10, tzinfo=timezone.utc)
    warm = pod("w1", labels=WARM, status__startTime="2026-01-01T00:00:00Z")
    warm["metadata"]["annotations"] = {"pandasai.io/active-deadline-seconds": "3600"}
    kube = FakeKube()
    kube.add_pod(warm)
    claimed = WarmPool(kube, now=lambda: now).claim("s1", OWNER)
    assert claimed["spec"]["activeDeadlineSeconds"] == 600 + 3600
    assert claimed["metadata"]["annotations"]["pandasai.io/owner-host"] == "laptop.example"
    # a pod that already has a deadline keeps it (Kubernetes refuses to raise one)
    fixed = pod("w2", labels=WARM, spec__activeDeadlineSeconds=100)
    fixed["metadata"]["annotations"] = {"pandasai.io/active-deadline-seconds": "3600"}
    assert not any(op["path"] == "/spec/activeDeadlineSeconds" for op in claim_patch(fixed, "s", OWNER, now))


def test_extra_selector_narrows_the_pool():
    kube = FakeKube()
    kube.add_pod(pod("small", labels={**WARM, "size": "s"}))
    kube.add_pod(pod("large", labels={**WARM, "size": "l"}))
    assert [p["metadata"]["name"] for p in WarmPool(kube, extra_selector="size=l").candidates()] == ["large"]
