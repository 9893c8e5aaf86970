"""Unit tests of the cluster_check module: kubeconfig resolution, reachability, node and access checks.

The API is faked at the level of module_utils.k8s_json.call (a function of method and path), so
every branch of the module's own logic runs without a cluster.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest
from plugin_loader import load_plugin
import yaml

check = load_plugin("modules", "cluster_check")

KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "current-context": "one",
    "contexts": [{"name": "one", "context": {"cluster": "c1", "user": "u"}},
                 {"name": "two", "context": {"cluster": "c2", "user": "u"}},
                 {"name": "broken", "context": {"cluster": "missing", "user": "u"}}],
    "clusters": [{"name": "c1", "cluster": {"server": "https://10.0.0.1:6443"}},
                 {"name": "c2", "cluster": {"server": "https://api.example.com"}}],
}


def test_kubeconfig_path_prefers_option_then_env_then_home() -> None:
    assert check.kubeconfig_path("/a/b", {"KUBECONFIG": "/c"}) == "/a/b"
    assert check.kubeconfig_path(None, {"K8S_AUTH_KUBECONFIG": "/k", "KUBECONFIG": "/c"}) == "/k"
    assert check.kubeconfig_path(None, {"KUBECONFIG": "/c:/d"}) == "/c"
    assert check.kubeconfig_path(None, {}).endswith("/.kube/config")


@pytest.mark.parametrize(("context", "expected"), [
    (None, ("one", "https://10.0.0.1:6443")),
    ("two", ("two", "https://api.example.com")),
])
def test_context_server_finds_the_server(context: str | None, expected: tuple[str, str]) -> None:
    assert check.context_server(KUBECONFIG, context, "kc") == expected


@pytest.mark.parametrize("context", ["nope", "broken"])
def test_context_server_names_an_unusable_context(context: str) -> None:
    with pytest.raises(check.CheckError, match=f"The kubeconfig kc has no usable context {context} "):
        check.context_server(KUBECONFIG, context, "kc")


def test_context_server_rejects_a_non_mapping() -> None:
    with pytest.raises(check.CheckError, match="is not a kubeconfig"):
        check.context_server(["a"], None, "kc")


@pytest.mark.parametrize(("server", "expected"), [
    ("https://127.0.0.1:6443", ("127.0.0.1", 6443)),
    ("https://api.example.com", ("api.example.com", 443)),
    ("http://localhost", ("localhost", 80)),
    ("10.1.2.3:8443", ("10.1.2.3", 8443)),
])
def test_host_port(server: str, expected: tuple[str, int]) -> None:
    assert check.host_port(server) == expected


def test_host_port_rejects_a_bad_port() -> None:
    with pytest.raises(check.CheckError, match="invalid port"):
        check.host_port("https://h:99999")


def test_locate_reports_missing_and_unreadable_kubeconfigs(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(check.CheckError, match=f"The kubeconfig {missing} does not exist"):
        check.locate({"kubeconfig": str(missing)}, {})
    bad = tmp_path / "bad"
    bad.write_text("a: [unclosed")
    with pytest.raises(check.CheckError, match="cannot be read as YAML"):
        check.locate({"kubeconfig": str(bad)}, {})
    good = tmp_path / "good"
    good.write_text(yaml.safe_dump(KUBECONFIG))
    assert check.locate({"kubeconfig": str(good), "context": "two"}, {}) == (str(good), "two", "https://api.example.com")
    assert check.locate({"kubeconfig": KUBECONFIG}, {}) == ("", "one", "https://10.0.0.1:6443")
    assert check.locate({"host": "https://h:1", "context": None}, {}) == ("", "", "https://h:1")


def test_require_reachable_accepts_a_listener_and_names_a_dead_server() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        check.require_reachable(f"https://127.0.0.1:{port}", "kc", 2)
    # The port is closed now: refused, retried for about a second even with a long timeout, then a
    # message naming server and kubeconfig.
    started = time.monotonic()
    with pytest.raises(check.CheckError, match=rf"https://127.0.0.1:{port} \(kubeconfig kc\) is not reachable within 30 s"):
        check.require_reachable(f"https://127.0.0.1:{port}", "kc", 30)
    assert time.monotonic() - started < 10, "a refused connection must not wait out the whole timeout"


def node(name: str, ready: str | None, reason: str = "") -> dict[str, Any]:
    conditions = [] if ready is None else [{"type": "Ready", "status": ready, "reason": reason}]
    return {"metadata": {"name": name}, "status": {"conditions": conditions, "nodeInfo": {"kubeletVersion": "v1.20.2"}}}


class FakeAPI:
    """Answers k8s_json.call by (method, path); node lists are served in order."""

    def __init__(self, node_lists: list[list[dict[str, Any]]], allowed: bool = True) -> None:
        self.node_lists = node_lists
        self.allowed = allowed
        self.calls: list[tuple[str, str]] = []

    def __call__(self, _client: Any, method: str, path: str, body: Any = None, **_: Any) -> Any:
        self.calls.append((method, path))
        if path == "/api/v1/nodes":
            return {"items": self.node_lists.pop(0) if len(self.node_lists) > 1 else self.node_lists[0]}
        if path.endswith("/selfsubjectaccessreviews"):
            assert body["spec"]["resourceAttributes"] == {"namespace": "ns", "verb": "create", "resource": "pods"}
            return {"status": {"allowed": self.allowed, "reason": "" if self.allowed else "RBAC: no"}}
        raise AssertionError(path)


def test_wait_nodes_ready_waits_then_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeAPI([[node("a", "False", "KubeletNotReady")], [node("a", "True")]])
    monkeypatch.setattr(check, "call", fake)
    monkeypatch.setattr(check.time, "sleep", lambda _s: None)
    nodes = check.wait_nodes_ready(object(), 60)
    assert nodes == [{"name": "a", "ready": True, "reason": "", "kubelet_version": "v1.20.2"}]
    assert fake.calls.count(("GET", "/api/v1/nodes")) == 2


def test_wait_nodes_ready_names_the_unready_nodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(check, "call", FakeAPI([[node("a", "True"), node("b", None)]]))
    with pytest.raises(check.CheckError, match=r"Nodes not Ready after 0 s: b \(no Ready condition\)"):
        check.wait_nodes_ready(object(), 0)
    monkeypatch.setattr(check, "call", FakeAPI([[]]))
    with pytest.raises(check.CheckError, match="has no nodes"):
        check.wait_nodes_ready(object(), 0)


@pytest.mark.parametrize("allowed", [True, False])
def test_can_create_pods(monkeypatch: pytest.MonkeyPatch, allowed: bool) -> None:
    monkeypatch.setattr(check, "call", FakeAPI([[]], allowed=allowed))
    assert check.can_create_pods(object(), "ns") == (allowed, "" if allowed else "RBAC: no")
