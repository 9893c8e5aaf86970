#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: PandasAI pod-sandbox maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Verify a cluster for the sandbox in one API session: reachable, version, nodes Ready, may create pods."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: cluster_check
short_description: Verify that a cluster can host the PandasAI sandbox (guide step 1)
version_added: 1.1.0
author:
  - PandasAI pod-sandbox maintainers
description:
  - Does the checks of the deployment guide's first step in one module run and one API session,
    each failing with a message that names the kubeconfig, context or server at fault.
  - Finds the API server of the kubeconfig context (or I(host)), fails if the kubeconfig is missing
    or has no such context, and requires a TCP connect to it within I(connect_timeout) seconds, so
    a stopped cluster or a wrong address fails in seconds instead of after the client's retries.
  - Reads the server version and API groups (what C(kubectl cluster-info) and C(kubectl version)
    show), waits up to I(nodes_ready_timeout) seconds until every node is Ready, and asks the API
    with a SelfSubjectAccessReview whether this identity may create pods in I(namespace)
    (C(kubectl auth can-i create pods)).
  - Reads only; a SelfSubjectAccessReview is not stored. It reports C(changed=false) and runs in
    check mode too.
options:
  namespace:
    description: Namespace whose pod creation right is checked.
    type: str
    required: true
  require_pod_create:
    description: Fail unless the identity may create pods in I(namespace).
    type: bool
    default: true
  connect_timeout:
    description:
      - Seconds a TCP connect to the API server may take. A refused connection (nothing listens
        there) is retried for at most one second, then fails.
    type: int
    default: 5
  nodes_ready_timeout:
    description: Seconds to wait for every node to be Ready (0 checks once).
    type: int
    default: 180
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
requirements:
  - python >= 3.9
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Verify the cluster the kubeconfig points at
  pandasai.pod_sandbox.cluster_check:
    kubeconfig: ~/.kube/config
    namespace: pandasai-sandbox
  register: cluster

- name: Show it
  ansible.builtin.debug:
    msg: "Kubernetes {{ cluster.version.gitVersion }}, nodes {{ cluster.nodes | map(attribute='name') | join(', ') }}"
"""

RETURN = r"""
server:
  description: URL of the API server that was checked.
  returned: always
  type: str
  sample: https://127.0.0.1:6443
kubeconfig:
  description: Path of the kubeconfig used (empty when I(host) was given or the kubeconfig is a dict).
  returned: always
  type: str
context:
  description: Name of the kubeconfig context used.
  returned: always
  type: str
version:
  description: The server's C(/version) answer.
  returned: success
  type: dict
  sample: {"gitVersion": "v1.20.2", "major": "1", "minor": "20"}
api_groups:
  description: Served API group versions (C(v1) for the core group).
  returned: success
  type: list
  elements: str
nodes:
  description: Every node with its Ready condition.
  returned: success
  type: list
  elements: dict
  sample: [{"name": "localhost", "ready": true}]
pod_create_allowed:
  description: Whether the identity may create pods in I(namespace).
  returned: success
  type: bool
pod_create_reason:
  description: The authorizer's reason, when it gave one.
  returned: success
  type: str
