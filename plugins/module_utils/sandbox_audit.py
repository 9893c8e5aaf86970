# -*- coding: utf-8 -*-
# Copyright: PandasAI pod-sandbox maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""The security audit of a live sandbox namespace (playbooks/audit.yml, module sandbox_audit).

Pure checks over the namespace's objects as the API returns them (plain JSON), plus the
admission probe: server-side dry-run creates (``dryRun=All``: admission runs, nothing is
stored) of pods that each break one rule of the restricted profile, made as each identity that
may create pods in the namespace. Every finding names its check, the object, what is wrong and
the fix. Nothing here writes to the cluster.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import copy
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

Finding = Dict[str, str]

PSS_LABEL = "pod-security.kubernetes.io/"
SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
SECCOMP_OK = ("RuntimeDefault", "Localhost")
ALLOWED_VOLUMES = ("configMap", "emptyDir", "projected", "downwardAPI", "ephemeral", "persistentVolumeClaim", "csi")
RISKY_VERBS = ("escalate", "bind", "impersonate")
EXEC_RESOURCES = ("pods/exec", "pods/attach")
WORLD_CIDRS = ("0.0.0.0/0", "::/0")
MANAGED_BY = "app.kubernetes.io/managed-by"


def finding(check: str, severity: str, obj: str, message: str, fix: str) -> Finding:
    """One finding: which check, how bad (high, medium, low), on what, what is wrong, the fix."""
    return {"check": check, "severity": severity, "object": obj, "message": message, "fix": fix}


# -- pods: securityContext, host access, volumes, images, token ---------------------------------


def _containers(spec: Dict[str, Any]) -> List[Dict[str, Any]]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or []) \
        + list(spec.get("ephemeralContainers") or [])


def pod_problems(pod: Dict[str, Any], service_accounts: Optional[Dict[str, Any]] = None) -> List[Tuple[str, str]]:
    """``(aspect, text)`` for every way the pod breaks the restricted profile or the sandbox's hardening.

    Aspects: root, privileged, privilege-escalation, capabilities, seccomp, host-namespaces,
    host-path, volumes, secret-volume, read-only-root, image-digest, token-automount.
    ``service_accounts`` (name to ServiceAccount) resolves the token automount a pod inherits.
    """
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    psc = spec.get("securityContext") or {}
    found: List[Tuple[str, str]] = []
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            found.append(("host-namespaces", "%s: true" % field))
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type") \
        or {"runtime/default": "RuntimeDefault", "docker/default": "RuntimeDefault"}.get(
            (meta.get("annotations") or {}).get(SECCOMP_POD_ANNOTATION, ""), "")
    for volume in spec.get("volumes") or []:
        kinds = [k for k in volume if k != "name"]
        if "hostPath" in kinds:
            found.append(("host-path", "volume %s is a hostPath (%s)" % (volume.get("name"), volume["hostPath"].get("path"))))
        elif "secret" in kinds:
            found.append(("secret-volume", "volume %s mounts Secret %s" % (volume.get("name"), volume["secret"].get("secretName"))))
        elif kinds and kinds[0] not in ALLOWED_VOLUMES:
            found.append(("volumes", "volume %s is of type %s" % (volume.get("name"), kinds[0])))
    for container in _containers(spec):
        name = container.get("name", "?")
        sc = container.get("securityContext") or {}
        user = sc.get("runAsUser", psc.get("runAsUser"))
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if user == 0:
            found.append(("root", "container %s runs as uid 0" % name))
        elif non_root is not True:
            found.append(("root", "container %s may run as root (runAsNonRoot is not true)" % name))
        if sc.get("privileged"):
            found.append(("privileged", "container %s is privileged" % name))
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(("privilege-escalation", "container %s allows privilege escalation" % name))
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            found.append(("capabilities", "container %s does not drop ALL capabilities" % name))
        added = [c for c in caps.get("add") or [] if c != "NET_BIND_SERVICE"]
        if added:
            found.append(("capabilities", "container %s adds capabilities %s" % (name, ", ".join(added))))
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in SECCOMP_OK:
            found.append(("seccomp", "container %s has no RuntimeDefault or Localhost seccomp profile" % name))
        if sc.get("readOnlyRootFilesystem") is not True:
            found.append(("read-only-root", "container %s has a writable root filesystem" % name))
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                found.append(("host-namespaces", "container %s binds host port %s" % (name, port["hostPort"])))
        image = str(container.get("image", ""))
        if "@sha256:" not in image:
            found.append(("image-digest", "container %s image %s is not pinned by digest" % (name, image or "(none)")))
    automount = spec.get("automountServiceAccountToken")
    if automount is None:
        account = (service_accounts or {}).get(spec.get("serviceAccountName") or spec.get("serviceAccount") or "default")
        automount = (account or {}).get("automountServiceAccountToken")
    if automount is not False:
        found.append(("token-automount", "the ServiceAccount token is mounted (automountServiceAccountToken is not false)"))
    return found


