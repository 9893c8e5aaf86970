#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: PandasAI pod-sandbox maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Audit a live sandbox namespace for the deployment guide's security rules (read-only)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: sandbox_audit
short_description: Audit a live namespace against the PandasAI pod sandbox's security rules (read-only)
version_added: 1.2.0
author:
  - PandasAI pod-sandbox maintainers
description:
  - The deployment guide's security audit as one module run, on any namespace, including one this
    collection did not deploy. It reads, and makes server-side dry-run creates (C(dryRun=All), so
    admission runs and nothing is stored); it never writes. It reports C(changed=false) and runs the
    same in check mode.
  - Pod Security labels C(enforce) (and C(audit), C(warn)) at I(pss_level) or stricter.
  - Whether admission enforces the restricted profile for real - as each ServiceAccount of the
    namespace and each User, Group or ServiceAccount a RoleBinding there names (impersonated), a
    dry-run create of a compliant pod (the namespace's pod template when published, else a minimal
    restricted pod) and of one pod per rule broken (root, privileged, privilege escalation, an added
    capability, no seccomp, a hostPath, host namespaces, a Secret volume). A violating pod that is
    admitted and still violates after admission's defaults is a finding naming the identity.
  - A default-deny NetworkPolicy for ingress and egress of every pod, and no rule broader than needed
    (no peers, an empty peer, every pod of every namespace, 0.0.0.0/0, every port).
  - RBAC - every Role of the namespace, every ClusterRole a RoleBinding there grants, and the
    ClusterRoleBindings naming its ServiceAccounts - for wildcard verbs/resources/groups, Secrets
    read access, C(pods/exec)/C(pods/attach), C(escalate)/C(bind)/C(impersonate).
  - Every pod's, ReplicaSet's and Deployment's pod spec, and the published pod template - the
    restricted securityContext (non-root, no privilege escalation, drop ALL, seccomp RuntimeDefault,
    read-only root), no host namespaces/ports/hostPath, no Secret volumes, images pinned by digest,
    ServiceAccount token automount off (the pod's own setting, else its ServiceAccount's).
  - A ResourceQuota capping pods, CPU and memory and a LimitRange with container default limits.
  - What the identity running the audit may not read is a finding (C(audit-incomplete)), since an
    audit that could not look proves nothing.
options:
  namespace:
    description: The namespace to audit.
    type: str
    required: true
  pss_level:
    description: The Pod Security Standards level the namespace must enforce.
    type: str
    default: restricted
    choices: [baseline, restricted]
  template_configmap:
    description: ConfigMap (key C(pod.yaml)) with the namespace's pod template, audited and used as the probes' base when present.
    type: str
    default: pandasai-sandbox-pod-template
  probe_admission:
    description: Make the dry-run admission probes (needs C(impersonate) on users, groups and serviceaccounts).
    type: bool
    default: true
  waive:
    description:
      - Checks (by id, for example C(image-digest)) reported as waived instead of failing the audit, for
        findings a site accepts knowingly.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
requirements:
  - python >= 3.9
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Audit a namespace
  pandasai.pod_sandbox.sandbox_audit:
    namespace: team-sandbox
  register: audit

- name: Fail on findings
  ansible.builtin.assert:
    that: audit.findings | length == 0
    fail_msg: "{{ audit.report | join('\n') }}"
"""

RETURN = r"""
findings:
  description: Each finding - check id, severity (high, medium, low), object, message, fix.
  returned: always
  type: list
  elements: dict
  sample: [{"check": "pss-labels", "severity": "high", "object": "Namespace/qa", "message": "label ... is absent", "fix": "..."}]
waived:
  description: Findings of the checks in I(waive).
  returned: always
  type: list
  elements: dict
probes:
  description: Per identity, the answer to each dry-run create (admitted, refused-security, refused-rbac, ...).
  returned: always
  type: dict
checked:
  description: How many objects each check looked at.
  returned: always
  type: dict
report:
  description: The readable report, one line per item.
  returned: always
  type: list
  elements: str