"""

import os
import socket
import time
import traceback
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from ansible.module_utils.basic import missing_required_lib
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
    from ansible_collections.pandasai.pod_sandbox.plugins.module_utils.k8s_json import (
        K8sJSONError,
        call,
    )
except ImportError:
    # AnsibleK8SModule reports a missing kubernetes library itself; PyYAML is checked in main().
    yaml = None


#: How long a refused TCP connect to the API server is retried (a server that is restarting).
REFUSED_RETRY_S = 1.0


class CheckError(Exception):
    """A check failed; the message says which and what to do."""


def kubeconfig_path(param: Any, environ: Dict[str, str]) -> str:
    """The kubeconfig kubernetes.core would use: the option, K8S_AUTH_KUBECONFIG, KUBECONFIG, ~/.kube/config."""
    if isinstance(param, str) and param:
        return os.path.expanduser(param)
    for name in ("K8S_AUTH_KUBECONFIG", "KUBECONFIG"):
        value = environ.get(name, "")
        if value:
            # KUBECONFIG may list several files; the first one holds the context as kubectl merges.
            return os.path.expanduser(value.split(os.pathsep)[0])
    return os.path.expanduser("~/.kube/config")


def context_server(config: Any, context: Optional[str], where: str) -> Tuple[str, str]:
    """Return (context name, server URL) of ``context`` (or current-context) in a parsed kubeconfig."""
    if not isinstance(config, dict):
        raise CheckError("The kubeconfig %s is not a kubeconfig (a YAML mapping): check pod_sandbox_k8s_auth.kubeconfig." % where)
    name = context or config.get("current-context") or ""
    contexts = [c for c in config.get("contexts") or [] if isinstance(c, dict) and c.get("name") == name]
    cluster_name = ((contexts[0].get("context") or {}).get("cluster") if contexts else None) or ""
    clusters = [c for c in config.get("clusters") or [] if isinstance(c, dict) and c.get("name") == cluster_name]
    server = ((clusters[0].get("cluster") or {}).get("server") if clusters else None) or ""
    if not server:
        raise CheckError(
            "The kubeconfig %s has no usable context %s with a cluster server: check pod_sandbox_k8s_auth.context."
            % (where, name or "(current-context)"))
    return name, server


def host_port(server: str) -> Tuple[str, int]:
    """Host and port of an API server URL (443 for https, 80 for http when the URL names none)."""
    parts = urlsplit(server if "://" in server else "https://" + server)
    if not parts.hostname:
        raise CheckError("The API server address %r has no host name." % server)
    try:
        port = parts.port
    except ValueError as exc:
        raise CheckError("The API server address %r has an invalid port." % server) from exc
    return parts.hostname, port or (80 if parts.scheme == "http" else 443)


def require_reachable(server: str, where: str, timeout: float) -> None:
    """A TCP connect to the API server within ``timeout`` seconds, or a CheckError saying so.

    A refused connection (nothing listens: a stopped cluster, a wrong port) is retried only for
    REFUSED_RETRY_S, so it fails at once; an unanswered one (a wrong or blackholed address) is
    bounded by ``timeout``.
    """
    host, port = host_port(server)
    started = time.monotonic()
    deadline = started + timeout
    last: Optional[OSError] = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            with socket.create_connection((host, port), timeout=remaining):
                return
        except ConnectionRefusedError as exc:
            last = exc
            if time.monotonic() - started >= min(timeout, REFUSED_RETRY_S):
                break
            time.sleep(0.2)
        except OSError as exc:
            last = exc
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
    raise CheckError(
        "The Kubernetes API server %s (kubeconfig %s) is not reachable within %s s (%s): "
        "is the cluster running and is this the right kubeconfig/context?" % (server, where, int(timeout), last))


def node_summary(node: Dict[str, Any]) -> Dict[str, Any]:
    """Name, Ready condition and kubelet version of a Node object."""
    status = node.get("status") or {}
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    return {
        "name": node["metadata"]["name"],
        "ready": bool(ready) and ready[0].get("status") == "True",
        "reason": (ready[0].get("reason") or "") if ready else "no Ready condition",
        "kubelet_version": (status.get("nodeInfo") or {}).get("kubeletVersion", ""),
    }


def wait_nodes_ready(api_client: Any, timeout: float) -> List[Dict[str, Any]]:
    """Every node, once all are Ready; a CheckError naming the unready ones after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = [node_summary(n) for n in call(api_client, "GET", "/api/v1/nodes").get("items") or []]
        if nodes and all(n["ready"] for n in nodes):
            return nodes
        if time.monotonic() >= deadline:
            if not nodes:
                raise CheckError("The cluster has no nodes (waited %s s)." % int(timeout))
            raise CheckError("Nodes not Ready after %s s: %s." % (int(timeout), ", ".join(
                "%s (%s)" % (n["name"], n["reason"] or "NotReady") for n in nodes if not n["ready"])))
        time.sleep(2)