POD_FIX = {
    "root": "set runAsNonRoot: true and a non-zero runAsUser (the pod template's pod_template_run_as_user)",
    "privileged": "remove privileged: true",
    "privilege-escalation": "set allowPrivilegeEscalation: false on every container",
    "capabilities": "drop ALL capabilities and add none (NET_BIND_SERVICE at most)",
    "seccomp": "set seccompProfile type RuntimeDefault on the pod",
    "host-namespaces": "remove hostNetwork/hostPID/hostIPC and hostPort",
    "host-path": "remove hostPath volumes (emptyDir for scratch space)",
    "volumes": "use only configMap, emptyDir, projected, downwardAPI or persistentVolumeClaim volumes",
    "secret-volume": "mount no Secrets into sandbox pods (they run untrusted code)",
    "read-only-root": "set readOnlyRootFilesystem: true (writable space on emptyDir volumes)",
    "image-digest": "reference images as name:tag@sha256:digest (image_target registry does)",
    "token-automount": "set automountServiceAccountToken: false on the pod (or its ServiceAccount)",
}
POD_SEVERITY = {"read-only-root": "low", "image-digest": "medium", "volumes": "medium"}


def workload_findings(kind: str, name: str, pod: Dict[str, Any], service_accounts: Dict[str, Any]) -> List[Finding]:
    """Findings for one pod or pod template (``kind``/``name`` say which object it came from)."""
    by_aspect: Dict[str, List[str]] = {}
    for aspect, text in pod_problems(pod, service_accounts):
        by_aspect.setdefault(aspect, []).append(text)
    check = {"image-digest": "image-digest", "token-automount": "token-automount"}
    return [finding(check.get(aspect, "pod-security-context"), POD_SEVERITY.get(aspect, "high"),
                    "%s/%s" % (kind, name), "; ".join(texts), POD_FIX[aspect])
            for aspect, texts in sorted(by_aspect.items())]


# -- namespace labels ---------------------------------------------------------------------------------

LEVELS = {"privileged": 0, "baseline": 1, "restricted": 2}


def namespace_findings(namespace: Dict[str, Any], level: str) -> List[Finding]:
    """The Pod Security labels: enforce (and audit, warn) at ``level`` or stricter."""
    name = (namespace.get("metadata") or {}).get("name", "?")
    labels = (namespace.get("metadata") or {}).get("labels") or {}
    found = []
    for mode, severity in (("enforce", "high"), ("audit", "low"), ("warn", "low")):
        value = labels.get(PSS_LABEL + mode)
        if LEVELS.get(value or "", -1) < LEVELS[level]:
            found.append(finding(
                "pss-labels", severity, "Namespace/%s" % name,
                "label %s%s is %s, not %s" % (PSS_LABEL, mode, repr(value) if value else "absent", level),
                "label the namespace %s%s=%s (the namespace role does)" % (PSS_LABEL, mode, level)))
    return found


# -- NetworkPolicy ------------------------------------------------------------------------------------


def _selects_all(selector: Any) -> bool:
    return isinstance(selector, dict) and not selector.get("matchLabels") and not selector.get("matchExpressions")


