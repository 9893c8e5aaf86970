"""NetworkPolicy semantics (networking.k8s.io/v1), evaluated offline.

The local 1.20 cluster stores NetworkPolicies without enforcing them (no policy-capable CNI),
so the rendered policies are evaluated here the way a conforming CNI would:
`ingress_allowed(...)` / `egress_allowed(...)` answer whether a connection is let through.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    """A pod: its namespace, the namespace's labels, its labels and its named container ports."""

    namespace: str
    namespace_labels: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    named_ports: dict[str, int] = field(default_factory=dict)


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """LabelSelector semantics: an empty selector matches everything."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _peer_matches(peer: dict[str, Any], policy_ns: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        return False  # pod-to-pod evaluation: ipBlock peers are about cluster-external addresses
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != policy_ns:
        return False
    return selector_matches(peer.get("podSelector"), other.labels) if "podSelector" in peer else True


def _port_matches(ports: list[dict[str, Any]] | None, target: Endpoint, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        number = target.named_ports.get(wanted) if isinstance(wanted, str) else wanted
        end = entry.get("endPort", number)
        if number is not None and number <= port <= end:
            return True
    return False


def _selecting(policies: list[dict[str, Any]], pod: Endpoint, direction: str) -> list[dict[str, Any]]:
    out = []
    for policy in policies:
        meta, spec = policy.get("metadata") or {}, policy.get("spec") or {}
        if meta.get("namespace") != pod.namespace or not selector_matches(spec.get("podSelector"), pod.labels):
            continue
        types = spec.get("policyTypes") or (["Ingress", "Egress"] if spec.get("egress") else ["Ingress"])
        if direction in types:
            out.append(policy)
    return out


def ingress_allowed(policies: list[dict[str, Any]], source: Endpoint, target: Endpoint, port: int,
                    protocol: str = "TCP") -> bool:
    selecting = _selecting(policies, target, "Ingress")
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            if (not peers or any(_peer_matches(p, target.namespace, source) for p in peers)) \
                    and _port_matches(rule.get("ports"), target, port, protocol):
                return True
    return False


def egress_allowed(policies: list[dict[str, Any]], source: Endpoint, target: Endpoint, port: int,
                   protocol: str = "TCP") -> bool:
    selecting = _selecting(policies, source, "Egress")
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("egress") or []:
            peers = rule.get("to")
            if (not peers or any(_peer_matches(p, source.namespace, target) for p in peers)) \
                    and _port_matches(rule.get("ports"), target, port, protocol):
                return True
    return False
