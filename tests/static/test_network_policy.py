"""The rendered NetworkPolicies, evaluated as a conforming CNI would (the 1.20 test cluster does
not enforce them): sandbox pods take connections on port api only from client pods and the
monitoring namespace, and can reach nothing."""
from __future__ import annotations

from pathlib import Path

import pytest

from manifests import Manifest
from netpol import Endpoint, egress_allowed, ingress_allowed, selector_matches


def sandbox_endpoint(found: list[Manifest]) -> Endpoint:
    pods = [m for m in found if m.kind == "Pod"]
    assert pods, "no Pod rendered"
    pod = pods[0].obj
    ns = pod["metadata"].get("namespace") or next(m.name for m in found if m.kind == "Namespace")
    ports = {p["name"]: p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports") or [] if "name" in p}
    return Endpoint(ns, {"kubernetes.io/metadata.name": ns}, dict(pod["metadata"].get("labels") or {}), ports)


def policies_of(found: list[Manifest]) -> list[dict]:
    return [m.obj for m in found if m.kind == "NetworkPolicy"]


def test_evaluator_self_check() -> None:
    assert selector_matches({}, {"a": "b"})
    assert not selector_matches({"matchLabels": {"a": "c"}}, {"a": "b"})
    assert selector_matches({"matchExpressions": [{"key": "a", "operator": "In", "values": ["b"]}]}, {"a": "b"})
    assert not selector_matches({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": "b"})
    target = Endpoint("ns", labels={"app": "x"}, named_ports={"api": 8080})
    other = Endpoint("elsewhere", labels={"app": "y"})
    assert ingress_allowed([], other, target, 8080), "no policy: not isolated"
    deny = {"metadata": {"namespace": "ns"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    assert not ingress_allowed([deny], other, target, 8080)
    assert not egress_allowed([deny], target, other, 443)


def test_clients_reach_port_api(rendered: tuple[Path, list[Manifest]]) -> None:
    found = rendered[1]
    sandbox = sandbox_endpoint(found)
    policies = policies_of(found)
    client = Endpoint("analytics", {"kubernetes.io/metadata.name": "analytics"}, {"pandasai.io/sandbox-client": "true"})
    port = sandbox.named_ports["api"]
    assert ingress_allowed(policies, client, sandbox, port), "a client pod cannot reach port api"
    assert not ingress_allowed(policies, client, sandbox, port + 1), "a client pod reaches another port"
    assert not ingress_allowed(policies, client, sandbox, port, "UDP"), "UDP is let in"


@pytest.mark.parametrize("who", ["random pod elsewhere", "unlabelled pod in the namespace", "another sandbox pod"])
def test_everyone_else_is_refused(rendered: tuple[Path, list[Manifest]], who: str) -> None:
    found = rendered[1]
    sandbox = sandbox_endpoint(found)
    source = {
        "random pod elsewhere": Endpoint("default", {"kubernetes.io/metadata.name": "default"}, {"app": "web"}),
        "unlabelled pod in the namespace": Endpoint(sandbox.namespace, sandbox.namespace_labels, {}),
        "another sandbox pod": sandbox,
    }[who]
    assert not ingress_allowed(policies_of(found), source, sandbox, sandbox.named_ports["api"]), f"{who} reaches the sandbox"


def test_monitoring_scrapes_port_api(rendered: tuple[Path, list[Manifest]]) -> None:
    found = rendered[1]
    sandbox = sandbox_endpoint(found)
    prometheus = Endpoint("monitoring", {"kubernetes.io/metadata.name": "monitoring"}, {"app": "prometheus"})
    assert ingress_allowed(policies_of(found), prometheus, sandbox, sandbox.named_ports["api"])


@pytest.mark.parametrize(("where", "port"), [("kube-dns", 53), ("internet", 443), ("api-server", 6443),
                                              ("metadata", 80), ("another sandbox pod", 8080)])
def test_sandbox_egress_is_closed(rendered: tuple[Path, list[Manifest]], where: str, port: int) -> None:
    found = rendered[1]
    sandbox = sandbox_endpoint(found)
    target = sandbox if where == "another sandbox pod" else \
        Endpoint("kube-system", {"kubernetes.io/metadata.name": "kube-system"}, {"k8s-app": where})
    for protocol in ("TCP", "UDP"):
        assert not egress_allowed(policies_of(found), sandbox, target, port, protocol), f"sandbox reaches {where}:{port}/{protocol}"
