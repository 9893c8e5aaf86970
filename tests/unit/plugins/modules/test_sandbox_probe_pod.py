"""Unit tests of sandbox_probe's test-pod mode: manifest, readiness, early failure, always deleted.

The API is faked at module_utils.k8s_json.call and the HTTP probe at run_probe, so the lifecycle
logic (create, wait, probe, diagnostics, delete) runs without a cluster.
"""

from __future__ import annotations

from typing import Any

import pytest
from plugin_loader import load_plugin

probe = load_plugin("modules", "sandbox_probe")
K8sJSONError = probe.K8sJSONError

TEMPLATE = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "python-sandbox", "labels": {"app": "python-sandbox"}, "resourceVersion": "9"},
    "spec": {"containers": [{"name": "executor", "image": "img:1"}]},
    "status": {"phase": "Running"},
}


def pod_status(phase: str = "Pending", ready: bool = False, waiting: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if waiting:
        status["containerStatuses"] = [{"name": "executor", "state": {"waiting": {"reason": waiting, "message": "m"}}}]
    return {"metadata": {"name": "python-sandbox-abcde"}, "spec": {"nodeName": "node-1"}, "status": status}


class FakeCluster:
    """A pod that goes through the given states on successive GETs; records every call."""

    def __init__(self, states: list[dict[str, Any]], delete_errors: list[Exception] | None = None) -> None:
        self.states = states
        self.delete_errors = delete_errors or []
        self.calls: list[tuple[str, str]] = []
        self.created: dict[str, Any] | None = None
        self.deleted = 0

    def __call__(self, _client: Any, method: str, path: str, body: Any = None, **_: Any) -> Any:
        self.calls.append((method, path))
        if method == "POST":
            self.created = body
            return {"metadata": {"name": "python-sandbox-abcde"}}
        if method == "GET" and path.endswith("/pods/python-sandbox-abcde"):
            return self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if method == "GET" and path.endswith("/events"):
            return {"items": [{"reason": "Failed", "message": "Back-off pulling image"}]}
        if method == "GET" and path.endswith("/log"):
            return "boom\n"
        if method == "DELETE":
            if self.delete_errors:
                raise self.delete_errors.pop(0)
            self.deleted += 1
            return {}
        raise AssertionError((method, path))


PARAMS = {"namespace": "ns", "ready_timeout": 5, "log_tail_lines": 7, "port": 8080, "health": True,
          "claim": True, "token": None, "code": "result = 1", "execute_timeout": 5.0, "timeout": 5.0}


@pytest.fixture(autouse=True)
def fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe.time, "sleep", lambda _s: None)


def run(monkeypatch: pytest.MonkeyPatch, cluster: FakeCluster, probe_result: Any = None) -> Any:
    monkeypatch.setattr(probe, "call", cluster)

    def fake_probe(_core: Any, params: dict[str, Any]) -> dict[str, Any]:
        assert params["name"] == "python-sandbox-abcde"
        if isinstance(probe_result, Exception):
            raise probe_result
        return {"health": {"status_code": 200}}

    monkeypatch.setattr(probe, "run_probe", fake_probe)
    return probe.run_test_pod(object(), object(), dict(PARAMS, pod=TEMPLATE))


def test_manifest_gets_generate_name_namespace_and_no_server_fields() -> None:
    pod = probe.test_pod_manifest(TEMPLATE, "ns")
    assert pod["metadata"] == {"generateName": "python-sandbox-", "labels": {"app": "python-sandbox"}, "namespace": "ns"}
    assert "status" not in pod and TEMPLATE["metadata"]["name"] == "python-sandbox"  # the input is not modified


@pytest.mark.parametrize("bad", [{"kind": "Deployment"}, {"kind": "Pod", "spec": {}}, ["not", "a", "dict"]])
def test_manifest_rejects_what_is_not_a_pod(bad: Any) -> None:
    with pytest.raises(probe.ProbeError, match="pod must"):
        probe.test_pod_manifest(bad, "ns")