def _broad_peer(peer: Dict[str, Any]) -> Optional[str]:
    if not peer:
        return "an empty peer (everything)"
    block = peer.get("ipBlock") or {}
    if block.get("cidr") in WORLD_CIDRS:
        return "ipBlock %s (any address)" % block["cidr"]
    pods, namespaces = peer.get("podSelector"), peer.get("namespaceSelector")
    if namespaces is not None and _selects_all(namespaces) and (pods is None or _selects_all(pods)):
        return "every pod of every namespace (namespaceSelector {} without a podSelector)"
    if namespaces is None and pods is not None and _selects_all(pods) and not block:
        return "every pod of the namespace (podSelector {})"
    return None


def network_findings(namespace: str, policies: List[Dict[str, Any]]) -> List[Finding]:
    """A default deny of ingress and egress for every pod, and no rule that opens more than it must."""
    found = []
    deny = {"Ingress": False, "Egress": False}
    for policy in policies:
        spec = policy.get("spec") or {}
        types = spec.get("policyTypes") or (["Ingress"] + (["Egress"] if "egress" in spec else []))
        if _selects_all(spec.get("podSelector", {})):
            for direction, rules in (("Ingress", spec.get("ingress")), ("Egress", spec.get("egress"))):
                if direction in types and not rules:
                    deny[direction] = True
        name = "NetworkPolicy/%s" % (policy.get("metadata") or {}).get("name", "?")
        for direction, key, peers_key in (("Ingress", "ingress", "from"), ("Egress", "egress", "to")):
            for index, rule in enumerate(spec.get(key) or []):
                where = "%s rule %d" % (key, index + 1)
                peers = rule.get(peers_key)
                if not peers:
                    found.append(finding("network-broad", "high", name,
                                         "%s has no '%s': it allows %s from/to anywhere" % (where, peers_key, direction.lower()),
                                         "list the peers (pod and namespace selectors) it must allow"))
                for peer in peers or []:
                    broad = _broad_peer(peer)
                    if broad:
                        found.append(finding("network-broad", "high", name, "%s allows %s" % (where, broad),
                                             "narrow the peer to the clients' pod labels (pod_sandbox_client_selector)"))
                if not rule.get("ports"):
                    found.append(finding("network-broad", "medium", name, "%s allows every port" % where,
                                         "allow only the executor's port (api)"))
    for direction, present in sorted(deny.items()):
        if not present:
            found.append(finding("network-default-deny", "high", "Namespace/%s" % namespace,
                                 "no NetworkPolicy denies all %s of every pod (podSelector {}, policyTypes %s, no rules)"
                                 % (direction.lower(), direction),
                                 "apply the network_policy role's sandbox-default-deny"))
    return found


# -- RBAC ---------------------------------------------------------------------------------------------


def rule_findings(obj: str, rules: Optional[Iterable[Dict[str, Any]]], via: str = "") -> List[Finding]:
    """Wildcards, Secrets, pods/exec, and the verbs that hand out more rights than they hold."""
    found = []
    suffix = " (%s)" % via if via else ""
    for rule in rules or []:
        verbs = rule.get("verbs") or []
        resources = rule.get("resources") or []
        groups = rule.get("apiGroups") or []
        shown = "%s on %s" % (",".join(verbs), ",".join(resources) or ",".join(rule.get("nonResourceURLs") or []))
        if "*" in verbs or "*" in resources or "*" in groups:
            found.append(finding("rbac-wildcard", "high", obj, "wildcard rule %s%s" % (shown, suffix),
                                 "list the exact verbs and resources the holder needs"))
        if ("secrets" in resources or "*" in resources) and not rule.get("resourceNames") \
                and set(verbs) & {"get", "list", "watch", "*"}:
            found.append(finding("rbac-secrets", "high", obj, "reads Secrets: %s%s" % (shown, suffix),
                                 "grant no access to Secrets (or only by resourceNames)"))
        if set(resources) & set(EXEC_RESOURCES) and set(verbs) & {"create", "get", "*"}:
            found.append(finding("rbac-exec", "high", obj, "may exec/attach into pods: %s%s" % (shown, suffix),
                                 "remove pods/exec and pods/attach (rbac_allow_exec: false)"))
        risky = sorted(set(verbs) & set(RISKY_VERBS))
        if risky:
            found.append(finding("rbac-escalation", "high", obj, "verbs %s: %s%s" % (", ".join(risky), shown, suffix),
                                 "remove escalate, bind and impersonate"))
    return found


