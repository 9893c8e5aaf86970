"""Shared fixtures of the static stage: the repository, the tool environment, ansible-playbook runs."""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

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