def test_ready_pod_is_probed_and_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = FakeCluster([pod_status(), pod_status("Running", ready=True)])
    result = run(monkeypatch, cluster)
    assert result["pod"]["name"] == "python-sandbox-abcde" and result["pod"]["node"] == "node-1"
    assert result["pod"]["deleted"] is True and cluster.deleted == 1
    assert cluster.created is not None and cluster.created["metadata"]["namespace"] == "ns"


def test_image_pull_failure_fails_early_with_events_and_log_and_deletes(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = FakeCluster([pod_status(waiting="ImagePullBackOff")])
    with pytest.raises(probe.ProbeError) as info:
        run(monkeypatch, cluster)
    message = str(info.value)
    assert "will not become Ready: container executor: ImagePullBackOff" in message
    assert "Events: Failed: Back-off pulling image" in message and "Log (last 7 lines): boom" in message
    assert cluster.deleted == 1


def test_an_unschedulable_pod_fails_at_the_schedulers_verdict_naming_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = pod_status()
    refused["status"]["conditions"].append({
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/1 nodes are available: 1 Insufficient cpu.", "lastTransitionTime": "2026-01-01T00:00:00Z"})
    cluster = FakeCluster([pod_status(), refused])
    monkeypatch.setitem(PARAMS, "ready_timeout", 3600)
    with pytest.raises(probe.ProbeError) as info:
        run(monkeypatch, cluster)
    message = str(info.value)
    assert "will not become Ready: unschedulable: 0/1 nodes are available: 1 Insufficient cpu." in message
    assert "Fix: no node has that much cpu free" in message and cluster.deleted == 1
    # with a grace the same verdict is waited on until the timeout
    monkeypatch.setitem(PARAMS, "ready_timeout", 0)
    monkeypatch.setitem(PARAMS, "unschedulable_grace", 10 ** 9)
    with pytest.raises(probe.ProbeError, match="not Ready after 0 s"):
        run(monkeypatch, FakeCluster([refused]))


def test_not_ready_in_time_is_reported_and_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = FakeCluster([pod_status()])
    monkeypatch.setitem(PARAMS, "ready_timeout", 0)
    with pytest.raises(probe.ProbeError, match=r"not Ready after 0 s \(phase Pending\)"):
        run(monkeypatch, cluster)
    assert cluster.deleted == 1


def test_probe_failure_is_reported_and_the_pod_deleted(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = FakeCluster([pod_status("Running", ready=True)])
    with pytest.raises(probe.ProbeError, match="GET /health answered HTTP 503"):
        run(monkeypatch, cluster, probe.ProbeError("GET /health answered HTTP 503"))
    assert cluster.deleted == 1


def test_delete_retries_through_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = FakeCluster([pod_status("Running", ready=True)],
                          delete_errors=[ConnectionRefusedError("down"), K8sJSONError("DELETE", "/p", 503, "", "")])
    assert run(monkeypatch, cluster)["pod"]["deleted"] is True
    assert [c for c in cluster.calls if c[0] == "DELETE"].__len__() == 3


def test_delete_of_a_pod_already_gone_is_fine_but_forbidden_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    gone = FakeCluster([pod_status("Running", ready=True)], delete_errors=[K8sJSONError("DELETE", "/p", 404, "", "")])
    assert run(monkeypatch, gone)["pod"]["deleted"] is True
    forbidden = FakeCluster([pod_status("Running", ready=True)], delete_errors=[K8sJSONError("DELETE", "/p", 403, "", "")])
    with pytest.raises(probe.ProbeError, match="may not delete test pod ns/python-sandbox-abcde"):
        run(monkeypatch, forbidden)


def test_create_refused_names_the_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_client: Any, method: str, path: str, body: Any = None, **_: Any) -> Any:
        raise K8sJSONError(method, path, 403, "Forbidden", '{"kind": "Status", "message": "exceeded quota", "reason": "Forbidden"}')

    monkeypatch.setattr(probe, "call", refuse)
    with pytest.raises(probe.ProbeError, match=r"cannot create a test pod in ns: .*exceeded quota"):
        probe.run_test_pod(object(), object(), dict(PARAMS, pod=TEMPLATE))
