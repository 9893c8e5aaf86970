"""The executor's answers, checked before use: its OpenAPI schema with the client's limits (jsonschema).

The sandbox is untrusted, so an execute response is parsed with :func:`pod_sandbox.wire.loads`
(size, scalars, digits and nesting bounded before and while parsing), then validated against the
``ExecuteResponse`` schema of the executor's own ``openapi.json`` with the ranges of
:class:`~pod_sandbox.limits.AnswerLimits` and of the request laid over it (``duration_ms``,
``peak_rss_bytes``, output streams, error texts), then by :func:`pod_sandbox.wire.validate_execute_response`
for what a schema does not say (the result's shape, an error for a failed status). Anything else
is :class:`~.errors.SandboxAnswerRefused`, naming the field and the limit.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from .. import wire
from ..limits import AnswerLimits, LimitExceeded
from .errors import SandboxAnswerRefused


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0 schema objects as JSON Schema: ``nullable: true`` becomes a ``null`` type."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _json_schema(v) for k, v in node.items() if k != "nullable"}
    if node.get("nullable") is True and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


@functools.lru_cache(maxsize=1)
def _components() -> dict[str, Any]:
    text = resources.files("pod_sandbox").joinpath("executor/openapi.json").read_text(encoding="utf-8")
    return _json_schema(json.loads(text)["components"])


@functools.lru_cache(maxsize=32)
def response_validator(limits: AnswerLimits, timeout_s: float, max_output_bytes: int) -> Draft202012Validator:
    """The ``ExecuteResponse`` schema with the ranges an answer to such a request must keep."""
    text = {"type": "string", "maxLength": limits.max_error_chars}
    bounds = {
        "properties": {
            "duration_ms": {"minimum": 0, "maximum": timeout_s * 1000 + limits.duration_grace_ms},
            "peak_rss_bytes": {"minimum": 0, "maximum": limits.max_peak_rss_bytes},
            "stdout": {"maxLength": max_output_bytes},
            "stderr": {"maxLength": max_output_bytes},
            "request_id": {"maxLength": wire.REQUEST_ID_MAX},
            "error": {"properties": {k: text for k in ("type", "message", "traceback", "query")}},
        },
    }
    streams = {"properties": {"stdout": {"maxLength": max_output_bytes}, "stderr": {"maxLength": max_output_bytes}}}
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        # With SQL by call-back an answer may be a QueryEvent: the code waits for a query's answer.
        "if": {"properties": {"status": {"const": wire.QUERY_STATUS}}, "required": ["status"]},
        "then": {"allOf": [{"$ref": "#/components/schemas/QueryEvent"}, streams]},
        "else": {"allOf": [{"$ref": "#/components/schemas/ExecuteResponse"}, bounds]},
        "components": _components(),
    }
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


_LIMIT_OF = {"duration_ms": "duration_grace_ms", "peak_rss_bytes": "max_peak_rss_bytes"}


def check_execute_response(body: bytes, request: wire.ExecuteRequest, limits: AnswerLimits,
                           status: int | None = None) -> dict[str, Any]:
    """Parse and validate an execute response body; :class:`SandboxAnswerRefused` when it breaks anything."""
    try:
        obj = wire.loads(body, limits)
    except LimitExceeded as exc:
        raise SandboxAnswerRefused(f"execute: answer refused: {exc}", exc.field, exc.limit, status) from None
    except wire.WireError as exc:
        raise SandboxAnswerRefused(f"execute: malformed response: {exc}", exc.field, "", status) from None
    error = best_match(response_validator(limits, request.timeout_s, request.max_output_bytes).iter_errors(obj))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "response"
        top = str(error.absolute_path[0]) if error.absolute_path else ""
        limit = _LIMIT_OF.get(top, "") if error.validator == "maximum" else ""
        if error.validator == "maxLength" and top == "error":
            limit = "max_error_chars"
        shown = error.message if len(error.message) <= 300 else error.message[:300] + "..."
        what = "answer refused" if error.validator in ("maximum", "minimum", "maxLength") else "malformed response"
        raise SandboxAnswerRefused(f"execute: {what}: {where}: {shown}"
                                   + (f" (AnswerLimits.{limit})" if limit else ""), where, limit, status)
    try:
        return wire.validate_execute_response(obj, limits, request)
    except LimitExceeded as exc:
        raise SandboxAnswerRefused(f"execute: answer refused: {exc}", exc.field, exc.limit, status) from None
    except wire.WireError as exc:
        raise SandboxAnswerRefused(f"execute: malformed response: {exc}", exc.field, "", status) from None
