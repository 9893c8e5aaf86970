#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: PandasAI pod-sandbox maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Probe a sandbox pod's executor API through a Kubernetes port-forward (no kubectl), optionally on a throwaway test pod."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: sandbox_probe
short_description: Probe a sandbox pod's executor API through a Kubernetes port-forward
version_added: 1.0.0
author:
  - PandasAI pod-sandbox maintainers
description:
  - Opens one port-forward to the pod through the Kubernetes API (the Python client's
    C(kubernetes.stream.portforward), no C(kubectl)), keeps one HTTP/1.1 connection alive over it
    and reads every response by its Content-Length.
  - In order, and only those asked for, it calls C(GET /health), C(POST /v1/claim) with a token
    (a random one unless I(token) is given), and C(POST /v1/execute) with I(code).
  - Fails with a message naming the call and the HTTP status when a call does not answer 2xx, or
    when the port-forward cannot be opened.
  - With I(pod) it first creates a test pod from that manifest, polls it until Ready (failing
    early, with the scheduler's or kubelet's reason and the fix, when it is unschedulable, its
    image cannot be pulled or it crashes), probes it, and always deletes it
    (grace period 0, retried through a short API outage). On failure the message carries the
    pod's events and the last lines of its log. This is the deployment guide's verification in
    one module run (one process, one API session) instead of four tasks.
  - It reports C(changed=false) - the claim only sets the bearer token, in memory, of the pod
    being probed, and a test pod made from I(pod) is gone when the module returns. In check mode
    it does nothing and returns C(skipped=true).
options:
  name:
    description: Name of an existing sandbox pod to probe. Exactly one of I(name) and I(pod).
    type: str
  pod:
    description:
      - A Pod manifest (for example the one published by the pod_template role) to start a test
        pod from. Its C(metadata.name) is dropped in favour of C(generateName) so runs never
        collide. Exactly one of I(name) and I(pod).
    type: dict
  namespace:
    description: Namespace of the pod.
    type: str
    required: true
  ready_timeout:
    description: With I(pod), seconds to wait for the test pod to become Ready.
    type: int
    default: 120
  unschedulable_grace:
    description:
      - With I(pod), seconds an Unschedulable verdict of the scheduler may stand before the probe
        fails (0, the default, fails at once; raise it where a node autoscaler adds capacity).
        Image pull errors, crash loops and containers that exit fail at once, naming the fix.
    type: int
    default: 0
  log_tail_lines:
    description: With I(pod), how many lines of the test pod's log a failure message carries.
    type: int
    default: 40
  port:
    description: Container port of the executor API.
    type: int
    default: 8080
  health:
    description: 'Call C(GET /health) first and require the answer C({"status": "ok"}).'
    type: bool
    default: true
  claim:
    description:
      - Call C(POST /v1/claim) before any authenticated call, as the sandbox client does with a pod
        started with C(--claimable).
    type: bool
    default: true
  token:
    description:
      - Bearer token to claim the pod with and to send on authenticated calls (32 to 256 URL-safe
        characters). A random one is made when omitted.
    type: str
  code:
    description: Python code to send to C(POST /v1/execute). Nothing is executed when omitted.
    type: str
  execute_timeout:
    description: C(timeout_s) of the execution request, in seconds.
    type: float
    default: 30
  timeout:
    description: Seconds to wait for each HTTP response.
    type: float
    default: 60
extends_documentation_fragment:
  - kubernetes.core.k8s_auth_options
requirements:
  - python >= 3.9
  - kubernetes >= 24.2.0
"""

EXAMPLES = r"""
- name: Start a test pod from a manifest, probe it, delete it
  pandasai.pod_sandbox.sandbox_probe:
    pod: "{{ lookup('ansible.builtin.file', 'pod.yaml') | from_yaml }}"
    namespace: pandasai-sandbox
    code: 'result = {"type": "number", "value": 6 * 7}'
  register: probe

