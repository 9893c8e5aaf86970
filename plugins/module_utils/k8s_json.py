# -*- coding: utf-8 -*-
# Copyright: PandasAI pod-sandbox maintainers
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
"""Plain-JSON Kubernetes API calls over kubernetes.core's authenticated client (no model classes).

The generated model classes of the ``kubernetes`` package cost about half a second to load and
fill on first use (a NodeList: 0.45 s against 2 ms for the request itself, measured on this
project's 2-core test machine), which a module pays on every task. These helpers send and read
plain JSON through the same configured ``ApiClient`` (same TLS, proxy and credentials, including
refreshed exec/OIDC tokens), so a module that only needs a few fields stays fast.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
from typing import Any, Dict, Optional
from urllib.parse import urlencode


class K8sJSONError(Exception):
    """An API call answered outside 2xx; carries the HTTP status and the Status message."""

    def __init__(self, method: str, path: str, status: int, reason: str, body: str) -> None:
        self.method, self.path, self.status, self.reason, self.body = method, path, status, reason, body
        self.message = status_message(body) or reason
        super().__init__("%s %s: HTTP %s %s" % (method, path, status, self.message))


def status_message(body: str) -> str:
    """The message of a Kubernetes Status object in a response body, else ''."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return ""
    if isinstance(parsed, dict) and parsed.get("kind") == "Status":
        return "%s (%s)" % (parsed.get("message", ""), parsed.get("reason", ""))
    return ""


def auth_headers(configuration: Any) -> Dict[str, str]:
    """Header credentials of a kubernetes client Configuration (bearer tokens, refreshed if due)."""
    headers: Dict[str, str] = {}
    for setting in (configuration.auth_settings() or {}).values():
        if setting.get("in") == "header" and setting.get("value"):
            headers[setting["key"]] = setting["value"]
    return headers


def call(api_client: Any, method: str, path: str, body: Optional[Any] = None,
         query: Optional[Dict[str, Any]] = None, timeout: Optional[float] = None,
         content_type: str = "application/json", headers: Optional[Dict[str, str]] = None) -> Any:
    """Send one request; return the parsed JSON answer (text for non-JSON), raise K8sJSONError on non-2xx.

    ``headers`` are added last, e.g. ``Impersonate-User`` to act as a ServiceAccount (the API server
    then adds the ServiceAccount's groups itself)."""
    configuration = api_client.configuration
    sent = {"Accept": "application/json", "Content-Type": content_type,
            "User-Agent": "pandasai.pod_sandbox"}
    sent.update(auth_headers(configuration))
    sent.update(getattr(api_client, "default_headers", None) or {})
    sent.update(headers or {})
    url = configuration.host.rstrip("/") + path
    if query:
        url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
    # Old and new generated clients raise ApiException themselves on non-2xx; normalise both.
    try:
        response = api_client.rest_client.request(method, url, headers=sent, body=body,
                                                  _request_timeout=timeout)
    except Exception as exc:  # kubernetes.client.exceptions.ApiException without importing it
        status = getattr(exc, "status", None)
        if status is None:
            raise
        raw = getattr(exc, "body", "") or ""
        raise K8sJSONError(method, path, int(status), str(getattr(exc, "reason", "")),
                           raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)) from exc
    if hasattr(response, "read") and getattr(response, "data", None) is None:
        response.read()
    data = response.data
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else (data or "")
    if not 200 <= int(response.status) < 300:
        raise K8sJSONError(method, path, int(response.status), str(getattr(response, "reason", "")), text)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return text
