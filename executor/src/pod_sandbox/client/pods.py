"""Pod lifecycle for one session: create, watch until Ready, explain failures, delete."""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from .errors import (
    KubernetesAPIError,
    SandboxConnectionError,
    SandboxLostError,
    SandboxStartError,
)
from . import pod_start
from .kube import KubeApi

#: Re-exported for callers that list the kubelet's hopeless waiting reasons.
FATAL_WAITING_REASONS = pod_start.FATAL_WAITING_REASONS


def pod_name(pod: Mapping[str, Any]) -> str:
    """The pod's name."""
    return str(pod.get("metadata", {}).get("name", "?"))


def is_ready(pod: Mapping[str, Any]) -> bool:
    """True when the pod is Running and its Ready condition is True."""
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def failure_reason(pod: Mapping[str, Any], unschedulable_grace_s: float = 0.0) -> str | None:
    """Why the pod can never become Ready (the cluster's words, then the fix), or None while it may.

    Unschedulable (Insufficient cpu, an untolerated taint), image pull errors, crash loops and
    containers that exit at start all count at once; see :mod:`pod_sandbox.client.pod_start`.
    """
    problem = pod_start.start_problem(dict(pod), unschedulable_grace_s)
    if problem is None:
        return None
    said, fix = problem
    return f"{said}\n  fix: {fix}"


def describe(pod: Mapping[str, Any], events: list[dict[str, Any]]) -> str:
    """A short, readable account of a pod's state and its latest events."""
    status = pod.get("status") or {}
    lines = [f"pod {pod.get('metadata', {}).get('namespace', '?')}/{pod_name(pod)}: phase {status.get('phase', '?')}"]
    if status.get("reason") or status.get("message"):
        lines.append(f"  reason: {status.get('reason', '')} {status.get('message', '')}".rstrip())
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            lines.append(
                f"  condition {cond.get('type')}={cond.get('status')}"
                f" {cond.get('reason', '')} {cond.get('message', '')}".rstrip()
            )
    for cs in status.get("containerStatuses") or []:
        for state, detail in (cs.get("state") or {}).items():
            extra = " ".join(
                str(detail.get(k)) for k in ("reason", "exitCode", "message") if detail.get(k) is not None
            )
            lines.append(f"  container {cs.get('name')}: {state} {extra}".rstrip())
    for ev in events[-10:]:
        lines.append(f"  event {ev.get('type', '')} {ev.get('reason', '')}: {ev.get('message', '')}")
    return "\n".join(lines)


class PodLauncher:
    """Creates session pods and waits for them with a watch (no polling of the API)."""

    def __init__(
        self,
        kube: KubeApi,
        clock: Callable[[], float] = time.monotonic,
        unschedulable_grace_s: float = 0.0,
    ) -> None:
        self.kube = kube
        self._clock = clock
        self.unschedulable_grace_s = unschedulable_grace_s

    def diagnose(self, pod: Mapping[str, Any]) -> str:
        """``describe`` with fresh state and events; never raises."""
        name = pod_name(pod)
        try:
            pod = self.kube.get_pod(name)
        except Exception:  # noqa: BLE001 - best effort for an error message
            pass
        try:
            events = self.kube.list_events(name)
        except Exception:  # noqa: BLE001
            events = []
        return describe(pod, events)

    def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create the pod; errors name the namespace and the API's reason (quota, PSS, RBAC)."""
        try:
            return self.kube.create_pod(dict(manifest))
        except KubernetesAPIError as exc:
            fix = ""
            if exc.status in (403, 422):
                fix = f"\n  fix: {pod_start.create_refusal_fix(exc.body or str(exc))}"
            raise SandboxStartError(
                f"cannot create a sandbox pod in namespace {self.kube.namespace}: {exc}{fix}"
            ) from exc

    def wait_ready(self, pod: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
        """Follow the pod with a watch until it is Ready; raise with its events if it cannot be."""
        name = pod_name(pod)
        current = dict(pod)
        deadline = self._clock() + timeout_s
        while True:
            reason = failure_reason(current, self.unschedulable_grace_s)
            if reason:
                raise SandboxStartError(f"sandbox pod {name} cannot start: {reason}\n{self.diagnose(current)}")
            if is_ready(current):
                return current
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise SandboxStartError(
                    f"sandbox pod {name} not Ready after {timeout_s:.0f} s\n{self.diagnose(current)}"
                )
            rv = current.get("metadata", {}).get("resourceVersion")
            if self.unschedulable_grace_s > 0:
                # An Unschedulable verdict ages without a pod event: look again when its grace ends.
                remaining = min(remaining, max(1.0, self.unschedulable_grace_s))
            try:
                current = self._follow(name, current, rv, remaining)
            except SandboxConnectionError:
                current = self._refetch(name)

    def _follow(
        self, name: str, current: dict[str, Any], rv: str | None, remaining: float
    ) -> dict[str, Any]:
        """Consume one watch until the pod changes into a final or ready state, or the watch ends."""
        for event in self.kube.watch_pods(
            resource_version=rv,
            timeout_s=remaining,
            field_selector=f"metadata.name={name}",
        ):
            if event.type == "BOOKMARK":
                rv = event.object.get("metadata", {}).get("resourceVersion", rv)
                current.setdefault("metadata", {})["resourceVersion"] = rv
                continue
            if event.type == "ERROR":
                # 410 Gone (resourceVersion too old) and friends: start over from a fresh GET.
                return self._refetch(name)
            if event.type == "DELETED":
                raise SandboxLostError(f"sandbox pod {name} was deleted while starting")
            current = event.object
            if failure_reason(current, self.unschedulable_grace_s) or is_ready(current):
                return current
        return current

    def _refetch(self, name: str) -> dict[str, Any]:
        try:
            return self.kube.get_pod(name)
        except KubernetesAPIError as exc:
            if exc.status == 404:
                raise SandboxLostError(f"sandbox pod {name} disappeared while starting") from exc
            raise

    def delete(self, name: str, uid: str | None = None) -> bool:
        """Delete with grace period 0 (the session is over; nothing in it is worth waiting for)."""
        return self.kube.delete_pod(name, grace_period_seconds=0, uid=uid)