- name: Check the executor of a test pod and run one execution
  pandasai.pod_sandbox.sandbox_probe:
    name: python-sandbox-abcde
    namespace: pandasai-sandbox
    code: 'result = {"type": "number", "value": 6 * 7}'
  register: probe

- name: Expect 42
  ansible.builtin.assert:
    that:
      - probe.execute.body.status == 'ok'
      - probe.execute.body.result.value == 42
"""

RETURN = r"""
pod:
  description: The test pod made from I(pod) (already deleted) - name, node and seconds from create to Ready.
  returned: when I(pod) is given and not in check mode
  type: dict
  sample: {"name": "python-sandbox-x7k2p", "node": "localhost", "ready_seconds": 2.4, "deleted": true}
health:
  description: Status and JSON body of C(GET /health).
  returned: when I(health=true) and not in check mode
  type: dict
  sample: {"status_code": 200, "body": {"status": "ok"}, "elapsed_ms": 12.3}
claim:
  description: Status and JSON body of C(POST /v1/claim) (the token is never returned).
  returned: when I(claim=true) and not in check mode
  type: dict
  sample: {"status_code": 200, "body": {"claimed": true}, "elapsed_ms": 3.1}
execute:
  description: Status and JSON body of C(POST /v1/execute).
  returned: when I(code) is given and not in check mode
  type: dict
  sample: {"status_code": 200, "body": {"status": "ok", "result": {"type": "number", "value": 42}}, "elapsed_ms": 25.0}
