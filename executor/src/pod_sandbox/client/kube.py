"""A thin Kubernetes REST layer on the official client's auth: pods, events, watch, port-forward.

Objects travel as plain dicts (the API's own JSON), so pod templates with any field the cluster
knows survive untouched, and no model class of a particular client release is involved.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from typing import Any, Iterator
from urllib.parse import quote

from .errors import KubernetesAPIError, SandboxConnectionError

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def running_in_cluster() -> bool:
    """True when this process runs in a pod with a mounted service account."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.isfile(
        os.path.join(SERVICE_ACCOUNT_DIR, "token")
    )


def load_configuration(kubeconfig: str | None = None, context: str | None = None) -> Any:
    """A fresh ``kubernetes.client.Configuration`` (never the process-wide default).

    Order: an explicit ``kubeconfig`` path; else the in-cluster service account when running in
    a pod; else ``$KUBECONFIG`` / ``~/.kube/config``.
    """
    from kubernetes import client, config  # noqa: PLC0415 - optional dependency

    cfg = client.Configuration()
    if kubeconfig is None and context is None and running_in_cluster():
        config.load_incluster_config(client_configuration=cfg)
        return cfg
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
    try:
        config.load_kube_config(
            config_file=path, context=context, client_configuration=cfg, persist_config=False
        )
    except Exception as exc:  # noqa: BLE001 - the loader raises many kinds
        raise SandboxConnectionError(
            f"cannot load kubeconfig {path or '~/.kube/config'}"
            f"{' context ' + context if context else ''}: {exc}"
        ) from exc
    return cfg


@dataclass(frozen=True)
class WatchEvent:
    """One event of a watch stream: ``type`` is ADDED, MODIFIED, DELETED, BOOKMARK or ERROR."""

    type: str
    object: dict[str, Any]