def _namespace_subject(subject: Dict[str, Any], namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name", "")
    if kind == "ServiceAccount":
        return subject.get("namespace") == namespace
    return kind == "Group" and name == "system:serviceaccounts:%s" % namespace


def rbac_findings(namespace: str, roles: List[Dict[str, Any]], bindings: List[Dict[str, Any]],
                  cluster_roles: Dict[str, Dict[str, Any]],
                  cluster_bindings: List[Dict[str, Any]]) -> List[Finding]:
    """Every Role of the namespace, every ClusterRole a RoleBinding there grants, and ClusterRoleBindings
    of the namespace's ServiceAccounts (rights in every namespace)."""
    found = []
    for role in roles:
        found += rule_findings("Role/%s" % role["metadata"]["name"], role.get("rules"))
    for binding in bindings:
        ref = binding.get("roleRef") or {}
        if ref.get("kind") == "ClusterRole":
            granted = cluster_roles.get(ref.get("name", ""))
            if granted is not None:
                found += rule_findings("RoleBinding/%s" % binding["metadata"]["name"], granted.get("rules"),
                                       "ClusterRole %s" % ref.get("name"))
    for binding in cluster_bindings:
        subjects = [s for s in binding.get("subjects") or [] if _namespace_subject(s, namespace)]
        if subjects:
            ref = (binding.get("roleRef") or {}).get("name", "?")
            found.append(finding(
                "rbac-cluster-binding", "high", "ClusterRoleBinding/%s" % binding["metadata"]["name"],
                "binds %s to ClusterRole %s in every namespace"
                % (", ".join("%s %s" % (s.get("kind"), s.get("name")) for s in subjects), ref),
                "grant the namespace's identities rights with a RoleBinding in the namespace only"))
    return found


# -- quota and limits ---------------------------------------------------------------------------------


def limits_findings(namespace: str, quotas: List[Dict[str, Any]], limit_ranges: List[Dict[str, Any]]) -> List[Finding]:
    """A ResourceQuota capping pods, CPU and memory, and a LimitRange giving containers default limits."""
    found = []
    hard: Dict[str, Any] = {}
    for quota in quotas:
        hard.update((quota.get("spec") or {}).get("hard") or {})
    if not quotas:
        found.append(finding("resource-quota", "high", "Namespace/%s" % namespace, "no ResourceQuota",
                             "apply the resource_limits role's sandbox-quota"))
    else:
        for resource in ("pods", "cpu", "memory"):
            if not any(key in hard for key in (resource, "requests." + resource, "limits." + resource, "count/" + resource)):
                found.append(finding("resource-quota", "medium", "Namespace/%s" % namespace,
                                     "no ResourceQuota caps %s" % resource,
                                     "add %s to the quota (resource_limits_quota_hard)" % resource))
    container_default = any(
        item.get("type") == "Container" and item.get("default")
        for lr in limit_ranges for item in (lr.get("spec") or {}).get("limits") or [])
    if not container_default:
        found.append(finding("limit-range", "medium", "Namespace/%s" % namespace,
                             "no LimitRange gives containers default limits",
                             "apply the resource_limits role's sandbox-limits"))
    return found


# -- admission probe ----------------------------------------------------------------------------------

PROBE_LABEL = "pandasai.io/audit-probe"


def _first_container(pod: Dict[str, Any]) -> Dict[str, Any]:
    return pod["spec"]["containers"][0]


def _sc(pod: Dict[str, Any]) -> Dict[str, Any]:
    return _first_container(pod).setdefault("securityContext", {})


def _root(pod: Dict[str, Any]) -> None:
    pod["spec"].setdefault("securityContext", {}).update(runAsNonRoot=False, runAsUser=0)
    _sc(pod).update(runAsNonRoot=False, runAsUser=0)


def _privileged(pod: Dict[str, Any]) -> None:
    _sc(pod).update(privileged=True, allowPrivilegeEscalation=True)


def _escalation(pod: Dict[str, Any]) -> None:
    _sc(pod)["allowPrivilegeEscalation"] = True


def _capability(pod: Dict[str, Any]) -> None:
    _sc(pod)["capabilities"] = {"add": ["SYS_ADMIN"]}


def _no_seccomp(pod: Dict[str, Any]) -> None:
    pod["spec"].setdefault("securityContext", {})["seccompProfile"] = {"type": "Unconfined"}
    _sc(pod)["seccompProfile"] = {"type": "Unconfined"}
    pod["metadata"].setdefault("annotations", {})[SECCOMP_POD_ANNOTATION] = "unconfined"


def _host_path(pod: Dict[str, Any]) -> None:
    pod["spec"].setdefault("volumes", []).append({"name": "host-root", "hostPath": {"path": "/"}})
    _first_container(pod).setdefault("volumeMounts", []).append({"name": "host-root", "mountPath": "/host"})


def _host_namespaces(pod: Dict[str, Any]) -> None:
    pod["spec"].update(hostNetwork=True, hostPID=True, hostIPC=True)


def _secret(pod: Dict[str, Any]) -> None:
    pod["spec"].setdefault("volumes", []).append({"name": "stolen", "secret": {"secretName": "any-secret"}})
    _first_container(pod).setdefault("volumeMounts", []).append({"name": "stolen", "mountPath": "/stolen"})


#: (name, the aspect of pod_problems it breaks, why admitting it matters, how to make it)
VIOLATIONS: List[Tuple[str, str, str, Callable[[Dict[str, Any]], None]]] = [
    ("root", "root", "a uid 0 process: with one kernel or runtime bug, root on the node", _root),
    ("privileged", "privileged", "full access to the node's devices and kernel: root on the node", _privileged),
    ("privilege-escalation", "privilege-escalation", "setuid binaries regain privileges", _escalation),
    ("capabilities", "capabilities", "CAP_SYS_ADMIN: mounts, namespaces, most of root", _capability),
    ("no-seccomp", "seccomp", "every syscall reachable: the kernel's whole attack surface", _no_seccomp),
    ("host-path", "host-path", "the node's filesystem (kubelet keys, other pods' data)", _host_path),
    ("host-namespaces", "host-namespaces", "the node's network, processes and IPC", _host_namespaces),
    ("secret-volume", "secret-volume", "any Secret of the namespace readable by the code the pod runs", _secret),
]


def compliant_pod(template: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The base of every probe: the namespace's pod template, else a minimal restricted pod."""
    if template and (template.get("spec") or {}).get("containers"):
        pod = copy.deepcopy(template)
    else:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {}, "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "probe", "image": "pandasai-audit-probe:never-pulled", "securityContext": {
                "runAsNonRoot": True, "runAsUser": 10001, "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"}}}]}}
    meta = pod.setdefault("metadata", {})
    for field in ("name", "namespace", "resourceVersion", "uid", "creationTimestamp", "managedFields", "ownerReferences"):
        meta.pop(field, None)
    meta["generateName"] = "pandasai-audit-probe-"
    meta["labels"] = {PROBE_LABEL: "true"}
    pod["apiVersion"], pod["kind"] = "v1", "Pod"
    pod.pop("status", None)
    return pod


def violating_pods(template: Optional[Dict[str, Any]]) -> List[Tuple[str, str, str, Dict[str, Any]]]:
    """``(name, aspect, why it matters, pod)`` for each rule of the restricted profile, one pod each."""
    made = []
    for name, aspect, why, mutate in VIOLATIONS:
        pod = compliant_pod(template)
        pod["metadata"]["labels"][PROBE_LABEL] = name
        mutate(pod)
        made.append((name, aspect, why, pod))
    return made


def refusal_kind(status: int, message: str) -> str:
    """How a refused dry-run create reads: 'security' (admission enforced the profile), 'rbac' (the
    identity may not create pods at all), 'impersonation' (the auditor may not act as it), 'other'."""
    text = message.lower()
    if "cannot impersonate" in text:
        return "impersonation"
    if "cannot create resource" in text:
        return "rbac"
    if any(word in text for word in ("podsecurity", "pod security policy", "violates", "securitycontext",
                                     "privileged", "hostpath", "host network", "unable to validate against")):
        return "security"
    if status == 422 and "seccomp" in text:
        return "security"
    return "other"