"""

import copy
import http.client
import json
import re
import secrets
import time
import traceback
from typing import Any, Dict, Optional

from ansible_collections.kubernetes.core.plugins.module_utils.args_common import (
    AUTH_ARG_SPEC,
)
from ansible_collections.kubernetes.core.plugins.module_utils.k8s.core import (
    AnsibleK8SModule,
)

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
    from ansible_collections.pandasai.pod_sandbox.plugins.module_utils.pod_start import (
        create_refusal_fix,
        start_problem,
    )
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException
    from kubernetes.stream import portforward
except ImportError:
    # AnsibleK8SModule reports the missing kubernetes library itself.
    pass

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{32,256}$")
DELETE_ATTEMPTS = 10
DELETE_RETRY_DELAY_S = 3.0
READY_POLL_S = 0.25


class ProbeError(Exception):
    """A probe step failed; the message names the step."""


class PortForwardHTTP(http.client.HTTPConnection):
    """An HTTP/1.1 connection whose socket is one end of a Kubernetes port-forward.

    http.client reads each response by its Content-Length (or chunks), never to EOF, so one
    port-forward serves every call of the probe with keep-alive.
    """

    def __init__(self, sock: Any, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.sock = sock

    def connect(self) -> None:
        # The tunnel is the connection; a second one would need a new port-forward.
        if self.sock is None:
            raise ProbeError("the port-forward connection was closed by the pod")


def request(conn: PortForwardHTTP, method: str, path: str, body: Optional[Dict[str, Any]] = None,
            token: Optional[str] = None) -> Dict[str, Any]:
    """One HTTP call over the tunnel; returns status, JSON body and elapsed milliseconds."""
    headers = {"Host": "localhost", "Accept": "application/json", "Connection": "keep-alive"}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode("utf-8")
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = "Bearer " + token
    started = time.monotonic()
    try:
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise ProbeError("%s %s: no HTTP answer through the port-forward (%s: %s)"
                         % (method, path, type(exc).__name__, exc)) from exc
    elapsed_ms = round((time.monotonic() - started) * 1000.0, 1)
    text = raw.decode("utf-8", errors="replace")
    try:
        parsed: Any = json.loads(text) if text else None
    except ValueError:
        parsed = text
    return {"status_code": response.status, "body": parsed, "elapsed_ms": elapsed_ms}


def expect_2xx(step: str, result: Dict[str, Any]) -> None:
    """Raise a ProbeError naming the step unless the status is 2xx."""
    if not 200 <= result["status_code"] < 300:
        raise ProbeError("%s answered HTTP %s: %s" % (step, result["status_code"],
                                                     json.dumps(result["body"])[:2000]))


def api_status_message(text: str) -> str:
    """The message of a Kubernetes Status object inside an error text, else the text itself."""
    start = text.find('{"kind":"Status"')
    if start >= 0:
        try:
            status = json.loads(text[start:text.rindex("}") + 1])
            return "%s (%s)" % (status.get("message", ""), status.get("reason", ""))
        except ValueError:
            pass
    return text


def open_tunnel(api: Any, name: str, namespace: str, port: int) -> Any:
    """Open the port-forward and return it; errors name the pod."""
    try:
        return portforward(api.connect_get_namespaced_pod_portforward, name, namespace,
                           ports=str(port))
    except ApiException as exc:
        raise ProbeError("cannot open a port-forward to pod %s/%s port %s: %s"
                         % (namespace, name, port, api_status_message(str(exc.reason or exc)))) from exc
    except Exception as exc:  # websocket and connection errors have no common base class
        raise ProbeError("cannot open a port-forward to pod %s/%s port %s: %s: %s"
                         % (namespace, name, port, type(exc).__name__, exc)) from exc


def run_probe(api: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    """Run the requested calls over one port-forward and return their results."""
    name, namespace, port = params["name"], params["namespace"], params["port"]
    token = params["token"] or secrets.token_urlsafe(32)
    results: Dict[str, Any] = {}
    forward = open_tunnel(api, name, namespace, port)
    try:
        sock = forward.socket(port)
        sock.settimeout(params["timeout"])
        conn = PortForwardHTTP(sock, params["timeout"])
        if params["health"]:
            results["health"] = request(conn, "GET", "/health")
            expect_2xx("GET /health", results["health"])
            body = results["health"]["body"]
            if not isinstance(body, dict) or body.get("status") != "ok":
                raise ProbeError("GET /health answered %s, expected {\"status\": \"ok\"}" % json.dumps(body))
        if params["claim"]:
            results["claim"] = request(conn, "POST", "/v1/claim", {"token": token})
            expect_2xx("POST /v1/claim", results["claim"])
        if params["code"] is not None:
            body = {"code": params["code"], "timeout_s": params["execute_timeout"]}
            results["execute"] = request(conn, "POST", "/v1/execute", body, token=token)
            expect_2xx("POST /v1/execute", results["execute"])
        error = forward.error(port)
        if error:
            raise ProbeError("port-forward to %s/%s reported: %s" % (namespace, name, error))
    finally:
        forward.close()
    return results


def pods_path(namespace: str, name: str = "", sub: str = "") -> str:
    """API path of the pods collection, a pod, or one of its subresources."""
    return "/api/v1/namespaces/%s/pods%s%s" % (namespace, "/" + name if name else "", "/" + sub if sub else "")


def test_pod_manifest(manifest: Dict[str, Any], namespace: str) -> Dict[str, Any]:
    """A copy of ``manifest`` fit for creating a throwaway pod: generateName, namespace, no server fields."""
    if not isinstance(manifest, dict) or manifest.get("kind", "Pod") != "Pod":
        raise ProbeError("pod must be a Pod manifest (kind Pod), got kind %r"
                         % (manifest.get("kind") if isinstance(manifest, dict) else type(manifest).__name__))
    pod = copy.deepcopy(manifest)
    meta = pod.setdefault("metadata", {})
    name = meta.pop("name", None)
    meta.setdefault("generateName", (name or "sandbox-verify") + "-")
    meta["namespace"] = namespace
    for server_field in ("resourceVersion", "uid", "creationTimestamp", "managedFields", "selfLink"):
        meta.pop(server_field, None)
    pod.pop("status", None)
    pod["apiVersion"], pod["kind"] = "v1", "Pod"
    if not isinstance(pod.get("spec"), dict) or not pod["spec"].get("containers"):
        raise ProbeError("pod must have spec.containers")
    return pod


def pod_ready(pod: Dict[str, Any]) -> bool:
    """Whether the pod's Ready condition is True."""
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def pod_problem(pod: Dict[str, Any], unschedulable_grace: float = 0.0) -> Optional[str]:
    """Why the pod will not become Ready by waiting longer (the cluster's words and the fix), or None."""
    problem = start_problem(pod, unschedulable_grace)
    if problem is None:
        return None
    return "%s\nFix: %s" % problem


