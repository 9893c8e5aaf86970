"""The Bottle WSGI application: routes, authentication, body limits and JSON errors."""

from __future__ import annotations

import json
import logging
import sys
import threading
from dataclasses import dataclass, field
from importlib import metadata, resources
from typing import Any, Callable, Mapping

import bottle

from .. import __version__, wire
from .auth import ClaimResult, TokenStore
from .config import Config, Limits
from .files import Workspace
from .metrics import Metrics
from .runner import Runner, SandboxUnavailable, SlotsBusy
from .sqlcallback import Executions, install_routes
from .transport import Gate, Refusal, Verdict

log = logging.getLogger("pod_sandbox.app")
JSON_TYPE = "application/json"
PUBLIC_PATHS = ("/health", "/ready", "/metrics", "/openapi.json")
#: The body limit of ``POST /v1/claim``, the only route that takes a body before authentication.
CLAIM_BODY_BYTES = 4096


def load_openapi() -> dict[str, Any]:
    """The OpenAPI document shipped as package data."""
    text = resources.files("pod_sandbox.executor").joinpath("openapi.json").read_text("utf-8")
    return json.loads(text)


def package_versions() -> dict[str, str]:
    """Versions of the stack user code runs on (read from metadata, not imported here)."""
    out = {"python": sys.version.split()[0], "executor": __version__}
    for dist in ("pandas", "numpy", "matplotlib", "pyarrow"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "missing"
    return out


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> bottle.HTTPResponse:
    """A JSON HTTPResponse."""
    payload = json.dumps(body, separators=(",", ":"), allow_nan=False)
    hdrs = {"Content-Type": JSON_TYPE, "Cache-Control": "no-store"}
    hdrs.update(headers or {})
    return bottle.HTTPResponse(body=payload, status=status, headers=hdrs)


def error_response(status: int, field_name: str, message: str, headers: dict[str, str] | None = None
                   ) -> bottle.HTTPResponse:
    """The JSON error every 4xx/5xx carries: ``{"error": {"field", "message"}}``."""
    return json_response(status, {"error": {"field": field_name, "message": message}}, headers)


def make_gate(limits: Limits, tokens: TokenStore) -> Gate:
    """The transport's check of a request before its body is read (:mod:`.transport`): each
    route's body limit, and no body at all to an authenticated route without the token."""
    unauthorized = Refusal(401, "Authorization", "missing or invalid bearer token (sent before the body)",
                           (("WWW-Authenticate", "Bearer"),))

    def gate(method: str, path: str, headers: Mapping[str, str]) -> Verdict:
        if method == "POST" and path == "/v1/claim":
            return Verdict(CLAIM_BODY_BYTES)
        if not path.startswith("/v1/"):
            return Verdict(0)
        if not tokens.check(headers.get("AUTHORIZATION")):
            return Verdict(0, refusal=unauthorized)
        if method == "POST" and path == "/v1/execute":
            return Verdict(limits.max_body_bytes, authenticated=True)
        if method == "PUT" and path.startswith("/v1/files/"):
            return Verdict(limits.max_upload_bytes, authenticated=True)
        if method == "POST" and path.startswith("/v1/executions/"):  # a query's answer (sqlcallback.py)
            return Verdict(limits.max_query_bytes, authenticated=True)
        return Verdict(0, authenticated=True)

    return gate


@dataclass
class ServerState:
    """Mutable run state shared by the routes (one instance per server process)."""

    draining: bool = False
    shutdown_requested: threading.Event = field(default_factory=threading.Event)


def create_app(config: Config, runner: Runner, tokens: TokenStore, workspace: Workspace,
               metrics: Metrics, state: ServerState) -> bottle.Bottle:
    """Wire the routes; every dependency is passed in (no module-level state)."""
    app = bottle.Bottle(catchall=True)
    app.config["json.enable"] = False
    limits = config.limits
    openapi_text = json.dumps(load_openapi())
    versions = package_versions()
    executions = Executions(runner, limits)  # SQL by call-back (sqlcallback.py)

    def sweep_workspace() -> None:
        """Drop what an execution left in the data directory beside the uploads."""
        swept = workspace.sweep()
        if swept:
            log.info("removed %d entries the execution left in the data directory", swept)

    def finished(response: dict[str, Any]) -> None:
        """A call-back execution's final response: counted, and its leftovers swept."""
        metrics.observe_execution(response)
        sweep_workspace()

    def on_error(err: bottle.HTTPError) -> str:
        bottle.response.content_type = JSON_TYPE
        if err.status_code >= 500:
            log.error("internal error: %s", err.exception or err.body)
            message = "internal error"
        else:
            message = str(err.body) if isinstance(err.body, str) else err.status_line
        return json.dumps({"error": {"field": "request", "message": message}})

    app.default_error_handler = on_error  # type: ignore[method-assign]

    def authenticated(fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not tokens.check(bottle.request.environ.get("HTTP_AUTHORIZATION")):
                metrics.rejected.labels(reason="unauthorized").inc()
                why = "claim the sandbox first (POST /v1/claim)" if not tokens.claimed else \
                    "missing or invalid bearer token"
                return error_response(401, "Authorization", why, {"WWW-Authenticate": "Bearer"})
            return fn(*args, **kwargs)

        wrapper.__name__ = fn.__name__
        return wrapper

    def read_body(limit: int) -> bytes:
        raw_length = bottle.request.environ.get("CONTENT_LENGTH") or ""
        length: int | None = None
        if raw_length.strip():
            try:
                length = int(raw_length)
            except ValueError:
                raise error_response(400, "Content-Length", "must be an integer") from None
        if length is not None and length > limit:
            raise error_response(413, "body", f"{length} bytes exceeds the limit of {limit}")
        stream = bottle.request.environ["wsgi.input"]
        data = stream.read(limit + 1 if length is None else length)
        if len(data) > limit:
            raise error_response(413, "body", f"exceeds the limit of {limit} bytes")
        return data

    def read_json(limit: int) -> Any:
        # From the WSGI environ (latin-1 text), not bottle's header view, which decodes UTF-8
        # and raises on other bytes: every header the app reads is read this way.
        ctype = (bottle.request.environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
        if ctype != JSON_TYPE:
            raise error_response(415, "Content-Type", f"must be {JSON_TYPE}")
        body = read_body(limit)
        try:
            return json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise error_response(400, "body", "is not UTF-8") from None
        except (json.JSONDecodeError, RecursionError) as exc:
            raise error_response(400, "body", f"is not valid JSON: {exc}") from None
        except ValueError as exc:  # an integer of more digits than int() converts (4,300)
            raise error_response(400, "body", f"has a number out of range: {exc}") from None

    @app.get("/health")
    def health() -> Any:
        if not runner.responsive:
            return json_response(503, {"status": "unavailable"})
        return json_response(200, {"status": "ok"})

    @app.get("/ready")
    def ready() -> Any:
        reasons = []
        if not runner.alive:
            reasons.append("fork-server not running")
        elif not runner.warm.is_set():
            reasons.append("warming up")
        else:
            reasons.extend(runner.problems())
        if state.draining:
            reasons.append("draining")
        if not workspace.writable():
            reasons.append("workspace not writable")
        metrics.ready.set(0 if reasons else 1)
        if reasons:
            return json_response(503, {"ready": False, "reasons": reasons})
        return json_response(200, {"ready": True, "claimed": tokens.claimed, "auth": tokens.auth_enabled})

    @app.get("/metrics")
    def metrics_route() -> Any:
        metrics.inflight.set(runner.inflight)
        return bottle.HTTPResponse(body=metrics.render(), status=200,
                                   headers={"Content-Type": metrics.content_type})

    @app.get("/openapi.json")
    def openapi() -> Any:
        return bottle.HTTPResponse(body=openapi_text, status=200, headers={"Content-Type": JSON_TYPE})

    @app.get("/v1/info")
    @authenticated
    def info() -> Any:
        return json_response(200, {
            "api_version": wire.API_VERSION,
            "versions": versions,
            "limits": limits.to_json(),
            "data_dir": config.data_dir,
            "result_types": list(wire.RESULT_TYPES),
            "statuses": list(wire.STATUSES),
            "dataframe_encodings": list(wire.DATAFRAME_ENCODINGS),
            "features": [wire.SQL_CALLBACK_FEATURE],
        })

    @app.post("/v1/claim")
    def claim() -> Any:
        body = read_json(CLAIM_BODY_BYTES)
        if not isinstance(body, dict) or set(body) != {"token"}:
            return error_response(400, "token", 'body must be {"token": "<32+ URL-safe chars>"}')
        try:
            outcome = tokens.claim(body["token"])
        except wire.WireError as exc:
            return json_response(exc.http_status, exc.to_json())
        if outcome is ClaimResult.CONFLICT:
            return error_response(409, "token", "this sandbox is already claimed or not claimable")
        return json_response(200, {"claimed": True})

    @app.get("/v1/files")
    @authenticated
    def list_files() -> Any:
        return json_response(200, {"files": [f.to_json() for f in workspace.list()]})

    @app.put("/v1/files/<name>")
    @authenticated
    def put_file(name: str) -> Any:
        try:
            wire.validate_file_name(name)
            raw_length = bottle.request.environ.get("CONTENT_LENGTH") or ""
            length = int(raw_length) if raw_length.strip().isdigit() else None
            info_ = workspace.put(name, bottle.request.environ["wsgi.input"], length)
        except wire.WireError as exc:
            return json_response(exc.http_status, exc.to_json())
        metrics.upload_bytes.inc(info_.size)
        return json_response(201, info_.to_json())

    @app.get("/v1/files/<name>")
    @authenticated
    def get_file(name: str) -> Any:
        try:
            opened = workspace.open(name)
        except wire.WireError as exc:
            return json_response(exc.http_status, exc.to_json())
        if opened is None:
            return error_response(404, "name", f"no file named {name!r}")
        fh, size = opened
        return bottle.HTTPResponse(body=fh, status=200, headers={
            "Content-Type": "application/octet-stream", "Content-Length": str(size)})

    @app.delete("/v1/files/<name>")
    @authenticated
    def delete_file(name: str) -> Any:
        try:
            existed = workspace.delete(name)
        except wire.WireError as exc:
            return json_response(exc.http_status, exc.to_json())
        if not existed:
            return error_response(404, "name", f"no file named {name!r}")
        return bottle.HTTPResponse(status=204)

    @app.post("/v1/execute")
    @authenticated
    def execute() -> Any:
        if state.draining:
            return error_response(503, "request", "the executor is shutting down", {"Retry-After": "1"})
        body = read_json(limits.max_body_bytes)
        try:
            request = wire.parse_execute_request(
                body, max_code_bytes=limits.max_code_bytes, max_timeout_s=limits.max_timeout_s,
                default_timeout_s=limits.default_timeout_s, max_output_bytes=limits.max_output_bytes,
                default_query_timeout_s=limits.default_query_timeout_s,
                max_query_timeout_s=limits.max_query_timeout_s)
        except wire.WireError as exc:
            metrics.rejected.labels(reason="invalid").inc()
            return json_response(exc.http_status, exc.to_json())
        try:
            if request.sql_callback:
                response = executions.start(request)
            else:
                try:
                    response = runner.execute(request)
                finally:
                    sweep_workspace()
        except SlotsBusy:
            metrics.rejected.labels(reason="busy").inc()
            return error_response(429, "request", f"all {runner.slots} execution slots are busy",
                                  {"Retry-After": "1"})
        except SandboxUnavailable as exc:
            log.error("execution failed: %s", exc)
            return error_response(503, "request", "the sandbox is unavailable", {"Retry-After": "1"})
        if response["status"] != wire.QUERY_STATUS:
            (finished if request.sql_callback else metrics.observe_execution)(response)
        return json_response(200, response)

    @app.post("/v1/shutdown")
    @authenticated
    def shutdown() -> Any:
        state.draining = True
        state.shutdown_requested.set()
        return json_response(202, {"shutting_down": True})

    install_routes(app, executions, authenticated, json_response, error_response, finished)
    return app
