"""The sandbox pod template: load it (ConfigMap, file or dict) and stamp one session's pod from it."""

from __future__ import annotations

import copy
import os
import re
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Mapping

from .errors import KubernetesAPIError, PodTemplateError

TEMPLATE_CONFIGMAP = "pandasai-sandbox-pod-template"
TEMPLATE_KEY = "pod.yaml"
DEFAULT_GENERATE_NAME = "python-sandbox-"
DEFAULT_API_PORT = 8080
API_PORT_NAME = "api"

APP_LABEL = "app"
APP_VALUE = "python-sandbox"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "pandasai-pod-sandbox"
SESSION_LABEL = "pandasai.io/session"
POOL_LABEL = "pandasai.io/pool"
POOL_WARM = "warm"
POOL_CLAIMED = "claimed"
OWNER_LABEL = "pandasai.io/owner"
OWNER_HOST_ANNOTATION = "pandasai.io/owner-host"
OWNER_PID_ANNOTATION = "pandasai.io/owner-pid"
CLAIMED_AT_ANNOTATION = "pandasai.io/claimed-at"

_LABEL_VALUE_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def label_value(text: str) -> str:
    """``text`` made into a valid label value (<= 63 chars, alphanumeric at both ends)."""
    value = _LABEL_VALUE_BAD.sub("-", text)[:63]
    return value.strip("-._") or "unknown"


def now_rfc3339() -> str:
    """The current UTC time as Kubernetes writes timestamps."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def json_pointer(key: str) -> str:
    """One RFC 6901 path segment (``/`` and ``~`` escaped), for label keys in JSON patches."""
    return key.replace("~", "~0").replace("/", "~1")


def parse_manifest(text: str, source: str) -> dict[str, Any]:
    """Parse a YAML (or JSON) Pod manifest and check it is one Pod; ``source`` names it in errors."""
    import yaml  # noqa: PLC0415 - a dependency of the kubernetes client

    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise PodTemplateError(f"pod template {source} is not valid YAML: {exc}") from exc
    if len(docs) != 1:
        raise PodTemplateError(f"pod template {source} must hold exactly one document, has {len(docs)}")
    return check_manifest(docs[0], source)


def check_manifest(manifest: Any, source: str) -> dict[str, Any]:
    """Check that ``manifest`` is a Pod with at least one container; return it."""
    if not isinstance(manifest, Mapping):
        raise PodTemplateError(f"pod template {source} must be a mapping, got {type(manifest).__name__}")
    if manifest.get("kind", "Pod") != "Pod":
        raise PodTemplateError(f"pod template {source} has kind {manifest.get('kind')!r}, expected Pod")
    spec = manifest.get("spec")
    if not isinstance(spec, Mapping) or not spec.get("containers"):
        raise PodTemplateError(f"pod template {source} has no spec.containers")
    return dict(manifest)


def load_template(
    source: str | os.PathLike[str] | Mapping[str, Any] | None,
    kube: Any,
    configmap: str = TEMPLATE_CONFIGMAP,
    key: str = TEMPLATE_KEY,
) -> dict[str, Any]:
    """The Pod manifest from a dict, a file path, or (``None``) the namespace's ConfigMap."""
    if isinstance(source, Mapping):
        return check_manifest(copy.deepcopy(dict(source)), "(dict)")
    if source is not None:
        path = os.fspath(source)
        try:
            with open(path, encoding="utf-8") as fh:
                return parse_manifest(fh.read(), path)
        except OSError as exc:
            raise PodTemplateError(f"cannot read pod template file {path}: {exc}") from exc
    where = f"ConfigMap {kube.namespace}/{configmap}"
    try:
        cm = kube.get_configmap(configmap)
    except KubernetesAPIError as exc:
        if exc.status == 404:
            raise PodTemplateError(
                f"{where} not found: deploy the collection's pod_template role (tag 'template') "
                "or pass pod_template= a manifest path or dict"
            ) from exc
        if exc.status == 403:
            raise PodTemplateError(
                f"{where} is not readable by this identity (RBAC role pod-manager grants "
                f"configmaps get on it): {exc}"
            ) from exc
        raise
    text = (cm.get("data") or {}).get(key)
    if not text:
        raise PodTemplateError(f"{where} has no key {key!r}")
    return parse_manifest(text, f"{where} key {key}")


@dataclass(frozen=True)
class Owner:
    """Who started a session: written on the pod so leaks can be traced and reaped."""

    host: str
    pid: int

    @classmethod
    def current(cls) -> "Owner":
        """The owner describing this process."""
        return cls(host=socket.gethostname(), pid=os.getpid())


def api_port(manifest: Mapping[str, Any]) -> int:
    """The executor's port: the container port named ``api``, else the first one, else 8080."""
    first: int | None = None
    for container in manifest.get("spec", {}).get("containers", []):
        for port in container.get("ports") or []:
            number = port.get("containerPort")
            if port.get("name") == API_PORT_NAME and isinstance(number, int):
                return number
            if first is None and isinstance(number, int):
                first = number
    return first or DEFAULT_API_PORT


def session_pod(
    template: Mapping[str, Any], namespace: str, session_id: str, owner: Owner
) -> dict[str, Any]:
    """A Pod manifest for one cold session: the template plus labels naming the session.

    Nothing secret is added: the session token is delivered after start with ``POST /v1/claim``.
    """
    pod = copy.deepcopy(dict(template))
    pod["apiVersion"] = "v1"
    pod["kind"] = "Pod"
    meta = dict(pod.get("metadata") or {})
    for key in ("name", "uid", "resourceVersion", "creationTimestamp", "ownerReferences"):
        meta.pop(key, None)
    meta["namespace"] = namespace
    meta["generateName"] = meta.get("generateName") or DEFAULT_GENERATE_NAME
    labels = dict(meta.get("labels") or {})
    labels.pop(POOL_LABEL, None)
    labels.setdefault(APP_LABEL, APP_VALUE)
    labels[MANAGED_BY_LABEL] = MANAGED_BY_VALUE
    labels[SESSION_LABEL] = session_id
    labels[OWNER_LABEL] = label_value(owner.host)
    meta["labels"] = labels
    annotations = dict(meta.get("annotations") or {})
    annotations[OWNER_HOST_ANNOTATION] = owner.host
    annotations[OWNER_PID_ANNOTATION] = str(owner.pid)
    annotations[CLAIMED_AT_ANNOTATION] = now_rfc3339()
    meta["annotations"] = annotations
    pod["metadata"] = meta
    pod.pop("status", None)
    spec = dict(pod["spec"])
    spec.setdefault("restartPolicy", "Never")
    pod["spec"] = spec
    return pod
