"""Shared fixtures of the static stage: the repository, the tool environment, ansible-playbook runs."""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from manifests import Manifest, load_dir

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


def tool_env() -> dict[str, str]:
    """Environment for Ansible runs: this checkout's config and collections, and no way to reach
    a real cluster or Docker engine (a role that called one would fail loudly, not touch it)."""
    env = dict(os.environ)
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}",
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(REPO / ".collections"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        KUBECONFIG="/nonexistent/pod-sandbox-static/kubeconfig",
        K8S_AUTH_KUBECONFIG="/nonexistent/pod-sandbox-static/kubeconfig",
        DOCKER_HOST="unix:///nonexistent/pod-sandbox-static/docker.sock",
    )
    return env


@dataclass
class TaskResult:
    """One task's result on one host, from the ansible.posix.json callback."""

    name: str
    action: str
    failed: bool
    skipped: bool
    msg: str


@dataclass
class PlaybookRun:
    returncode: int
    tasks: list[TaskResult]
    raw: str


def run_playbook_json(playbook: Path, extra_vars: dict, timeout: int = 120) -> PlaybookRun:
    """Run a playbook against localhost with the JSON callback and return every task result."""
    env = tool_env()
    env["ANSIBLE_STDOUT_CALLBACK"] = "ansible.posix.json"
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(playbook), "-e", json.dumps(extra_vars)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )
    tasks: list[TaskResult] = []
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        report = {"plays": []}
    for play in report.get("plays", []):
        for task in play.get("tasks", []):
            for result in task.get("hosts", {}).values():
                tasks.append(TaskResult(
                    name=task["task"]["name"],
                    action=str(result.get("action", "")),
                    failed=bool(result.get("failed")),
                    skipped=bool(result.get("skipped")),
                    msg=str(result.get("msg", "")),
                ))
    return PlaybookRun(proc.returncode, tasks, proc.stdout + proc.stderr)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


# Settings rendered on top of the default inventory: every optional feature switched on, so the
# optional objects are validated and scanned too.
RENDER_VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "all-features": {
        "pod_sandbox_monitoring_enabled": True,
        "monitoring_pod_monitor_enabled": True,
        "pod_sandbox_node_placement_enabled": True,
        "pod_sandbox_nodes": ["sandbox-node-1"],
        "rbac_allow_exec": True,
        "pod_template_image_pull_secrets": [{"name": "registry-credentials"}],
    },
}
def render(render_dir: Path, extra_vars: dict[str, Any]) -> None:
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "playbooks/render.yml",
         "-e", json.dumps({"render_dir": str(render_dir), **extra_vars})],
        cwd=REPO, env=tool_env(), capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, f"render.yml failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"


_RENDERS: dict[str, tuple[Path, list[Manifest]]] = {}


def rendered_variant(name: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Manifest]]:
    """Render one variant once per session."""
    if name not in _RENDERS:
        render_dir = tmp_path_factory.mktemp(f"render-{name}")
        render(render_dir, RENDER_VARIANTS[name])
        found = load_dir(render_dir)
        assert found, f"render.yml wrote no manifests into {render_dir}"
        _RENDERS[name] = (render_dir, found)
    return _RENDERS[name]


@pytest.fixture(scope="session", params=sorted(RENDER_VARIANTS))
def rendered(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Manifest]]:
    return rendered_variant(request.param, tmp_path_factory)


