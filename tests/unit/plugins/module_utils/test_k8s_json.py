"""Unit tests of module_utils.k8s_json: request building, credentials, errors, both client generations."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ansible_collections.pandasai.pod_sandbox.plugins.module_utils import k8s_json


class Configuration:
    host = "https://127.0.0.1:6443/"

    def __init__(self, token: str | None) -> None:
        self.token = token

    def auth_settings(self) -> dict[str, Any]:
        if not self.token:
            return {}
        return {"BearerToken": {"in": "header", "key": "authorization", "value": "Bearer " + self.token}}


class Response:
    def __init__(self, status: int, data: bytes, preloaded: bool) -> None:
        self.status, self.reason = status, "Reason"
        self._data = data
        self.data = data if preloaded else None

    def read(self) -> bytes:
        self.data = self._data
        return self._data


class ApiException(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(body)
        self.status, self.reason, self.body = status, "Forbidden", body


class RestClient:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.requests: list[tuple[str, str, dict[str, str], Any]] = []

    def request(self, method: str, url: str, headers: dict[str, str], body: Any, _request_timeout: Any) -> Any:
        self.requests.append((method, url, headers, body))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class ApiClient:
    def __init__(self, answer: Any, token: str | None = "t0k") -> None:
        self.configuration = Configuration(token)
        self.rest_client = RestClient(answer)
        self.default_headers = {"X-Extra": "1"}


@pytest.mark.parametrize("preloaded", [True, False])
def test_call_sends_credentials_and_parses_json(preloaded: bool) -> None:
    client = ApiClient(Response(200, b'{"kind": "NodeList", "items": []}', preloaded))
    assert k8s_json.call(client, "GET", "/api/v1/nodes", query={"limit": 5, "skip": None}) == {"kind": "NodeList", "items": []}
    method, url, headers, body = client.rest_client.requests[0]
    assert (method, url, body) == ("GET", "https://127.0.0.1:6443/api/v1/nodes?limit=5", None)
    assert headers["authorization"] == "Bearer t0k" and headers["X-Extra"] == "1"


def test_call_without_token_sends_no_authorization() -> None:
    client = ApiClient(Response(200, b"plain log line\n", True), token=None)
    assert k8s_json.call(client, "GET", "/log") == "plain log line\n"
    assert "authorization" not in client.rest_client.requests[0][2]


def test_non_2xx_response_raises_with_the_status_message() -> None:
    status = {"kind": "Status", "message": 'pods "x" not found', "reason": "NotFound"}
    client = ApiClient(Response(404, json.dumps(status).encode(), False))
    with pytest.raises(k8s_json.K8sJSONError) as info:
        k8s_json.call(client, "GET", "/api/v1/namespaces/a/pods/x")
    assert info.value.status == 404
    assert 'pods "x" not found (NotFound)' in str(info.value)


def test_client_exceptions_become_k8s_json_errors() -> None:
    client = ApiClient(ApiException(403, '{"kind": "Status", "message": "forbidden", "reason": "Forbidden"}'))
    with pytest.raises(k8s_json.K8sJSONError, match=r"POST /x: HTTP 403 forbidden \(Forbidden\)"):
        k8s_json.call(client, "POST", "/x", {"a": 1})


def test_connection_errors_pass_through() -> None:
    client = ApiClient(ConnectionRefusedError("refused"))
    with pytest.raises(ConnectionRefusedError):
        k8s_json.call(client, "GET", "/version")
