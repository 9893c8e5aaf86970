"""Fixtures for the cluster tests: the inventory's settings, the manifests render.yml makes from
them, and Kubernetes API clients. Run by Molecule's testinfra verifier (scenarios local and
default) or directly: `pytest molecule/local/tests` with KUBECONFIG and SANDBOX_INVENTORY set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_KUBECONFIG = "/var/cache/pandasai-pod-sandbox/kubeconfig"


def inventory_path() -> Path:
    """The inventory the scenario converged with: Molecule's, else SANDBOX_INVENTORY, else local."""
    molecule_inventory = os.environ.get("MOLECULE_INVENTORY_FILE")
    if molecule_inventory:
        return Path(molecule_inventory).parent
    return Path(os.environ.get("SANDBOX_INVENTORY", ROOT / "inventories" / "local"))


def ansible_bin(name: str) -> str:
    """An Ansible executable next to this Python (the project venv)."""
    return str(Path(sys.executable).parent / name)


@pytest.fixture(scope="session")
def inventory_vars() -> dict[str, Any]:
    """Plain (untemplated) variables of host localhost in the inventory."""
    out = subprocess.run(
        [ansible_bin("ansible-inventory"), "-i", str(inventory_path()), "--host", "localhost"],
        check=True, capture_output=True, text=True, cwd=ROOT,
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="session")
def namespace(inventory_vars: dict[str, Any]) -> str:
    return str(inventory_vars.get("pod_sandbox_namespace", "pandasai-sandbox"))


@pytest.fixture(scope="session")
def api_client() -> Iterator[client.ApiClient]:
    kubeconfig = os.environ.get("KUBECONFIG", DEFAULT_KUBECONFIG)
    api = config.new_client_from_config(config_file=kubeconfig)
    yield api
    api.close()


@pytest.fixture(scope="session")
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def live_template(core: client.CoreV1Api, namespace: str) -> client.V1ConfigMap:
    """The published pod template ConfigMap (read once)."""
    return core.read_namespaced_config_map("pandasai-sandbox-pod-template", namespace)


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory, live_template: client.V1ConfigMap) -> dict[str, list[dict[str, Any]]]:
    """render.yml's manifests for the same inventory and the image the cluster runs, by file stem."""
    out_dir = tmp_path_factory.mktemp("rendered")
    image = (live_template.metadata.annotations or {})["pandasai.io/image"]
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"))
    subprocess.run(
        [ansible_bin("ansible-playbook"), "-i", str(inventory_path()), str(ROOT / "playbooks" / "render.yml"),
         "-e", f"render_dir={out_dir}", "-e", f"pod_sandbox_image_ref={image}"],
        check=True, capture_output=True, text=True, cwd=ROOT, env=env,
    )
    docs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(out_dir.glob("*.yaml")):
        docs[path.stem] = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert docs, f"render.yml wrote no manifests into {out_dir}"
    return docs