def wait_ready(api_client: Any, namespace: str, name: str, timeout: float,
               unschedulable_grace: float = 0.0) -> Dict[str, Any]:
    """Poll the pod until it is Ready; a ProbeError with the reason if it fails or times out."""
    deadline = time.monotonic() + timeout
    while True:
        pod = call(api_client, "GET", pods_path(namespace, name))
        if pod_ready(pod):
            return pod
        problem = pod_problem(pod, unschedulable_grace)
        if problem:
            raise ProbeError("test pod %s/%s will not become Ready: %s" % (namespace, name, problem))
        if time.monotonic() >= deadline:
            raise ProbeError("test pod %s/%s not Ready after %s s (phase %s)"
                             % (namespace, name, int(timeout), (pod.get("status") or {}).get("phase", "?")))
        time.sleep(READY_POLL_S)


def diagnostics(api_client: Any, namespace: str, name: str, tail_lines: int) -> str:
    """The pod's events and last log lines, for a failure message; never raises."""
    lines = []
    try:
        events = call(api_client, "GET", "/api/v1/namespaces/%s/events" % namespace,
                      query={"fieldSelector": "involvedObject.name=%s" % name}).get("items") or []
        lines.append("Events: " + ("; ".join("%s: %s" % (e.get("reason"), (e.get("message") or "").strip())
                                             for e in events[-10:]) or "(none)"))
    except Exception as exc:  # diagnostics must not hide the failure they explain
        lines.append("Events: unavailable (%s)" % exc)
    try:
        log = call(api_client, "GET", pods_path(namespace, name, "log"), query={"tailLines": tail_lines})
        text = log if isinstance(log, str) else json.dumps(log)
        lines.append("Log (last %d lines): %s" % (tail_lines, text.strip() or "(empty)"))
    except Exception as exc:  # e.g. the container never started
        lines.append("Log: unavailable (%s)" % exc)
    return "\n".join(lines)


