"""Claim one Ready pod of the warm pool atomically with a guarded JSON patch.

The pool is a ReplicaSet whose selector includes ``pandasai.io/pool=warm``. A claim is one
RFC 6902 patch: ``test`` that the label still says ``warm``, then ``replace`` it with
``claimed`` and add the session labels. The API server applies a JSON patch atomically against
the object it stores (retrying on resourceVersion conflicts), so when two clients race for one
pod the second one's ``test`` fails (HTTP 422) and it moves on. The claimed pod no longer
matches the ReplicaSet's selector: the ReplicaSet releases it and starts a replacement.
"""

from __future__ import annotations

import logging
import random
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from .errors import KubernetesAPIError
from .kube import KubeApi
from .pods import failure_reason, is_ready
from .template import (
    CLAIMED_AT_ANNOTATION,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    OWNER_HOST_ANNOTATION,
    OWNER_LABEL,
    OWNER_PID_ANNOTATION,
    POOL_CLAIMED,
    POOL_LABEL,
    POOL_WARM,
    SESSION_LABEL,
    Owner,
    json_pointer,
    label_value,
    now_rfc3339,
)

log = logging.getLogger("pod_sandbox.client")

WARM_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE},{POOL_LABEL}={POOL_WARM}"
#: Session lifetime of warm pods: ReplicaSet templates cannot carry activeDeadlineSeconds, so the
#: warm_pool role writes the template's value here and the claim sets it on the pod.
DEADLINE_ANNOTATION = "pandasai.io/active-deadline-seconds"


def parse_time(stamp: str | None) -> datetime | None:
    """A Kubernetes RFC 3339 timestamp as an aware datetime (None when absent or malformed)."""
    if not stamp:
        return None
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def remaining_lifetime_s(pod: Mapping[str, Any], now: datetime) -> float:
    """Seconds before ``activeDeadlineSeconds`` ends the pod (infinite when none is set)."""
    deadline = (pod.get("spec") or {}).get("activeDeadlineSeconds")
    if not deadline:
        return float("inf")
    started = parse_time((pod.get("status") or {}).get("startTime")) or parse_time(
        (pod.get("metadata") or {}).get("creationTimestamp")
    )
    if started is None:
        return float(deadline)
    return float(deadline) - (now - started).total_seconds()


def claimable(pod: Mapping[str, Any], now: datetime, min_lifetime_s: float) -> bool:
    """A warm pod worth trying: Ready, not ending, with enough lifetime left."""
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return (
        labels.get(POOL_LABEL) == POOL_WARM
        and SESSION_LABEL not in labels
        and is_ready(pod)
        and failure_reason(pod) is None
        and remaining_lifetime_s(pod, now) >= min_lifetime_s
    )


def deadline_operation(pod: Mapping[str, Any], now: datetime) -> dict[str, Any] | None:
    """Add ``activeDeadlineSeconds`` so the claimed pod lives the template's lifetime from now.

    The deadline counts from the pod's start, so the pod's age is added. Kubernetes lets a pod's
    deadline be set when unset (or lowered), never raised: pods that already have one keep it.
    """
    if (pod.get("spec") or {}).get("activeDeadlineSeconds"):
        return None
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(DEADLINE_ANNOTATION)
    try:
        lifetime = int(str(raw))
    except ValueError:
        return None
    if lifetime <= 0:
        return None
    started = parse_time((pod.get("status") or {}).get("startTime")) or parse_time(
        (pod.get("metadata") or {}).get("creationTimestamp")
    )
    age = max(0, int((now - started).total_seconds())) if started else 0
    return {"op": "add", "path": "/spec/activeDeadlineSeconds", "value": age + lifetime}


