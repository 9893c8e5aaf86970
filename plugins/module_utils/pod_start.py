# -*- coding: utf-8 -*-
# Copyright: PandasAI pod-sandbox maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Why a starting sandbox pod will not become Ready by waiting longer, and what fixes it.

The verify role's test pod (module sandbox_probe) and the client's session pod stop waiting as
soon as the scheduler or the kubelet has said no: an unschedulable pod (Insufficient cpu, an
untolerated taint, no node with the selected labels), an image that cannot be pulled, a
container that exits at start or crash loops. Each verdict carries the cluster's own words and
the fix. One file, two places: plugins/module_utils/pod_start.py (the collection's modules) and
executor/src/pod_sandbox/client/pod_start.py (the client, installed without the collection);
tests/unit/plugins/module_utils/test_pod_start.py fails unless both are byte-identical.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from datetime import datetime, timezone
from typing import Any, Dict, Optional, Tuple

#: Container waiting reasons that never resolve by themselves.
IMAGE_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
CRASH_REASONS = frozenset({"CrashLoopBackOff", "RunContainerError", "CreateContainerError"})
CONFIG_REASONS = frozenset({"CreateContainerConfigError"})
FATAL_WAITING_REASONS = IMAGE_REASONS | CRASH_REASONS | CONFIG_REASONS

FIX_IMAGE = ("the node has no such image and cannot pull it: run the image and template steps again "
             "(--tags image,template) with image_target matching the cluster (kind, minikube, local), or "
             "push it to image_registry; for a private registry set pod_template_image_pull_secrets")
FIX_CRASH = ("the executor exits at start: read the container log (the last lines follow), fix the "
             "pod_template_args/pod_template_env that break it, or rebuild the image (--tags image,template)")
FIX_CONFIG = ("the container spec refers to something the kubelet cannot provide (a ConfigMap or Secret key, "
              "a non-root check against the image's user): see the message, fix the pod template")
FIX_RESOURCES = ("no node has that much {resources} free for the pod's requests: lower "
                 "pod_template_cpu_request/pod_template_memory_request, end leftover sessions "
                 "(pod-sandbox-reaper) or shrink the warm pool, or add node capacity")
FIX_TAINT = ("a node taint the pod does not tolerate ({taints}): if node_placement set it, enable "
             "pod_sandbox_node_placement_enabled so the template tolerates it; a taint left by an earlier "
             "deploy is removed by playbooks/teardown.yml --tags nodes; else remove it (kubectl taint nodes "
             "NODE KEY-) or add it to pod_template_extra_tolerations")
FIX_SELECTOR = ("no node carries the labels the pod selects ({selector}): label pod_sandbox_nodes with "
                "site.yml --tags nodes, or set pod_sandbox_node_placement_enabled: false")
FIX_UNSCHEDULABLE = "the scheduler found no node for the pod: see its message; free or add capacity"
FIX_QUOTA = ("the namespace's ResourceQuota is used up: delete leftover sessions (pod-sandbox-reaper), "
             "shrink the warm pool (warm_pool_replicas, warm_pool_surge), or raise resource_limits_quota_hard")
FIX_LIMITS = ("the namespace's LimitRange bounds each container: keep pod_template_cpu_*/pod_template_memory_* "
              "within resource_limits_container_min/_max, or change those bounds")
FIX_ADMISSION = ("admission refused the pod: keep the template within the namespace's Pod Security level "
                 "(the shipped template complies; check pod_template_env, volumes, users you added)")
FIX_RBAC = ("this identity may not create pods here: bind the pod-manager Role (rbac role, "
            "rbac_extra_subjects) or use a kubeconfig that has it")
FIX_ENDED = "the pod ended before it was Ready (deadline, eviction or a delete): start a new one"

TAINT_RE = re.compile(r"taint \{([^}]*)\}")


def _parse_time(stamp: Optional[str]) -> Optional[datetime]:
    if not stamp:
        return None
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def unschedulable_fix(message: str, pod: Dict[str, Any]) -> str:
    """The fix for a scheduler message such as ``0/1 nodes are available: 1 Insufficient cpu.``"""
    resources = sorted(set(r.rstrip(".") for r in re.findall(r"Insufficient ([a-z0-9./-]+)", message)))
    if resources:
        return FIX_RESOURCES.format(resources=" and ".join(resources))
    if "taint" in message:
        taints = ", ".join(sorted(set(TAINT_RE.findall(message)))) or "see the message"
        return FIX_TAINT.format(taints=taints)
    if "node selector" in message or "affinity" in message:
        selector = ((pod.get("spec") or {}).get("nodeSelector")) or {}
        shown = ", ".join("%s=%s" % item for item in sorted(selector.items())) or "node affinity"
        return FIX_SELECTOR.format(selector=shown)
    return FIX_UNSCHEDULABLE


def start_problem(pod: Dict[str, Any], unschedulable_grace_s: float = 0.0,
                  now: Optional[datetime] = None) -> Optional[Tuple[str, str]]:
    """``(what the cluster said, the fix)`` when the pod cannot become Ready by waiting, else None.

    An Unschedulable verdict counts once it is ``unschedulable_grace_s`` old (0: at once; raise it
    where a node autoscaler may add capacity), and never while the scheduler has nominated a node
    (it is preempting lower-priority pods for this one).
    """
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    if meta.get("deletionTimestamp"):
        return "the pod is being deleted", FIX_ENDED
    phase = status.get("phase")
    ended = None
    if phase in ("Failed", "Succeeded"):
        why = status.get("reason") or phase
        message = status.get("message")
        ended = "phase %s (%s%s)" % (phase, why, ": " + message if message else ""), FIX_ENDED
        if status.get("reason"):  # ended by the cluster (DeadlineExceeded, Evicted): not a crash
            return ended
    for condition in status.get("conditions") or []:
        if (condition.get("type") == "PodScheduled" and condition.get("status") == "False"
                and condition.get("reason") == "Unschedulable" and not status.get("nominatedNodeName")):
            since = _parse_time(condition.get("lastTransitionTime"))
            current = now or datetime.now(timezone.utc)
            if unschedulable_grace_s > 0 and since is not None \
                    and (current - since).total_seconds() < unschedulable_grace_s:
                continue
            message = condition.get("message") or "no node fits"
            return "unschedulable: %s" % message, unschedulable_fix(message, pod)
    restart_policy = spec.get("restartPolicy", "Always")
    for container in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        name = container.get("name")
        state = container.get("state") or {}
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason")
        if reason in FATAL_WAITING_REASONS:
            said = "container %s: %s" % (name, reason)
            if waiting.get("message"):
                said += ": %s" % waiting["message"]
            fix = FIX_IMAGE if reason in IMAGE_REASONS else FIX_CONFIG if reason in CONFIG_REASONS else FIX_CRASH
            return said, fix
        terminated = state.get("terminated")
        if not terminated and int(container.get("restartCount") or 0) > 0:
            terminated = (container.get("lastState") or {}).get("terminated")
        elif terminated and restart_policy != "Never" and int(container.get("restartCount") or 0) == 0:
            terminated = None  # about to be restarted once: a crash loop only from the second start
        if terminated:
            said = "container %s exited: %s, exit code %s" % (
                name, terminated.get("reason", "?"), terminated.get("exitCode", "?"))
            if terminated.get("message"):
                said += ": %s" % terminated["message"]
            return said, FIX_CRASH
    return ended


def create_refusal_fix(message: str) -> str:
    """The fix for an API refusal of a pod create (quota, admission, RBAC)."""
    text = message.lower()
    if "exceeded quota" in text or "must specify limits" in text or "must specify requests" in text:
        return FIX_QUOTA
    if "usage per container" in text or "usage per pod" in text or "limit to request ratio" in text:
        return FIX_LIMITS
    if "podsecurity" in text or "pod security policy" in text or "securitycontext" in text or "violates" in text:
        return FIX_ADMISSION
    if "cannot create resource" in text:
        return FIX_RBAC
    return "see the API server's message"
