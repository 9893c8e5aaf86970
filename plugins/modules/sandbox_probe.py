#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: PandasAI pod-sandbox maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Probe a sandbox pod's executor API through a Kubernetes port-forward (no kubectl)."""

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
  - It reports C(changed=false) - the claim only sets the bearer token, in memory, of the pod
    being probed (normally a throwaway test pod). In check mode it does nothing and returns
    C(skipped=true).
options:
  name:
    description: Name of the sandbox pod.
    type: str
    required: true
  namespace:
    description: Namespace of the pod.
    type: str
    required: true
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
    from kubernetes.client import CoreV1Api
    from kubernetes.client.exceptions import ApiException
    from kubernetes.stream import portforward
except ImportError:
    # AnsibleK8SModule reports the missing kubernetes library itself.
    pass

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{32,256}$")


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


def main() -> None:
    argument_spec = dict(
        name=dict(type="str", required=True),
        namespace=dict(type="str", required=True),
        port=dict(type="int", default=8080),
        health=dict(type="bool", default=True),
        claim=dict(type="bool", default=True),
        token=dict(type="str", no_log=True),
        code=dict(type="str"),
        execute_timeout=dict(type="float", default=30.0),
        timeout=dict(type="float", default=60.0),
    )
    argument_spec.update(AUTH_ARG_SPEC)
    module = AnsibleK8SModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    if not 1 <= params["port"] <= 65535:
        module.fail_json(msg="port must be 1-65535, got %s" % params["port"])
    if params["token"] is not None and not TOKEN_RE.match(params["token"]):
        module.fail_json(msg="token must be 32 to 256 URL-safe characters [A-Za-z0-9_-]")
    if params["timeout"] <= 0 or params["execute_timeout"] <= 0:
        module.fail_json(msg="timeout and execute_timeout must be positive")
    if module.check_mode:
        module.exit_json(changed=False, skipped=True,
                         msg="check mode: the probe of %s/%s was not run" % (params["namespace"], params["name"]))
    try:
        client = get_api_client(module=module)
        api = CoreV1Api(client.client.client)
        results = run_probe(api, params)
    except CoreException as exc:
        module.fail_json(msg="cannot connect to the Kubernetes API: %s" % exc)
    except ProbeError as exc:
        module.fail_json(msg="sandbox probe of pod %s/%s failed: %s" % (params["namespace"], params["name"], exc))
    except Exception as exc:  # report anything unexpected with its traceback, never a bare crash
        module.fail_json(msg="sandbox probe of pod %s/%s failed: %s: %s"
                         % (params["namespace"], params["name"], type(exc).__name__, exc),
                         exception=traceback.format_exc())
    module.exit_json(changed=False, **results)


if __name__ == "__main__":
    main()
