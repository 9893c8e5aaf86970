# -*- coding: utf-8 -*-
# Copyright: PandasAI pod-sandbox maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The troubleshooting entries of docs/troubleshooting.md as rules over a snapshot of the sandbox namespace.

``diagnose(snapshot)`` reads what the sandbox_diagnose module gathered (plain API JSON: pods,
events, quotas, nodes, the pod template, access reviews, image presence, the monitoring
pipeline) and returns one finding per known failure it recognises, each naming the cause, the
objects involved and the fix. No API calls here, so every rule is unit-tested on plain data.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from typing import Any, Dict, List, Optional

Finding = Dict[str, Any]
#: Waiting reasons that mean the image cannot be had on the node.
IMAGE_REASONS = ("ErrImageNeverPull", "ImagePullBackOff", "ErrImagePull", "InvalidImageName")
#: Client rights the pod-manager Role grants (verb, resource, subresource).
CLIENT_RIGHTS = (("create", "pods", ""), ("get", "pods", ""), ("delete", "pods", ""), ("create", "pods", "portforward"))


def finding(fid: str, severity: str, cause: str, fix: str, objects: List[str], evidence: List[str]) -> Finding:
    return {"id": fid, "severity": severity, "cause": cause, "fix": fix,
            "objects": sorted(set(objects)), "evidence": evidence[:5]}


