#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: PandasAI pod-sandbox maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Read the sandbox namespace's state and name the known failures in it (playbooks/diagnose.yml)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: sandbox_diagnose
short_description: Name the likely cause and fix of a failing PandasAI sandbox (read-only)
version_added: 1.2.0
author:
  - PandasAI pod-sandbox maintainers
description:
  - Reads, and never changes, the sandbox namespace's pods (phases, reasons, waiting containers),
    recent events, the last log lines of failing pods, ResourceQuota usage, the nodes' labels and
    taints against the pod template's nodeSelector and tolerations, whether the template's image
    is on a node, what the sandbox ServiceAccount may do (SubjectAccessReviews) and whether its
    Role and RoleBinding exist, and the monitoring pipeline (metrics Service, Prometheus Operator
    API, a Prometheus' readiness and targets).
  - Returns the gathered facts and one finding per known failure (docs/troubleshooting.md's
    entries), each with its cause, the objects involved, evidence and the fix, plus a short report.
  - C(changed) is always false; runs in check mode too. SubjectAccessReviews are not stored.
options:
  namespace:
    description: Sandbox namespace.
    type: str
    required: true
  pod_selector:
    description: Label selector of the sandbox pods.
    type: str
    default: app=python-sandbox
  template_configmap:
    description: ConfigMap holding the pod template (key C(pod.yaml)).
    type: str
    default: pandasai-sandbox-pod-template
  service_account:
    description: ServiceAccount the client uses.
    type: str
    default: pandasai-sandbox-sa
  role:
    description: Name of the client's Role.
    type: str
    default: pod-manager
  role_binding:
    description: Name of the client's RoleBinding.
    type: str
    default: pod-manager-binding
  image_loaded:
    description:
      - True where images are loaded into the nodes rather than pulled (kind, minikube, local), so a
        template image absent from every node is a failure; false where nodes pull from a registry.
    type: bool
    default: false
  log_lines:
    description: Last log lines read from each failing pod.
    type: int
    default: 20
  monitoring:
    description:
      - The monitoring pipeline to check. Keys C(enabled) (bool), C(service) (metrics Service name),
        C(prometheus_url) (empty to skip), C(job) (scrape job of the sandbox pods).
    type: dict
    default: {}
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
requirements:
  - python >= 3.9
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Diagnose the sandbox namespace
  pandasai.pod_sandbox.sandbox_diagnose:
    namespace: pandasai-sandbox
    image_loaded: true
  register: diagnosis
"""

RETURN = r"""
findings:
  description: Known failures found, errors first (id, severity, cause, fix, objects, evidence).
  returned: always
  type: list
  elements: dict
report:
  description: The short report, one cause and one fix line per finding.
  returned: always
  type: list
  elements: str
facts:
  description: What was gathered (pods, events, quotas, nodes, placement, image, rbac, monitoring, logs).
  returned: always
  type: dict
"""

import json
import traceback
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import (
    AUTH_ARG_SPEC,
)
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import (
    AnsibleK8SModule,
)

try:
    import yaml
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import (
        get_api_client,
    )
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import (
        CoreException,
    )
    from ansible_collections.pandasai.pod_sandbox.plugins.module_utils.diagnosis import (
        CLIENT_RIGHTS,
        diagnose,
        report_lines,
    )
    from ansible_collections.pandasai.pod_sandbox.plugins.module_utils.k8s_json import (
        K8sJSONError,
        call,
    )
except ImportError:
    yaml = None


def get_or_none(api: Any, path: str, query: Optional[Dict[str, Any]] = None) -> Any:
    """GET a path; None when it does not exist (404)."""
    try:
        return call(api, "GET", path, query=query)
    except K8sJSONError as exc:
        if exc.status == 404:
            return None
        raise


def template_of(configmap: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    if not configmap:
        return {}
    try:
        doc = yaml.safe_load(((configmap.get("data") or {}).get("pod.yaml")) or "")
    except yaml.YAMLError:
        return {}
    return doc if isinstance(doc, dict) else {}


def image_on_nodes(image: str, nodes: List[Dict[str, Any]]) -> bool:
    """True when a node lists the image by any of its names (name:tag, name@digest, name:tag@digest)."""
    wanted = {image}
    if "@" in image:
        name_tag, digest = image.split("@", 1)
        wanted |= {name_tag, name_tag.rsplit(":", 1)[0] + "@" + digest}
    for node in nodes:
        for entry in (node.get("status") or {}).get("images") or []:
            names = set(entry.get("names") or [])
            names |= {n.split("/", 1)[1] for n in names if n.startswith("docker.io/")}
            names |= {n[len("library/"):] for n in list(names) if n.startswith("library/")}
            if wanted & names:
                return True
    return False


def access_reviews(api: Any, namespace: str, user: str) -> List[Dict[str, Any]]:
    reviews = []
    for verb, resource, sub in CLIENT_RIGHTS:
        attrs = {"namespace": namespace, "verb": verb, "resource": resource}
        if sub:
            attrs["subresource"] = sub
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": user, "groups": ["system:serviceaccounts", "system:serviceaccounts:" + namespace,
                                                  "system:authenticated"], "resourceAttributes": attrs}}
        status = call(api, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body).get("status") or {}
        reviews.append({"verb": verb, "resource": resource, "subresource": sub, "allowed": bool(status.get("allowed")),
                        "reason": status.get("reason", "")})
    return reviews


def prometheus_get(url: str, path: str, query: Optional[Dict[str, str]] = None) -> Tuple[Optional[Any], str]:
    full = url.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
    try:
        with urllib.request.urlopen(full, timeout=5) as response:  # noqa: S310 - an operator-given URL
            text = response.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        return None, str(exc)
    try:
        return json.loads(text), ""
    except ValueError:
        return text, ""


def monitoring_state(api: Any, namespace: str, opts: Dict[str, Any], pods: List[Dict[str, Any]]) -> Dict[str, Any]:
    state: Dict[str, Any] = {"enabled": bool(opts.get("enabled")), "service": opts.get("service") or "pandasai-sandbox-metrics",
                             "prometheus_url": opts.get("prometheus_url") or "", "job": opts.get("job") or "pandasai-sandbox"}
    if not state["enabled"]:
        return state
    state["service_present"] = get_or_none(api, "/api/v1/namespaces/%s/services/%s" % (namespace, state["service"])) is not None
    state["operator"] = get_or_none(api, "/apis/monitoring.coreos.com/v1") is not None
    state["running_pods"] = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Running")
    if state["prometheus_url"]:
        ready, error = prometheus_get(state["prometheus_url"], "/-/ready")
        state["prometheus_ready"] = ready is not None
        state["prometheus_error"] = error
        if ready is not None:
            targets, _ = prometheus_get(state["prometheus_url"], "/api/v1/targets", {"state": "active"})
            mine = [t for t in ((targets or {}).get("data") or {}).get("activeTargets") or []
                    if (t.get("labels") or {}).get("job") == state["job"]
                    and (t.get("labels") or {}).get("namespace") == namespace]
            state["targets_up"] = sum(1 for t in mine if t.get("health") == "up")
            state["target_errors"] = ["%s: %s" % ((t.get("labels") or {}).get("pod", ""), t.get("lastError", ""))
                                      for t in mine if t.get("health") != "up"]
    return state


def pod_summary(pod: Dict[str, Any]) -> Dict[str, Any]:
    status = pod.get("status") or {}
    conds = {c.get("type"): c for c in status.get("conditions") or []}
    waiting = [((c.get("state") or {}).get("waiting") or {}).get("reason", "") for c in status.get("containerStatuses") or []]
    return {"name": pod["metadata"]["name"], "phase": status.get("phase", ""), "reason": status.get("reason", ""),
            "ready": (conds.get("Ready") or {}).get("status") == "True", "node": (pod.get("spec") or {}).get("nodeName", ""),
            "waiting": [w for w in waiting if w],
            "scheduled": (conds.get("PodScheduled") or {}).get("message", "")}


def failing(pod: Dict[str, Any]) -> bool:
    summary = pod_summary(pod)
    return summary["phase"] in ("Failed",) or bool(summary["waiting"]) or (summary["phase"] == "Running" and not summary["ready"])


def gather(api: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    ns = params["namespace"]
    base = "/api/v1/namespaces/%s" % ns
    pods = (call(api, "GET", base + "/pods", query={"labelSelector": params["pod_selector"]}) or {}).get("items") or []
    events = (call(api, "GET", base + "/events") or {}).get("items") or []
    events = sorted(events, key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")[-50:]
    quotas = (call(api, "GET", base + "/resourcequotas") or {}).get("items") or []
    nodes = (call(api, "GET", "/api/v1/nodes") or {}).get("items") or []
    template = template_of(get_or_none(api, base + "/configmaps/" + params["template_configmap"]))
    containers = ((template.get("spec") or {}).get("containers") or [{}])
    image = containers[0].get("image", "") if containers else ""
    logs: Dict[str, List[str]] = {}
    for pod in pods:
        if failing(pod):
            try:
                text = call(api, "GET", "%s/pods/%s/log" % (base, pod["metadata"]["name"]),
                            query={"tailLines": params["log_lines"]})
            except K8sJSONError as exc:
                text = "(no log: %s)" % exc.message
            logs[pod["metadata"]["name"]] = str(text or "").splitlines()[-params["log_lines"]:]
    sa = params["service_account"]
    rbac = {
        "subject": "system:serviceaccount:%s:%s" % (ns, sa),
        "objects": {
            "ServiceAccount/" + sa: get_or_none(api, base + "/serviceaccounts/" + sa) is not None,
            "Role/" + params["role"]: get_or_none(api, "/apis/rbac.authorization.k8s.io/v1/namespaces/%s/roles/%s"
                                                  % (ns, params["role"])) is not None,
            "RoleBinding/" + params["role_binding"]: get_or_none(
                api, "/apis/rbac.authorization.k8s.io/v1/namespaces/%s/rolebindings/%s" % (ns, params["role_binding"])) is not None,
        },
    }
    rbac["reviews"] = access_reviews(api, ns, rbac["subject"])
    return {
        "namespace": ns,
        "namespace_present": get_or_none(api, base) is not None,
        "pods": pods, "events": events, "quotas": quotas, "nodes": nodes, "template": template,
        "template_image": image,
        "image_present": image_on_nodes(image, nodes) if image and params["image_loaded"] else None,
        "logs": logs, "rbac": rbac,
        "monitoring": monitoring_state(api, ns, params["monitoring"] or {}, pods),
    }


def facts_of(snap: Dict[str, Any]) -> Dict[str, Any]:
    """The gathered state, trimmed to what a reader needs (the JSON report)."""
    spec = (snap["template"].get("spec") or {})
    return {
        "namespace": snap["namespace"],
        "pods": [pod_summary(p) for p in snap["pods"]],
        "events": [{"type": e.get("type"), "reason": e.get("reason"), "object": (e.get("involvedObject") or {}).get("name"),
                    "message": e.get("message")} for e in snap["events"] if e.get("type") != "Normal"][-20:],
        "quotas": [{"name": q["metadata"]["name"], "hard": (q.get("status") or {}).get("hard", {}),
                    "used": (q.get("status") or {}).get("used", {})} for q in snap["quotas"]],
        "nodes": [{"name": n["metadata"]["name"], "labels": n["metadata"].get("labels", {}),
                   "taints": (n.get("spec") or {}).get("taints", [])} for n in snap["nodes"]],
        "placement": {"nodeSelector": spec.get("nodeSelector", {}), "tolerations": spec.get("tolerations", [])},
        "image": {"ref": snap["template_image"], "present": snap["image_present"]},
        "rbac": snap["rbac"], "monitoring": snap["monitoring"], "logs": snap["logs"],
    }


def main() -> None:
    argument_spec = dict(
        namespace=dict(type="str", required=True),
        pod_selector=dict(type="str", default="app=python-sandbox"),
        template_configmap=dict(type="str", default="pandasai-sandbox-pod-template"),
        service_account=dict(type="str", default="pandasai-sandbox-sa"),
        role=dict(type="str", default="pod-manager"),
        role_binding=dict(type="str", default="pod-manager-binding"),
        image_loaded=dict(type="bool", default=False),
        log_lines=dict(type="int", default=20),
        monitoring=dict(type="dict", default={}),
    )
    argument_spec.update(AUTH_ARG_SPEC)
    module = AnsibleK8SModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    if params["log_lines"] < 1:
        module.fail_json(msg="log_lines must be at least 1, got %s" % params["log_lines"])
    try:
        api = get_api_client(module=module).client.client
        snap = gather(api, params)
    except CoreException as exc:
        module.fail_json(msg="Cannot reach the cluster to diagnose namespace %s: %s" % (params["namespace"], exc))
    except K8sJSONError as exc:
        module.fail_json(msg="The API server refused a read while diagnosing %s: %s" % (params["namespace"], exc))
    except Exception as exc:  # anything unexpected: say what, never a bare crash
        module.fail_json(msg="diagnosis failed: %s: %s" % (type(exc).__name__, exc), exception=traceback.format_exc())
    if not snap["namespace_present"]:
        findings = [{"id": "namespace-missing", "severity": "error", "cause": "Namespace %s does not exist." % params["namespace"],
                     "fix": "Run site.yml (or --tags namespace and the later steps) against this cluster.",
                     "objects": [params["namespace"]], "evidence": []}]
    else:
        findings = diagnose(snap)
    module.exit_json(changed=False, findings=findings, report=report_lines(params["namespace"], findings),
                     facts=facts_of(snap))


if __name__ == "__main__":
    main()