def delete_pod(api_client: Any, namespace: str, name: str) -> None:
    """Delete the pod at once, retrying through a short API outage; a pod already gone is fine."""
    last: Optional[Exception] = None
    for attempt in range(DELETE_ATTEMPTS):
        if attempt:
            time.sleep(DELETE_RETRY_DELAY_S)
        try:
            call(api_client, "DELETE", pods_path(namespace, name),
                 {"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0})
            return
        except K8sJSONError as exc:
            if exc.status == 404:
                return
            if exc.status in (401, 403):
                raise ProbeError("may not delete test pod %s/%s: %s" % (namespace, name, exc)) from exc
            last = exc
        except Exception as exc:  # connection errors while the API server restarts
            last = exc
    raise ProbeError("could not delete test pod %s/%s after %d attempts (%s): delete it by hand"
                     % (namespace, name, DELETE_ATTEMPTS, last))


def run_test_pod(api_client: Any, core: Any, params: Dict[str, Any]) -> Dict[str, Any]:
    """Create a test pod from params['pod'], wait until Ready, probe it, always delete it."""
    namespace = params["namespace"]
    manifest = test_pod_manifest(params["pod"], namespace)
    started = time.monotonic()
    try:
        name = call(api_client, "POST", pods_path(namespace), manifest)["metadata"]["name"]
    except K8sJSONError as exc:
        raise ProbeError("cannot create a test pod in %s: %s\nFix: %s"
                         % (namespace, exc, create_refusal_fix(exc.message or exc.body))) from exc
    results: Dict[str, Any] = {}
    try:
        pod = wait_ready(api_client, namespace, name, float(params["ready_timeout"]),
                         float(params.get("unschedulable_grace") or 0))
        ready_seconds = round(time.monotonic() - started, 2)
        results = run_probe(core, dict(params, name=name))
        results["pod"] = {"name": name, "node": (pod.get("spec") or {}).get("nodeName", ""),
                          "ready_seconds": ready_seconds}
    except (ProbeError, K8sJSONError) as exc:
        details = diagnostics(api_client, namespace, name, params["log_tail_lines"])
        try:
            delete_pod(api_client, namespace, name)
        except ProbeError as delete_exc:
            details += "\n" + str(delete_exc)
        raise ProbeError("%s\n%s" % (exc, details)) from exc
    except BaseException:
        delete_pod(api_client, namespace, name)
        raise
    delete_pod(api_client, namespace, name)
    results["pod"]["deleted"] = True
    return results


def main() -> None:
    argument_spec = dict(
        name=dict(type="str"),
        pod=dict(type="dict"),
        namespace=dict(type="str", required=True),
        ready_timeout=dict(type="int", default=120),
        unschedulable_grace=dict(type="int", default=0),
        log_tail_lines=dict(type="int", default=40),
        port=dict(type="int", default=8080),
        health=dict(type="bool", default=True),
        claim=dict(type="bool", default=True),
        token=dict(type="str", no_log=True),
        code=dict(type="str"),
        execute_timeout=dict(type="float", default=30.0),
        timeout=dict(type="float", default=60.0),
    )
    argument_spec.update(AUTH_ARG_SPEC)
    module = AnsibleK8SModule(argument_spec=argument_spec, supports_check_mode=True,
                              mutually_exclusive=[("name", "pod")], required_one_of=[("name", "pod")])
    params = module.params
    target = "pod %s/%s" % (params["namespace"], params["name"]) if params["name"] else "a test pod in %s" % params["namespace"]
    if not 1 <= params["port"] <= 65535:
        module.fail_json(msg="port must be 1-65535, got %s" % params["port"])
    if params["token"] is not None and not TOKEN_RE.match(params["token"]):
        module.fail_json(msg="token must be 32 to 256 URL-safe characters [A-Za-z0-9_-]")
    if params["timeout"] <= 0 or params["execute_timeout"] <= 0 or params["ready_timeout"] <= 0:
        module.fail_json(msg="timeout, execute_timeout and ready_timeout must be positive")
    if params["unschedulable_grace"] < 0:
        module.fail_json(msg="unschedulable_grace must not be negative, got %s" % params["unschedulable_grace"])
    if params["log_tail_lines"] < 0:
        module.fail_json(msg="log_tail_lines must not be negative, got %s" % params["log_tail_lines"])
    if module.check_mode:
        module.exit_json(changed=False, skipped=True,
                         msg="check mode: the probe of %s was not run" % target)
    try:
        client = get_api_client(module=module)
        api = CoreV1Api(client.client.client)
        if params["pod"] is not None:
            results = run_test_pod(client.client.client, api, params)
        else:
            results = run_probe(api, params)
    except CoreException as exc:
        module.fail_json(msg="cannot connect to the Kubernetes API: %s" % exc)
    except ProbeError as exc:
        module.fail_json(msg="sandbox probe of %s failed: %s" % (target, exc))
    except Exception as exc:  # report anything unexpected with its traceback, never a bare crash
        module.fail_json(msg="sandbox probe of %s failed: %s: %s" % (target, type(exc).__name__, exc),
                         exception=traceback.format_exc())
    module.exit_json(changed=False, **results)


if __name__ == "__main__":
    main()
