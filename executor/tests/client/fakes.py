"""Test doubles for the client's unit tests: an executor speaking the wire format, a Kubernetes API.

The fake executor runs the code in-process (no isolation: it is a protocol double, not the
executor) and answers with ``pod_sandbox.wire``, so the client is tested against the same
encoder the real executor uses. The fake Kubernetes API applies JSON patches with the
``jsonpatch`` library under one lock, as the API server applies them atomically.
"""

from __future__ import annotations

import copy
import io
import json
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from pod_sandbox import wire
from pod_sandbox.client.errors import KubernetesAPIError
from pod_sandbox.client.kube import WatchEvent


class MissingDatasetError(LookupError):
    """Same name, message shape and ``query`` field as the executor's (``pod_sandbox.executor.child``)."""

    def __init__(self, query: str) -> None:
        self.query = query
        shown = repr(query) if len(query) <= 500 else f"{query[:200]!r} ... ({len(query)} characters)"
        super().__init__(
            f"no dataset was staged for this query; the client must upload it and pass it in 'datasets': {shown}"
        )


class FakeExecutor:
    """A threaded HTTP/1.1 executor double with keep-alive and Content-Length answers."""

    def __init__(self, claimable: bool = True) -> None:
        self.claimable = claimable
        self.token: str | None = None
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []
        self.executions: list[dict[str, Any]] = []
        self.connections = 0
        self.hooks: dict[str, Callable[[BaseHTTPRequestHandler], bool]] = {}
        self.shutdowns = 0
        #: What /v1/info lists: none, so this double is an executor that stages SQL (the
        #: call-back is tested against the real executor, tests/test_sqlcallback.py).
        self.features: list[str] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with fake.lock:
                    fake.connections += 1

            def log_message(self, *args: Any) -> None:
                return None

            def _body(self) -> bytes:
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _send(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _authorized(self) -> bool:
                if fake.token is None and fake.claimable:
                    return True
                if self.headers.get("Authorization") == f"Bearer {fake.token}":
                    return True
                self._send(401, {"error": {"field": "Authorization", "message": "bad token"}})
                return False

            def _route(self, method: str) -> None:
                with fake.lock:
                    fake.requests.append((method, self.path))
                hook = fake.hooks.get(f"{method} {self.path}")
                if hook is not None and hook(self):
                    return
                body = self._body() if method in ("POST", "PUT") else b""
                if self.path == "/health":
                    return self._send(200, {"status": "ok"})
                if self.path == "/ready":
                    return self._send(200, {"status": "ready"})
                if self.path == "/v1/claim" and method == "POST":
                    if fake.token is not None:
                        return self._send(409, {"error": {"field": "token", "message": "already claimed"}})
                    fake.token = wire.validate_token(json.loads(body)["token"])
                    return self._send(200, {"claimed": True})
                if not self._authorized():
                    return None
                if self.path == "/v1/info" and method == "GET":
                    return self._send(200, {"api_version": wire.API_VERSION, "features": fake.features})
                if self.path == "/v1/shutdown":
                    fake.shutdowns += 1
                    return self._send(202, {"status": "shutting down"})
                if self.path.startswith("/v1/files/"):
                    name = self.path[len("/v1/files/"):]
                    if method == "PUT":
                        fake.files[name] = body
                        return self._send(201, {"name": name, "bytes": len(body)})
                    if method == "GET" and name in fake.files:
                        data = fake.files[name]
                        self.send_response(200)
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        self.wfile.write(data)
                        return None
                    if method == "DELETE":
                        fake.files.pop(name, None)
                        return self._send(200, {})
                    return self._send(404, {"error": {"field": "name", "message": "no such file"}})
                if self.path == "/v1/execute" and method == "POST":
                    payload = json.loads(body)
                    with fake.lock:
                        fake.executions.append(payload)
                    return self._send(200, fake.run(payload))
                return self._send(404, {"error": {"field": "path", "message": "not found"}})

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                self._route("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._route("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._route("PUT")

            def do_DELETE(self) -> None:  # noqa: N802
                self._route("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeExecutor":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Execute like the executor does (result on its own channel, typed)."""
        import contextlib  # noqa: PLC0415

        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
        import numpy as np  # noqa: PLC0415
        import pandas as pd  # noqa: PLC0415

        datasets = payload.get("datasets") or {}

        def execute_sql_query(sql_query: str) -> Any:
            name = datasets.get(sql_query)
            if name is None:
                raise MissingDatasetError(str(sql_query))
            return pd.read_parquet(io.BytesIO(self.files[name]))

        namespace = {"pd": pd, "np": np, "plt": plt, "execute_sql_query": execute_sql_query}
        out = io.StringIO()
        status, error, result = "ok", None, {"type": "none", "value": None}
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(payload["code"], "<string>", "exec"), namespace)  # noqa: S102 - test double
            result = wire.encode_result(namespace.get("result"))
        except TimeoutError as exc:
            status = "timeout"
            error = {"type": "Timeout", "message": str(exc), "traceback": ""}
        except Exception as exc:  # noqa: BLE001
            status = "error"
            error = {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}
            if isinstance(exc, MissingDatasetError):
                error["query"] = exc.query
        return {
            "status": status,
            "result": result if status == "ok" else {"type": "none", "value": None},
            "stdout": out.getvalue(),
            "stderr": "",
            "stdout_truncated": False,
            "stderr_truncated": False,
            "error": error,
            "duration_ms": 1.0,
            "peak_rss_bytes": 0,
            "request_id": payload.get("request_id"),
        }


class FakeKube:
    """The slice of ``KubeApi`` the client uses, over an in-memory pod store."""

    def __init__(self, namespace: str = "ns") -> None:
        self.namespace = namespace
        self.pods: dict[str, dict[str, Any]] = {}
        self.configmaps: dict[str, dict[str, Any]] = {}
        self.events: dict[str, list[dict[str, Any]]] = {}
        self.watch_script: list[list[WatchEvent]] = []
        self.deleted: list[str] = []
        self.patches = 0
        self.created = 0
        self.lock = threading.Lock()
        self._rv = 100
        self.closed = False

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def add_pod(self, pod: dict[str, Any]) -> dict[str, Any]:
        pod = copy.deepcopy(pod)
        pod.setdefault("metadata", {}).setdefault("uid", f"uid-{pod['metadata']['name']}")
        pod["metadata"]["resourceVersion"] = self._next_rv()
        self.pods[pod["metadata"]["name"]] = pod
        return pod

    def get_configmap(self, name: str) -> dict[str, Any]:
        if name not in self.configmaps:
            raise KubernetesAPIError("GET", f"configmaps/{name}", 404, "Not Found")
        return self.configmaps[name]

    def create_pod(self, manifest: dict[str, Any]) -> dict[str, Any]:
        pod = copy.deepcopy(manifest)
        self.created += 1
        name = pod["metadata"].pop("generateName", "pod-") + f"{self.created:05d}"
        pod["metadata"]["name"] = name
        pod["status"] = {"phase": "Pending"}
        return copy.deepcopy(self.add_pod(pod))

    def get_pod(self, name: str) -> dict[str, Any]:
        if name not in self.pods:
            raise KubernetesAPIError("GET", f"pods/{name}", 404, "Not Found")
        return copy.deepcopy(self.pods[name])

    def list_pods(self, label_selector: str | None = None, field_selector: str | None = None) -> dict[str, Any]:
        want = dict(kv.split("=", 1) for kv in label_selector.split(",")) if label_selector else {}
        with self.lock:
            items = [
                copy.deepcopy(p) for p in self.pods.values()
                if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in want.items())
            ]
        return {"items": items, "metadata": {"resourceVersion": str(self._rv)}}

    def patch_pod_json(self, name: str, operations: list[dict[str, Any]]) -> dict[str, Any]:
        import jsonpatch  # noqa: PLC0415 - test dependency (requirements/tools.txt)

        with self.lock:
            self.patches += 1
            if name not in self.pods:
                raise KubernetesAPIError("PATCH", f"pods/{name}", 404, "Not Found")
            try:
                patched = jsonpatch.apply_patch(self.pods[name], operations)
            except (jsonpatch.JsonPatchConflict, jsonpatch.JsonPatchTestFailed) as exc:
                raise KubernetesAPIError("PATCH", f"pods/{name}", 422, "Unprocessable Entity", str(exc)) from exc
            patched["metadata"]["resourceVersion"] = self._next_rv()
            self.pods[name] = patched
            return copy.deepcopy(patched)

    def delete_pod(self, name: str, grace_period_seconds: int = 0, uid: str | None = None) -> bool:
        with self.lock:
            self.deleted.append(name)
            return self.pods.pop(name, None) is not None

    def list_events(self, pod_name: str) -> list[dict[str, Any]]:
        return list(self.events.get(pod_name, []))

    def watch_pods(self, **kwargs: Any) -> Any:
        script = self.watch_script.pop(0) if self.watch_script else []
        for event in script:
            if event.type in ("ADDED", "MODIFIED"):
                self.pods[event.object["metadata"]["name"]] = copy.deepcopy(event.object)
            yield event

    def portforward(self, name: str, port: int) -> Any:
        raise AssertionError("the fake API has no port-forward")

    def close(self) -> None:
        self.closed = True


def pod(name: str, *, phase: str = "Running", ready: bool = True, labels: dict[str, str] | None = None,
        **extra: Any) -> dict[str, Any]:
    """A pod object as the API returns it."""
    obj: dict[str, Any] = {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "labels": dict(labels or {}),
                     "resourceVersion": "1", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "executor"}], "restartPolicy": "Never"},
        "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                   "podIP": "127.0.0.1"},
    }
    for key, value in extra.items():
        section, _, field = key.partition("__")
        obj[section][field] = value
    return obj