server_version:
  description: The API server's gitVersion.
  returned: always
  type: str
"""

import json
import traceback
from typing import Any, Dict, List, Optional, Tuple

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import (
    AUTH_ARG_SPEC,
)
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import (
    AnsibleK8SModule,
)

try:
    import yaml
except ImportError:  # reported by the kubernetes.core module base
    yaml = None

try:
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.client import (
        get_api_client,
    )
    from ansible_collections.kubernetes.core.plugins.module_utils.k8s.exceptions import (
        CoreException,
    )
    from ansible_collections.pandasai.pod_sandbox.plugins.module_utils.k8s_json import (
        K8sJSONError,
        call,
    )
    from ansible_collections.pandasai.pod_sandbox.plugins.module_utils import sandbox_audit as audit
except ImportError:
    pass

SEVERITIES = ("high", "medium", "low")


class Auditor:
    """Reads one namespace, keeps what it could not read as findings."""

    def __init__(self, api_client: Any, namespace: str) -> None:
        self.api = api_client
        self.namespace = namespace
        self.findings: List[Dict[str, str]] = []
        self.checked: Dict[str, int] = {}

    def get(self, path: str, what: str, query: Optional[Dict[str, Any]] = None) -> Optional[Any]:
        """GET, or None (404) or None plus an audit-incomplete finding (403 and other errors)."""
        try:
            return call(self.api, "GET", path, query=query)
        except K8sJSONError as exc:
            if exc.status == 404:
                return None
            self.findings.append(audit.finding(
                "audit-incomplete", "low", what, "could not read it: HTTP %s %s" % (exc.status, exc.message),
                "run the audit with an identity that may read it (get/list)"))
            return None

    def items(self, path: str, what: str) -> List[Dict[str, Any]]:
        found = self.get(path, what)
        items = (found or {}).get("items") or []
        self.checked[what] = len(items)
        return items

    def dry_run(self, pod: Dict[str, Any], user: str, group: Optional[str]) -> Tuple[str, Any]:
        """One dry-run create as ``user`` (and ``group``): ('admitted', pod) or ('refused-<kind>', message)."""
        headers = {"Impersonate-User": user}
        if group:
            headers["Impersonate-Group"] = group
        try:
            made = call(self.api, "POST", "/api/v1/namespaces/%s/pods" % self.namespace, pod,
                        query={"dryRun": "All"}, headers=headers)
            return "admitted", made
        except K8sJSONError as exc:
            return "refused-" + audit.refusal_kind(exc.status, exc.message or exc.body), exc.message or exc.body


def identities(namespace: str, accounts: List[Dict[str, Any]], bindings: List[Dict[str, Any]]) -> List[Tuple[str, str, Optional[str]]]:
    """``(label, user to impersonate, group)`` for each ServiceAccount and RoleBinding subject."""
    found: Dict[str, Tuple[str, str, Optional[str]]] = {}
    for account in accounts:
        user = "system:serviceaccount:%s:%s" % (namespace, account["metadata"]["name"])
        found[user] = (user, user, None)
    for binding in bindings:
        for subject in binding.get("subjects") or []:
            kind, name = subject.get("kind"), subject.get("name", "")
            if kind == "ServiceAccount":
                user = "system:serviceaccount:%s:%s" % (subject.get("namespace") or namespace, name)
                found.setdefault(user, (user, user, None))
            elif kind == "User":
                found.setdefault("user " + name, ("user " + name, name, None))
            elif kind == "Group":
                found.setdefault("group " + name, ("group " + name, "pandasai-audit-probe", name))
    return [found[key] for key in sorted(found)]


def probe_admission(auditor: Auditor, who: List[Tuple[str, str, Optional[str]]],
                    template: Optional[Dict[str, Any]]) -> Dict[str, Dict[str, str]]:
    """Dry-run the compliant pod and each violating pod as every identity; findings for admitted violations."""
    probes: Dict[str, Dict[str, str]] = {}
    base = audit.compliant_pod(template)
    for label, user, group in who:
        answers: Dict[str, str] = {}
        probes[label] = answers
        outcome, detail = auditor.dry_run(base, user, group)
        answers["compliant"] = outcome
        if outcome == "refused-rbac":
            continue  # this identity may not create pods: nothing to admit
        if outcome == "refused-impersonation":
            auditor.findings.append(audit.finding(
                "audit-incomplete", "low", label, "cannot impersonate it to probe admission: %s" % detail,
                "run the audit with an identity that may impersonate (cluster admin), or probe_admission: false"))
            continue
        if outcome not in ("admitted", "refused-security"):  # refused-security: admission refuses even it
            auditor.findings.append(audit.finding(
                "admission-inconclusive", "medium", label,
                "a compliant pod (the probes' base) was refused, so the probes prove nothing: %s" % detail,
                "make the namespace's pod template admissible (quota, limits) and audit again"))
            continue
        for name, aspect, why, pod in audit.violating_pods(template):
            outcome, detail = auditor.dry_run(pod, user, group)
            answers[name] = outcome
            if outcome == "admitted":
                still = [text for found, text in audit.pod_problems(detail) if found == aspect]
                if not still:
                    answers[name] = "admitted-made-compliant"
                    continue
                auditor.findings.append(audit.finding(
                    "admission", "high", "Namespace/%s" % auditor.namespace,
                    "as %s a pod breaking rule %s was admitted (%s): %s" % (label, name, "; ".join(still), why),
                    "enforce the restricted profile by admission: Pod Security labels on 1.23+, a restricted "
                    "PodSecurityPolicy the namespace's identities use on older clusters (the namespace role)"))
            elif outcome == "refused-other":
                auditor.findings.append(audit.finding(
                    "admission-inconclusive", "medium", label,
                    "the %s probe was refused for another reason than pod security: %s" % (name, detail),
                    "look at the namespace's other admission (quota, LimitRange, webhooks)"))
    return probes


def template_pod(configmap: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    text = ((configmap or {}).get("data") or {}).get("pod.yaml")
    if not text:
        return None
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return parsed if isinstance(parsed, dict) else None


def run_audit(api_client: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    namespace = params["namespace"]
    auditor = Auditor(api_client, namespace)
    version = (auditor.get("/version", "version") or {}).get("gitVersion", "?")
    ns_path = "/api/v1/namespaces/%s" % namespace
    result: Dict[str, Any] = {"server_version": version, "probes": {}}
    namespace_obj = auditor.get(ns_path, "Namespace/%s" % namespace)
    if namespace_obj is None:
        auditor.findings.append(audit.finding("namespace-missing", "high", "Namespace/%s" % namespace,
                                              "the namespace does not exist (or cannot be read)",
                                              "check audit_namespace and the kubeconfig"))
        result.update(findings=auditor.findings, checked=auditor.checked)
        return result
    auditor.findings += audit.namespace_findings(namespace_obj, params["pss_level"])
    accounts = auditor.items(ns_path + "/serviceaccounts", "ServiceAccounts")
    by_name = {a["metadata"]["name"]: a for a in accounts}
    pods = auditor.items(ns_path + "/pods", "Pods")
    for pod in pods:
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        auditor.findings += audit.workload_findings("Pod", pod["metadata"]["name"], pod, by_name)
    apps = "/apis/apps/v1/namespaces/%s/" % namespace
    for kind, plural in (("ReplicaSet", "replicasets"), ("Deployment", "deployments")):
        for owner in auditor.items(apps + plural, kind + "s"):
            template = (owner.get("spec") or {}).get("template") or {}
            auditor.findings += audit.workload_findings(kind, owner["metadata"]["name"], template, by_name)
    configmap = auditor.get(ns_path + "/configmaps/%s" % params["template_configmap"],
                            "ConfigMap/%s" % params["template_configmap"])
    template = template_pod(configmap)
    auditor.checked["pod template"] = 1 if template else 0
    if template:
        auditor.findings += audit.workload_findings("ConfigMap", params["template_configmap"], template, by_name)
    policies = auditor.items("/apis/networking.k8s.io/v1/namespaces/%s/networkpolicies" % namespace, "NetworkPolicies")
    auditor.findings += audit.network_findings(namespace, policies)
    rbac = "/apis/rbac.authorization.k8s.io/v1/"
    roles = auditor.items(rbac + "namespaces/%s/roles" % namespace, "Roles")
    bindings = auditor.items(rbac + "namespaces/%s/rolebindings" % namespace, "RoleBindings")
    cluster_roles: Dict[str, Dict[str, Any]] = {}
    for binding in bindings:
        ref = binding.get("roleRef") or {}
        if ref.get("kind") == "ClusterRole" and ref.get("name") not in cluster_roles:
            found = auditor.get(rbac + "clusterroles/%s" % ref["name"], "ClusterRole/%s" % ref["name"])
            if found is not None:
                cluster_roles[ref["name"]] = found
    cluster_bindings = auditor.items(rbac + "clusterrolebindings", "ClusterRoleBindings")
    auditor.findings += audit.rbac_findings(namespace, roles, bindings, cluster_roles, cluster_bindings)
    quotas = auditor.items(ns_path + "/resourcequotas", "ResourceQuotas")
    limit_ranges = auditor.items(ns_path + "/limitranges", "LimitRanges")
    auditor.findings += audit.limits_findings(namespace, quotas, limit_ranges)
    if params["probe_admission"]:
        who = identities(namespace, accounts, bindings)
        auditor.checked["identities probed"] = len(who)
        result["probes"] = probe_admission(auditor, who, template)
    result.update(findings=auditor.findings, checked=auditor.checked)
    return result


def report_lines(namespace: str, result: Dict[str, Any]) -> List[str]:
    findings, waived = result["findings"], result["waived"]
    counts = {s: sum(1 for f in findings if f["severity"] == s) for s in SEVERITIES}
    lines = ["Security audit of namespace %s (Kubernetes %s): %d finding(s) - %s; %d waived"
             % (namespace, result["server_version"], len(findings),
                ", ".join("%d %s" % (counts[s], s) for s in SEVERITIES), len(waived))]
    order = {s: i for i, s in enumerate(SEVERITIES)}
    for item in sorted(findings, key=lambda f: (order[f["severity"]], f["check"], f["object"])):
        lines.append("[%s] %s %s: %s" % (item["severity"], item["check"], item["object"], item["message"]))
        lines.append("    fix: %s" % item["fix"])
    for item in waived:
        lines.append("[waived] %s %s: %s" % (item["check"], item["object"], item["message"]))
    for who, answers in sorted(result["probes"].items()):
        lines.append("admission probe as %s: %s" % (who, ", ".join("%s %s" % kv for kv in answers.items())))
    lines.append("checked: %s" % ", ".join("%s %s" % (n, what) for what, n in sorted(result["checked"].items())))
    return lines


def main() -> None:
    argument_spec = dict(
        namespace=dict(type="str", required=True),
        pss_level=dict(type="str", default="restricted", choices=["baseline", "restricted"]),
        template_configmap=dict(type="str", default="pandasai-sandbox-pod-template"),
        probe_admission=dict(type="bool", default=True),
        waive=dict(type="list", elements="str", default=[]),
    )
    argument_spec.update(AUTH_ARG_SPEC)
    module = AnsibleK8SModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    try:
        client = get_api_client(module=module)
        result = run_audit(client.client.client, params)
    except CoreException as exc:
        module.fail_json(msg="cannot connect to the Kubernetes API: %s" % exc)
    except Exception as exc:  # anything unexpected: say what, with the traceback, never a bare crash
        module.fail_json(msg="audit of namespace %s failed: %s: %s" % (params["namespace"], type(exc).__name__, exc),
                         exception=traceback.format_exc())
    waive = set(params["waive"])
    result["waived"] = [f for f in result["findings"] if f["check"] in waive]
    result["findings"] = [f for f in result["findings"] if f["check"] not in waive]
    result["report"] = report_lines(params["namespace"], result)
    json.dumps(result)  # fail here, not in Ansible, if anything is not JSON
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