class KubeApi:
    """Pods, events, ConfigMaps, JSON patches, watches and port-forwards in one namespace."""

    def __init__(self, configuration: Any, namespace: str) -> None:
        from kubernetes import client  # noqa: PLC0415 - optional dependency

        self.namespace = namespace
        self.configuration = configuration
        self._api_client = client.ApiClient(configuration)
        self._core = client.CoreV1Api(self._api_client)
        # kubernetes.stream swaps ApiClient.call_api while it opens a websocket: one at a time.
        self._stream_lock = threading.Lock()

    @classmethod
    def from_kubeconfig(
        cls, namespace: str, kubeconfig: str | None = None, context: str | None = None
    ) -> "KubeApi":
        """Build one from a kubeconfig (or the in-cluster service account)."""
        return cls(load_configuration(kubeconfig, context), namespace)

    def close(self) -> None:
        """Release the HTTP connection pool."""
        try:
            self._api_client.close()
        except Exception:  # noqa: BLE001 - best effort at shutdown
            pass

    # -- raw requests ---------------------------------------------------------------------------

    def _path(self, kind: str, name: str | None = None, sub: str | None = None) -> str:
        ns = quote(self.namespace, safe="")
        path = f"/api/v1/namespaces/{ns}/{kind}"
        if name is not None:
            path += "/" + quote(name, safe="")
        if sub is not None:
            path += "/" + sub
        return path

    def _request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | tuple[float, float] | None = 30.0,
        stream: bool = False,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        clean_query = [(k, v) for k, v in (query or {}).items() if v is not None]
        method, url, headers, body, _ = self._api_client.param_serialize(
            method=method,
            resource_path=path,
            query_params=clean_query or None,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            resp = self._api_client.rest_client.request(
                method, url, headers=headers, body=body, _request_timeout=timeout
            )
        except Exception as exc:  # noqa: BLE001 - urllib3 / ssl errors
            raise SandboxConnectionError(
                f"Kubernetes API {method} {path} unreachable at {self.configuration.host}: {exc}"
            ) from exc
        raw = resp.response
        if stream and 200 <= resp.status < 300:
            return raw
        data = raw.data if not stream else raw.read()
        raw.release_conn()
        if not 200 <= resp.status < 300:
            raise KubernetesAPIError(
                method, path, resp.status, resp.reason or "", data.decode("utf-8", "replace")
            )
        return json.loads(data) if data else {}

    # -- objects ---------------------------------------------------------------------------------

    def get_configmap(self, name: str) -> dict[str, Any]:
        """GET a ConfigMap of this namespace."""
        return self._request("GET", self._path("configmaps", name))

    def create_pod(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """POST a Pod; returns the created object (with its generated name and resourceVersion)."""
        return self._request("POST", self._path("pods"), body=manifest)

    def get_pod(self, name: str) -> dict[str, Any]:
        """GET one pod."""
        return self._request("GET", self._path("pods", name))

    def list_pods(
        self, label_selector: str | None = None, field_selector: str | None = None
    ) -> dict[str, Any]:
        """LIST pods (the PodList, with ``metadata.resourceVersion`` for a following watch)."""
        return self._request(
            "GET",
            self._path("pods"),
            query={"labelSelector": label_selector, "fieldSelector": field_selector},
        )

    def patch_pod_json(self, name: str, operations: list[dict[str, Any]]) -> dict[str, Any]:
        """Apply an RFC 6902 JSON patch atomically (all operations, including ``test``, or none)."""
        return self._request(
            "PATCH",
            self._path("pods", name),
            body=operations,
            content_type="application/json-patch+json",
        )

    def delete_pod(
        self, name: str, grace_period_seconds: int = 0, uid: str | None = None
    ) -> bool:
        """DELETE a pod; False when it was already gone. ``uid`` guards against a same-name pod."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": grace_period_seconds,
            "propagationPolicy": "Background",
        }
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self._request("DELETE", self._path("pods", name), body=body)
        except KubernetesAPIError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    def list_events(self, pod_name: str) -> list[dict[str, Any]]:
        """Events about one pod, oldest first."""
        selector = f"involvedObject.kind=Pod,involvedObject.name={pod_name}"
        items = self._request("GET", self._path("events"), query={"fieldSelector": selector})
        events = items.get("items", [])
        events.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return events

    # -- watch ------------------------------------------------------------------------------------

    def watch_pods(
        self,
        *,
        resource_version: str | None,
        timeout_s: float,
        field_selector: str | None = None,
        label_selector: str | None = None,
    ) -> Iterator[WatchEvent]:
        """Stream pod events after ``resource_version`` until the server ends the watch.

        The server closes the stream after ``timeoutSeconds``; the socket read timeout is a
        little longer so a silent connection cannot hang the caller.
        """
        server_timeout = max(1, int(timeout_s + 0.999))
        raw = self._request(
            "GET",
            self._path("pods"),
            query={
                "watch": "true",
                "resourceVersion": resource_version,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": server_timeout,
                "fieldSelector": field_selector,
                "labelSelector": label_selector,
            },
            timeout=(10.0, server_timeout + 5.0),
            stream=True,
        )
        try:
            buf = b""
            for chunk in raw.stream(65536, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        event = json.loads(line)
                        yield WatchEvent(event.get("type", ""), event.get("object") or {})
            if buf.strip():
                event = json.loads(buf)
                yield WatchEvent(event.get("type", ""), event.get("object") or {})
        except Exception as exc:  # noqa: BLE001 - urllib3 read errors end the watch
            if isinstance(exc, (GeneratorExit, json.JSONDecodeError)):
                raise
            raise SandboxConnectionError(f"watch on pods in {self.namespace} broke: {exc}") from exc
        finally:
            raw.release_conn()

    # -- port-forward -----------------------------------------------------------------------------

    def portforward(self, name: str, port: int) -> Any:
        """Open a port-forward (one websocket) to ``port`` of pod ``name``; see ``PortForward``."""
        from kubernetes.stream import portforward  # noqa: PLC0415 - optional dependency

        try:
            with self._stream_lock:
                return portforward(
                    self._core.connect_get_namespaced_pod_portforward,
                    name,
                    self.namespace,
                    ports=str(port),
                )
        except Exception as exc:  # noqa: BLE001 - ApiException or websocket errors
            raise SandboxConnectionError(
                f"port-forward to pod {self.namespace}/{name}:{port} failed: {exc}"
            ) from exc
