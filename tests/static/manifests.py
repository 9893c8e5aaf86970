"""Load rendered Kubernetes manifests: every YAML document under a directory, plus the Pod
manifests embedded in ConfigMaps (the pod template is published as ConfigMap key `pod.yaml`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Manifest:
    source: str  # file (relative to the render dir) or "<file>#configmap/<name>/<key>"
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name", ""))

    def __str__(self) -> str:
        return f"{self.kind}/{self.name} ({self.source})"


def _documents(path: Path) -> list[dict[str, Any]]:
    docs = []
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: a YAML document is not a mapping")
        if doc.get("kind") == "List":
            docs.extend(doc.get("items") or [])
        else:
            docs.append(doc)
    return docs


# Rendered files that are no Kubernetes objects: a Prometheus configuration and its rules
# (checked by promtool in test_prometheus.py).
NOT_MANIFESTS = ("prometheus",)


def load_dir(render_dir: Path) -> list[Manifest]:
    found: list[Manifest] = []
    for path in sorted(render_dir.rglob("*")):
        if path.suffix not in (".yml", ".yaml") or not path.is_file():
            continue
        rel = str(path.relative_to(render_dir))
        if rel.split("/", 1)[0] in NOT_MANIFESTS:
            continue
        for doc in _documents(path):
            found.append(Manifest(rel, doc))
            if doc.get("kind") == "ConfigMap":
                found.extend(_embedded(rel, doc))
    return found


def _embedded(rel: str, configmap: dict[str, Any]) -> list[Manifest]:
    """Kubernetes objects stored as YAML values of a ConfigMap (e.g. the pod template)."""
    out = []
    name = (configmap.get("metadata") or {}).get("name", "")
    for key, value in (configmap.get("data") or {}).items():
        if not key.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(value):
            if isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc:
                out.append(Manifest(f"{rel}#configmap/{name}/{key}", doc))
    return out