def claim_patch(
    pod: Mapping[str, Any], session_id: str, owner: Owner, now: datetime | None = None
) -> list[dict[str, Any]]:
    """The guarded JSON patch that turns a warm pod into this session's pod."""
    labels = "/metadata/labels/"
    ops: list[dict[str, Any]] = [
        {"op": "test", "path": labels + json_pointer(POOL_LABEL), "value": POOL_WARM},
        {"op": "replace", "path": labels + json_pointer(POOL_LABEL), "value": POOL_CLAIMED},
        {"op": "add", "path": labels + json_pointer(SESSION_LABEL), "value": session_id},
        {"op": "add", "path": labels + json_pointer(OWNER_LABEL), "value": label_value(owner.host)},
    ]
    notes = {
        OWNER_HOST_ANNOTATION: owner.host,
        OWNER_PID_ANNOTATION: str(owner.pid),
        CLAIMED_AT_ANNOTATION: now_rfc3339(),
    }
    if (pod.get("metadata") or {}).get("annotations"):
        ops += [
            {"op": "add", "path": "/metadata/annotations/" + json_pointer(k), "value": v}
            for k, v in notes.items()
        ]
    else:
        ops.append({"op": "add", "path": "/metadata/annotations", "value": notes})
    deadline = deadline_operation(pod, now or datetime.now(timezone.utc))
    if deadline is not None:
        ops.append(deadline)
    return ops


class WarmPool:
    """Finds and claims warm pods in one namespace."""

    def __init__(
        self,
        kube: KubeApi,
        *,
        min_lifetime_s: float = 300.0,
        extra_selector: str | None = None,
        rng: random.Random | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.kube = kube
        self.min_lifetime_s = min_lifetime_s
        self.selector = WARM_SELECTOR + (f",{extra_selector}" if extra_selector else "")
        self._rng = rng or random.Random()
        self._now = now
        self.conflicts = 0

    def candidates(self) -> list[dict[str, Any]]:
        """Ready warm pods, in random order (spreads concurrent clients over the pool)."""
        try:
            pods = self.kube.list_pods(label_selector=self.selector).get("items", [])
        except KubernetesAPIError as exc:
            if exc.status in (403, 404):
                return []
            raise
        now = self._now()
        ready = [p for p in pods if claimable(p, now, self.min_lifetime_s)]
        self._rng.shuffle(ready)
        return ready

    def starting(self) -> list[dict[str, Any]]:
        """Warm pods the ReplicaSet is still starting (a refill under way), oldest first.

        When a burst has taken every Ready pod, claiming one of these is sooner than a cold pod:
        it has been starting since the claim that emptied its place in the pool.
        """
        try:
            pods = self.kube.list_pods(label_selector=self.selector).get("items", [])
        except KubernetesAPIError as exc:
            if exc.status in (403, 404):
                return []
            raise
        now = self._now()
        found = [
            p for p in pods
            if ((p.get("metadata") or {}).get("labels") or {}).get(POOL_LABEL) == POOL_WARM
            and SESSION_LABEL not in ((p.get("metadata") or {}).get("labels") or {})
            and not is_ready(p)
            and failure_reason(p) is None
            and remaining_lifetime_s(p, now) >= self.min_lifetime_s
        ]
        return sorted(found, key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp", "")))

    def try_claim(self, pod: Mapping[str, Any], session_id: str, owner: Owner) -> dict[str, Any] | None:
        """Claim this warm pod; None when another client got it first (or it is gone).

        Raises :class:`PermissionError` when this identity may not patch pods at all.
        """
        name = pod["metadata"]["name"]
        try:
            claimed = self.kube.patch_pod_json(name, claim_patch(pod, session_id, owner, self._now()))
        except KubernetesAPIError as exc:
            # 422: the test failed (someone else claimed it); 404: it is gone; 409: conflict.
            if exc.status in (404, 409, 422):
                self.conflicts += 1
                return None
            if exc.status == 403:
                raise PermissionError(f"cannot claim warm pods (RBAC: pods patch): {exc}") from exc
            raise
        labels = claimed.get("metadata", {}).get("labels", {})
        if labels.get(SESSION_LABEL) == session_id and labels.get(POOL_LABEL) == POOL_CLAIMED:
            return claimed
        return None

    def claim(self, session_id: str, owner: Owner) -> dict[str, Any] | None:
        """Claim one warm pod for ``session_id``; None when no pod is free (take a cold one)."""
        try:
            for pod in self.candidates():
                claimed = self.try_claim(pod, session_id, owner)
                if claimed is not None:
                    return claimed
        except PermissionError as exc:
            log.warning("%s", exc)
        return None