def _name(obj: Dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


def _waiting(pod: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    for status in ((pod.get("status") or {}).get("containerStatuses") or []):
        waiting = (status.get("state") or {}).get("waiting")
        if waiting:
            out.append({"container": status.get("name", ""), "reason": waiting.get("reason", ""),
                        "message": waiting.get("message", "")})
    return out


def _condition(pod: Dict[str, Any], ctype: str) -> Optional[Dict[str, Any]]:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond
    return None


def tolerates(tolerations: List[Dict[str, Any]], taint: Dict[str, Any]) -> bool:
    """Kubernetes' toleration matching (operator Exists/Equal, empty key with Exists = all)."""
    for tol in tolerations or []:
        effect = tol.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        operator = tol.get("operator") or "Equal"
        key = tol.get("key") or ""
        if operator == "Exists" and (not key or key == taint.get("key")):
            return True
        if operator == "Equal" and key == taint.get("key") and (tol.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def untolerated_taints(node: Dict[str, Any], tolerations: List[Dict[str, Any]]) -> List[str]:
    """The node's NoSchedule/NoExecute taints the tolerations do not cover, as key=value:effect."""
    out = []
    for taint in ((node.get("spec") or {}).get("taints") or []):
        if taint.get("effect") in ("NoSchedule", "NoExecute") and not tolerates(tolerations, taint):
            value = taint.get("value")
            out.append("%s%s:%s" % (taint.get("key"), "=" + value if value else "", taint.get("effect")))
    return out


def selector_matches(node: Dict[str, Any], selector: Dict[str, str]) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def _unschedulable(pods: List[Dict[str, Any]], pattern: str) -> List[Dict[str, Any]]:
    out = []
    for pod in pods:
        cond = _condition(pod, "PodScheduled")
        if cond and cond.get("status") == "False" and re.search(pattern, cond.get("message") or ""):
            out.append(pod)
    return out


def check_placement(snap: Dict[str, Any]) -> List[Finding]:
    pods, nodes = snap.get("pods") or [], snap.get("nodes") or []
    spec = (snap.get("template") or {}).get("spec") or {}
    tolerations, selector = spec.get("tolerations") or [], spec.get("nodeSelector") or {}
    found = []
    eligible = [n for n in nodes if selector_matches(n, selector)]
    if nodes and not eligible or _unschedulable(pods, r"didn't match (Pod's )?node (selector|affinity)"):
        found.append(finding(
            "node-selector-mismatch", "error",
            "No node carries the labels the pod template selects (%s)." % (
                ", ".join("%s=%s" % kv for kv in sorted(selector.items())) or "none"),
            "Label the intended nodes (site.yml --tags nodes with node_placement_nodes), or switch node placement off "
            "(pod_sandbox_node_placement_enabled: false) and re-run --tags template.",
            [_name(p) for p in _unschedulable(pods, r"node (selector|affinity)")] + [_name(n) for n in nodes],
            ["node %s labels: %s" % (_name(n), (n.get("metadata") or {}).get("labels") or {}) for n in nodes]))
    blocked = {_name(n): untolerated_taints(n, tolerations) for n in eligible}
    stuck = _unschedulable(pods, r"taint")
    if (eligible and all(blocked.values())) or stuck:
        taints = sorted({t for ts in blocked.values() for t in ts})
        found.append(finding(
            "untolerated-taint", "error",
            "Sandbox pods cannot be scheduled: the nodes carry taints the pod template does not tolerate (%s)."
            % (", ".join(taints) or "see the pods' PodScheduled condition"),
            "Remove the taint (kubectl taint nodes NODE KEY-; playbooks/teardown.yml removes those node_placement "
            "added) or add it to node_placement_taints so the template tolerates it, then re-run --tags nodes,template.",
            [_name(p) for p in stuck] + [n for n, ts in blocked.items() if ts],
            ["%s: %s" % (_name(p), (_condition(p, "PodScheduled") or {}).get("message", "")) for p in stuck]
            + ["node %s: %s" % (n, ", ".join(ts)) for n, ts in blocked.items() if ts]))
    return found


def check_quota(snap: Dict[str, Any]) -> List[Finding]:
    full, evidence = [], []
    for quota in snap.get("quotas") or []:
        status = quota.get("status") or {}
        hard, used = status.get("hard") or {}, status.get("used") or {}
        for resource, limit in hard.items():
            h, u = parse_quantity(limit), parse_quantity(used.get(resource, "0"))
            if h is not None and u is not None and h > 0 and u >= h:
                full.append("%s/%s" % (_name(quota), resource))
                evidence.append("%s: %s used of %s" % (resource, used.get(resource), limit))
    for event in snap.get("events") or []:
        if "exceeded quota" in (event.get("message") or ""):
            evidence.append("event %s: %s" % (event.get("reason", ""), event.get("message", "")))
    if not full and not any(e.startswith("event") for e in evidence):
        return []
    return [finding(
        "quota-exhausted", "error",
        "The namespace's ResourceQuota is used up (%s): new sandbox pods are refused with 'exceeded quota'."
        % (", ".join(full) or "see the events"),
        "Delete leftover sessions (pod-sandbox-reaper, playbooks/reap.yml), shrink the warm pool (warm_pool_replicas) "
        "or raise resource_limits_quota_hard, then re-run --tags limits.",
        [f.split("/")[0] for f in full], evidence)]


def check_images(snap: Dict[str, Any]) -> List[Finding]:
    objects, reasons, evidence = [], set(), []
    for pod in snap.get("pods") or []:
        for wait in _waiting(pod):
            if wait["reason"] in IMAGE_REASONS:
                objects.append(_name(pod))
                reasons.add(wait["reason"])
                evidence.append("%s/%s: %s %s" % (_name(pod), wait["container"], wait["reason"], wait["message"]))
    image = snap.get("template_image") or ""
    if snap.get("image_present") is False:
        reasons.add("not on any node")
        evidence.append("image %s is on none of the nodes %s" % (image, ", ".join(_name(n) for n in snap.get("nodes") or [])))
    if not reasons:
        return []
    return [finding(
        "image-missing", "error",
        "The sandbox image %s cannot be had on the node (%s)." % (image or "(unknown)", ", ".join(sorted(reasons))),
        "Run site.yml --tags image,template so the image is built/loaded (kind, minikube, local) or pushed "
        "(image_target: registry) and the template carries the same image_ref; keep pod_template_image_pull_policy "
        "IfNotPresent for loaded images; private registries need pod_template_image_pull_secrets.",
        objects, evidence)]


def check_rbac(snap: Dict[str, Any]) -> List[Finding]:
    rbac = snap.get("rbac") or {}
    denied = [r for r in rbac.get("reviews") or [] if not r.get("allowed")]
    missing = [o for o, present in (rbac.get("objects") or {}).items() if not present]
    if not denied and not missing:
        return []
    return [finding(
        "rbac-missing", "error",
        "The sandbox identity %s lacks the pod-manager rights (%s)%s." % (
            rbac.get("subject", "?"),
            ", ".join("%s %s%s" % (r["verb"], r["resource"], "/" + r["subresource"] if r.get("subresource") else "")
                      for r in denied) or "none denied",
            "; missing: " + ", ".join(missing) if missing else ""),
        "Re-create the ServiceAccount, Role and RoleBinding with site.yml --tags rbac (or bind your own subject with "
        "rbac_extra_subjects); a client identity needs create on pods/portforward in the namespace.",
        missing, ["denied: %s %s %s" % (r["verb"], r["resource"], r.get("subresource", "")) for r in denied])]


def check_readiness(snap: Dict[str, Any]) -> List[Finding]:
    objects, evidence = [], []
    for pod in snap.get("pods") or []:
        status = pod.get("status") or {}
        ready = _condition(pod, "Ready")
        crash = [w for w in _waiting(pod) if w["reason"] == "CrashLoopBackOff"]
        if status.get("phase") == "Running" and ready and ready.get("status") != "True" or crash:
            objects.append(_name(pod))
            logs = (snap.get("logs") or {}).get(_name(pod)) or []
            evidence.append("%s: %s%s" % (_name(pod), (crash[0]["reason"] if crash else "Running, not Ready"),
                                          ("; last log: " + " | ".join(logs[-3:])) if logs else ""))
    for event in snap.get("events") or []:
        if event.get("reason") == "Unhealthy" and "Readiness probe failed" in (event.get("message") or ""):
            obj = (event.get("involvedObject") or {}).get("name", "")
            if obj in objects:
                evidence.append("event %s: %s" % (obj, event.get("message")))
    if not objects:
        return []
    return [finding(
        "executor-not-ready", "error",
        "Sandbox pods run but their executor does not answer /ready (%s)." % ", ".join(sorted(set(objects))),
        "Read the pod's log (shown in the evidence and in 'logs'): a command, env or limits override in the template "
        "(pod_template_env, pod_template_*) or an image built from another executor version; rebuild with --tags "
        "image,template, or delete the pod so a fresh one starts.",
        objects, evidence)]


def check_admission(snap: Dict[str, Any]) -> List[Finding]:
    evidence = [e.get("message", "") for e in snap.get("events") or []
                if re.search(r"violates PodSecurity|pod security policy|PodSecurityPolicy", e.get("message") or "")]
    if not evidence:
        return []
    return [finding(
        "pod-security-rejected", "error",
        "Pod Security admission refuses sandbox pods.",
        "The shipped template complies with 'restricted'; settings added to it (pod_template_env, volumes, "
        "capabilities, a root user) must too: make test-static names the rule a rendered pod breaks.",
        [], evidence)]


def check_leaks(snap: Dict[str, Any]) -> List[Finding]:
    ended = [p for p in snap.get("pods") or [] if (p.get("status") or {}).get("phase") in ("Failed", "Succeeded")]
    if not ended:
        return []
    return [finding(
        "pods-leaked", "warning",
        "%d sandbox pods ended (activeDeadlineSeconds reached or the executor exited) and were never deleted." % len(ended),
        "Run pod-sandbox-reaper or playbooks/reap.yml; clients must call stop() (or use the with block).",
        [_name(p) for p in ended],
        ["%s: %s %s" % (_name(p), p["status"].get("phase"), p["status"].get("reason", "")) for p in ended])]


def check_monitoring(snap: Dict[str, Any]) -> List[Finding]:
    mon = snap.get("monitoring") or {}
    if not mon.get("enabled"):
        return []
    found = []
    if not mon.get("service_present"):
        found.append(finding(
            "monitoring-service-missing", "warning", "The metrics Service %s is missing." % mon.get("service", ""),
            "Re-run site.yml --tags monitoring.", [mon.get("service", "")], []))
    if mon.get("prometheus_url"):
        if not mon.get("prometheus_ready"):
            found.append(finding(
                "prometheus-unreachable", "warning",
                "Prometheus at %s does not answer (%s)." % (mon["prometheus_url"], mon.get("prometheus_error", "")),
                "Start it (the local cluster: make deploy starts it with the cluster) and check monitoring_prometheus_url.",
                [], []))
        elif mon.get("running_pods", 0) and not mon.get("targets_up", 0):
            found.append(finding(
                "monitoring-no-targets", "warning",
                "Prometheus scrapes none of the %d running sandbox pods." % mon["running_pods"],
                "Re-run site.yml --tags monitoring so Prometheus gets the scrape configuration "
                "(monitoring_prometheus_config_dir), or check your Prometheus selects the ServiceMonitor "
                "(monitoring_monitor_labels).", [], mon.get("target_errors") or []))
    elif not mon.get("operator"):
        found.append(finding(
            "monitoring-no-operator", "info",
            "The cluster has no Prometheus Operator API (monitoring.coreos.com/v1): no ServiceMonitor was applied.",
            "Install the operator and re-run --tags monitoring, or point a Prometheus at the configuration "
            "render.yml writes (prometheus/prometheus.yml) and set monitoring_prometheus_url.", [], []))
    return found


CHECKS = (check_placement, check_quota, check_images, check_rbac, check_readiness, check_admission, check_leaks,
          check_monitoring)


def diagnose(snap: Dict[str, Any]) -> List[Finding]:
    """Every finding, errors first."""
    out: List[Finding] = []
    for check in CHECKS:
        out.extend(check(snap))
    order = {"error": 0, "warning": 1, "info": 2}
    return sorted(out, key=lambda f: order.get(f["severity"], 3))


def report_lines(namespace: str, findings: List[Finding]) -> List[str]:
    """The short report: one block per finding."""
    if not findings:
        return ["%s: no known failure found." % namespace]
    lines = []
    for f in findings:
        lines.append("[%s] %s: %s" % (f["severity"].upper(), f["id"], f["cause"]))
        lines.append("    fix: %s" % f["fix"])
    return lines


_SUFFIX = {"Ki": 2 ** 10, "Mi": 2 ** 20, "Gi": 2 ** 30, "Ti": 2 ** 40, "Pi": 2 ** 50, "Ei": 2 ** 60,
           "n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def parse_quantity(text: Any) -> Optional[float]:
    """A Kubernetes quantity as a number (None when it is not one)."""
    match = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?", str(text).strip())
    if not match:
        return None
    try:
        return float(match.group(1)) * _SUFFIX.get(match.group(2) or "", 1)
    except ValueError:
        return None