def can_create_pods(api_client: Any, namespace: str) -> Tuple[bool, str]:
    """Ask the API, as this identity, whether it may create pods in ``namespace``."""
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"namespace": namespace, "verb": "create", "resource": "pods"}}}
    status = call(api_client, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review).get("status") or {}
    return bool(status.get("allowed")), status.get("reason") or ""


def api_groups(api_client: Any) -> List[str]:
    """Served group versions, v1 (the core group) first."""
    groups = call(api_client, "GET", "/apis").get("groups") or []
    return ["v1"] + sorted(v["groupVersion"] for g in groups for v in g.get("versions") or [])


def locate(params: Dict[str, Any], environ: Dict[str, str]) -> Tuple[str, str, str]:
    """(kubeconfig shown in messages, context, server) from the auth options; CheckError if unusable."""
    if params.get("host"):
        return "", params.get("context") or "", params["host"]
    kubeconfig = params.get("kubeconfig")
    if isinstance(kubeconfig, dict):
        context, server = context_server(kubeconfig, params.get("context"), "(given as a dict)")
        return "", context, server
    path = kubeconfig_path(kubeconfig, environ)
    if not os.path.isfile(path):
        raise CheckError("The kubeconfig %s does not exist: set pod_sandbox_k8s_auth.kubeconfig (or KUBECONFIG)." % path)
    try:
        with open(path, encoding="utf-8") as handle:
            parsed = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise CheckError("The kubeconfig %s cannot be read as YAML: %s" % (path, exc)) from exc
    context, server = context_server(parsed, params.get("context"), path)
    return path, context, server


def run_checks(module: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    """Every check in order; returns the facts or raises CheckError."""
    kubeconfig, context, server = locate(params, dict(os.environ))
    where = kubeconfig or "(none)"
    facts: Dict[str, Any] = {"server": server, "kubeconfig": kubeconfig, "context": context}
    require_reachable(server, where, float(params["connect_timeout"]))
    try:
        api_client = get_api_client(module=module).client.client
        version = call(api_client, "GET", "/version")
        facts["version"] = {k: version.get(k, "") for k in ("gitVersion", "major", "minor", "platform")}
        facts["api_groups"] = api_groups(api_client)
        facts["nodes"] = wait_nodes_ready(api_client, float(params["nodes_ready_timeout"]))
        allowed, reason = can_create_pods(api_client, params["namespace"])
    except CoreException as exc:
        raise CheckError("Cannot use the kubeconfig %s (context %s): %s" % (where, context, exc)) from exc
    except K8sJSONError as exc:
        raise CheckError("The API server %s refused a check: %s" % (server, exc)) from exc
    facts["pod_create_allowed"], facts["pod_create_reason"] = allowed, reason
    if params["require_pod_create"] and not allowed:
        raise CheckError("The identity of %s may not create pods in namespace %s (%s): use a kubeconfig with that right."
                         % (where, params["namespace"], reason or "no reason given"))
    return facts


def main() -> None:
    argument_spec = dict(
        namespace=dict(type="str", required=True),
        require_pod_create=dict(type="bool", default=True),
        connect_timeout=dict(type="int", default=5),
        nodes_ready_timeout=dict(type="int", default=180),
    )
    argument_spec.update(AUTH_ARG_SPEC)
    module = AnsibleK8SModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    if yaml is None:
        module.fail_json(msg=missing_required_lib("PyYAML"))
    if params["connect_timeout"] <= 0 or params["nodes_ready_timeout"] < 0:
        module.fail_json(msg="connect_timeout must be positive and nodes_ready_timeout not negative, got %s and %s"
                         % (params["connect_timeout"], params["nodes_ready_timeout"]))
    try:
        facts = run_checks(module, params)
    except CheckError as exc:
        module.fail_json(msg=str(exc))
    except Exception as exc:  # anything unexpected: say what, with the traceback, never a bare crash
        module.fail_json(msg="cluster check failed: %s: %s" % (type(exc).__name__, exc),
                         exception=traceback.format_exc())
    module.exit_json(changed=False, **facts)


if __name__ == "__main__":
    main()
