"""``pod-sandbox-reaper``: delete sandbox pods a crashed client leaked, or that already ended.

Deleted: pods labelled ``app.kubernetes.io/managed-by=pandasai-pod-sandbox`` that are
Succeeded or Failed, and session pods (``pandasai.io/session`` set, or ``pandasai.io/pool=claimed``)
older than the TTL, counted from their ``pandasai.io/claimed-at`` annotation (else creation).
Warm pool pods that nobody claimed are left to their ReplicaSet.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from .errors import SandboxError
from .kube import KubeApi
from .pool import parse_time
from .template import (
    CLAIMED_AT_ANNOTATION,
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    POOL_CLAIMED,
    POOL_LABEL,
    SESSION_LABEL,
)

MANAGED_SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY_VALUE}"


@dataclass(frozen=True)
class Doomed:
    """A pod the reaper deletes, and why."""

    name: str
    uid: str | None
    reason: str


def session_age_s(pod: Mapping[str, Any], now: datetime) -> float | None:
    """Seconds since the pod was claimed (or created); None when unknown."""
    meta = pod.get("metadata") or {}
    since = parse_time((meta.get("annotations") or {}).get(CLAIMED_AT_ANNOTATION)) or parse_time(
        meta.get("creationTimestamp")
    )
    return None if since is None else (now - since).total_seconds()


def plan(pods: Iterable[Mapping[str, Any]], now: datetime, ttl_s: float) -> list[Doomed]:
    """Which pods to delete: ended ones, and session pods older than ``ttl_s``."""
    doomed: list[Doomed] = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(MANAGED_BY_LABEL) != MANAGED_BY_VALUE or meta.get("deletionTimestamp"):
            continue
        phase = (pod.get("status") or {}).get("phase")
        name, uid = meta.get("name", "?"), meta.get("uid")
        if phase in ("Succeeded", "Failed"):
            doomed.append(Doomed(name, uid, f"phase {phase}"))
            continue
        if SESSION_LABEL in labels or labels.get(POOL_LABEL) == POOL_CLAIMED:
            age = session_age_s(pod, now)
            if age is not None and age > ttl_s:
                doomed.append(Doomed(name, uid, f"session age {age:.0f}s > ttl {ttl_s:.0f}s"))
    return doomed


def reap(kube: KubeApi, ttl_s: float, dry_run: bool, now: datetime | None = None) -> list[dict[str, Any]]:
    """Delete (or, dry run, list) the doomed pods; returns one record per pod."""
    pods = kube.list_pods(label_selector=MANAGED_SELECTOR).get("items", [])
    records = []
    for item in plan(pods, now or datetime.now(timezone.utc), ttl_s):
        deleted = False
        if not dry_run:
            deleted = kube.delete_pod(item.name, grace_period_seconds=0, uid=item.uid)
        records.append(
            {"pod": item.name, "reason": item.reason, "action": "would delete" if dry_run else
             ("deleted" if deleted else "already gone")}
        )
    return records


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="pod-sandbox-reaper",
        description="Delete leaked or finished PandasAI sandbox pods (managed-by label).",
    )
    p.add_argument("--namespace", default="pandasai-sandbox")
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--context", default=None)
    p.add_argument("--ttl", type=float, default=3600.0, help="session pod age limit in seconds [3600]")
    p.add_argument("--dry-run", action="store_true", help="only print what would be deleted")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: one JSON line per pod acted on, then a summary line."""
    args = build_parser().parse_args(argv)
    if args.ttl <= 0:
        print("pod-sandbox-reaper: --ttl must be positive", file=sys.stderr)
        return 2
    try:
        kube = KubeApi.from_kubeconfig(args.namespace, args.kubeconfig, args.context)
        try:
            records = reap(kube, args.ttl, args.dry_run)
        finally:
            kube.close()
    except SandboxError as exc:
        print(f"pod-sandbox-reaper: {exc}", file=sys.stderr)
        return 1
    for record in records:
        print(json.dumps(record))
    print(json.dumps({"namespace": args.namespace, "dry_run": args.dry_run, "count": len(records)}))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
