"""The Pod Security Standards checker itself: it passes a restricted pod and catches each breach."""
from __future__ import annotations

import copy
from typing import Any

import pytest

import pss

GOOD: dict[str, Any] = {
    "automountServiceAccountToken": False,
    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{
        "name": "sandbox",
        "image": "pandasai-sandbox-pod:0123456789abcdef",
        "securityContext": {
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "ports": [{"name": "api", "containerPort": 8080}],
    }],
    "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory"}}],
}


def mutate(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(GOOD)
    target: Any = spec
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target.setdefault(key, {})
    last = keys[-1]
    if value is None:
        target.pop(last, None)
    else:
        target[last] = value
    return spec


def test_restricted_pod_passes() -> None:
    assert pss.violations(GOOD) == []


@pytest.mark.parametrize(("path", "value", "needle"), [
    ("hostNetwork", True, "hostNetwork"),
    ("hostPID", True, "hostPID"),
    ("containers.0.securityContext.privileged", True, "privileged"),
    ("containers.0.securityContext.allowPrivilegeEscalation", None, "allowPrivilegeEscalation"),
    ("containers.0.securityContext.capabilities", {"drop": ["NET_RAW"]}, "drop must include ALL"),
    ("containers.0.securityContext.capabilities", {"drop": ["ALL"], "add": ["SYS_ADMIN"]}, "SYS_ADMIN"),
    ("securityContext.runAsNonRoot", None, "runAsNonRoot"),
    ("securityContext.runAsUser", 0, "runAsUser"),
    ("securityContext.seccompProfile", None, "seccompProfile"),
    ("securityContext.seccompProfile", {"type": "Unconfined"}, "Unconfined"),
    ("volumes", [{"name": "host", "hostPath": {"path": "/"}}], "hostPath"),
    ("containers.0.ports", [{"containerPort": 8080, "hostPort": 8080}], "hostPort"),
])
def test_each_breach_is_caught(path: str, value: Any, needle: str) -> None:
    found = pss.violations(mutate(path, value))
    assert any(needle in v for v in found), found
