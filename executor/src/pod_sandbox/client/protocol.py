"""The executor's HTTP API as typed calls: health, claim, files, execute, shutdown."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable
from urllib.parse import quote

from .. import wire
from .answers import check_execute_response
from .errors import SandboxConnectionError, SandboxProtocolError, SandboxStartError
from .http import ExecutorHTTP, HttpResponse

#: How often a 429 (all execution slots busy) is retried, honouring Retry-After.
BUSY_RETRIES = 20


def _error_text(resp: HttpResponse) -> str:
    try:
        body = resp.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            field = err.get("field")
            return f"{field + ': ' if field else ''}{err.get('message', err)}"
        return str(body)[:300]
    except SandboxProtocolError:
        return resp.body[:300].decode("utf-8", "replace")


class ExecutorClient:
    """One executor, reached through an :class:`ExecutorHTTP` connection."""

    def __init__(self, http: ExecutorHTTP, sleep: Callable[[float], None] = time.sleep) -> None:
        self.http = http
        self._sleep = sleep

    def _check(self, resp: HttpResponse, what: str, ok: tuple[int, ...] = (200,)) -> HttpResponse:
        if resp.status in ok:
            return resp
        if resp.status == 401:
            raise SandboxProtocolError(
                f"{what}: the executor rejected the session token (HTTP 401)", 401, _error_text(resp)
            )
        raise SandboxProtocolError(
            f"{what}: executor answered HTTP {resp.status}: {_error_text(resp)}",
            resp.status,
            resp.body.decode("utf-8", "replace"),
        )

    # -- service ---------------------------------------------------------------------------------

    def health(self, timeout_s: float = 5.0) -> dict[str, Any]:
        """``GET /health``."""
        resp = self.http.request("GET", "/health", timeout_s=timeout_s, auth=False)
        return self._check(resp, "health").json(self.http.limits)

    def ready(self, timeout_s: float = 5.0) -> bool:
        """``GET /ready``: True when the executor accepts work."""
        resp = self.http.request("GET", "/ready", timeout_s=timeout_s, auth=False)
        return resp.status == 200

    def info(self) -> dict[str, Any]:
        """``GET /v1/info``: versions and limits."""
        return self._check(self.http.request("GET", "/v1/info"), "info").json(self.http.limits)

    def claim(self, token: str, timeout_s: float = 10.0) -> None:
        """``POST /v1/claim``: set this session's bearer token; the pod is then ours alone."""
        wire.validate_token(token)
        resp = self.http.json_request("POST", "/v1/claim", {"token": token}, timeout_s=timeout_s, auth=False)
        if resp.status == 409:
            raise SandboxStartError(
                "the executor was already claimed by another session (HTTP 409); "
                "a pod never serves two sessions"
            )
        self._check(resp, "claim", ok=(200, 201, 204))
        self.http.token = token

    def shutdown(self, timeout_s: float = 2.0) -> None:
        """``POST /v1/shutdown``: ask the executor to exit (the pod then ends Succeeded)."""
        self._check(self.http.json_request("POST", "/v1/shutdown", {}, timeout_s=timeout_s), "shutdown", ok=(200, 202, 204))

    # -- files -------------------------------------------------------------------------------------

    def put_file(self, name: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """``PUT /v1/files/{name}``: upload into the session workspace."""
        wire.validate_file_name(name)
        resp = self.http.request(
            "PUT", "/v1/files/" + quote(name, safe=""), data, content_type=content_type,
            timeout_s=max(self.http.timeout_s, 30.0 + len(data) / (8 * 1024 * 1024)),
        )
        self._check(resp, f"upload {name}", ok=(200, 201, 204))

    def get_file(self, name: str) -> bytes:
        """``GET /v1/files/{name}`` (at most ``AnswerLimits.max_download_bytes``)."""
        wire.validate_file_name(name)
        resp = self.http.request("GET", "/v1/files/" + quote(name, safe=""),
                                 max_bytes=self.http.limits.max_download_bytes)
        return self._check(resp, f"download {name}").body

    def delete_file(self, name: str) -> None:
        """``DELETE /v1/files/{name}``."""
        wire.validate_file_name(name)
        resp = self.http.request("DELETE", "/v1/files/" + quote(name, safe=""))
        self._check(resp, f"delete {name}", ok=(200, 204, 404))

    # -- execute -----------------------------------------------------------------------------------

    def execute(self, request: wire.ExecuteRequest) -> dict[str, Any]:
        """``POST /v1/execute``; returns the validated response object.

        The HTTP read timeout is the execution timeout plus a margin: the executor kills the
        code at ``timeout_s`` and answers ``status: timeout`` itself. Waiting on a busy executor
        (HTTP 429) stops after ``BUSY_RETRIES`` tries or that same time in ``Retry-After`` delays.
        """
        payload = request.to_json()
        read_timeout = request.timeout_s + 15.0
        waited = 0.0
        for _ in range(BUSY_RETRIES):
            resp = self.http.json_request("POST", "/v1/execute", payload, timeout_s=read_timeout)
            if resp.status != 429:
                break
            try:
                delay = float(resp.headers.get("retry-after", "0.1"))
            except ValueError:
                delay = 0.1
            if not math.isfinite(delay):  # the header is the sandbox's: "nan" must not reach sleep()
                delay = 0.1
            delay = min(max(delay, 0.05), 5.0)
            waited += delay
            if waited > read_timeout:
                raise SandboxConnectionError(f"executor stayed busy (HTTP 429) for {waited - delay:.1f} s")
            self._sleep(delay)
        else:
            raise SandboxConnectionError(f"executor stayed busy (HTTP 429) for {BUSY_RETRIES} tries")
        self._check(resp, "execute")
        return check_execute_response(resp.body, request, self.http.limits, resp.status)

    def answer_query(self, request: wire.ExecuteRequest, execution: str, seq: int, body: bytes,
                     content_type: str, timeout_s: float, elapsed_s: float) -> dict[str, Any]:
        """``POST /v1/executions/{execution}/queries/{seq}`` (SQL by call-back): the answer to
        the query the code waits for; returns the execution's next event, validated.

        The code's clock pauses while it waits for the host, so its ``duration_ms`` is bounded by
        the wall time this client has seen since the execution started (``elapsed_s``), not by
        ``timeout_s`` alone."""
        if not wire.EXECUTION_ID_RE.match(execution):
            raise SandboxProtocolError(f"execute: malformed execution id {execution[:80]!r}")
        resp = self.http.request("POST", f"/v1/executions/{execution}/queries/{int(seq)}", body,
                                 content_type=content_type,
                                 timeout_s=max(timeout_s, 30.0 + len(body) / (8 * 1024 * 1024)))
        self._check(resp, f"answer query {seq}")
        bound = dataclasses.replace(request, timeout_s=max(request.timeout_s, float(math.ceil(elapsed_s))))
        return check_execute_response(resp.body, bound, self.http.limits, resp.status)
