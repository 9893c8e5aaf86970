"""Fixtures for the real-cluster integration tests (faults, switches) on the local cluster:
running playbooks of this checkout and reading the cluster with the Kubernetes Python client."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("POD_SANDBOX_CACHE_DIR", "/var/cache/pandasai-pod-sandbox"))
KUBECONFIG = os.environ.get("KUBECONFIG", str(CACHE / "kubeconfig"))
INVENTORY = os.environ.get("SANDBOX_INVENTORY", str(ROOT / "inventories" / "local"))
# The integration tests deploy into their own namespace, so they never remove the one `make deploy`
# (or another test run) uses on the same cluster.
NAMESPACE = os.environ.get("SANDBOX_IT_NAMESPACE", "pandasai-sandbox-it")
RECAP = re.compile(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: needs the local Kubernetes cluster (scripts/test-cluster.sh)")


@dataclass
class Run:
    """One ansible-playbook run: exit code, output, wall time, and the recap's counters."""

    rc: int
    output: str
    seconds: float

    @property
    def changed(self) -> int:
        found = RECAP.findall(self.output)
        assert found, f"no PLAY RECAP in the output:\n{self.output[-3000:]}"
        return sum(int(row[1]) for row in found)


def playbook_env() -> dict[str, str]:
    return dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")


def playbook_command(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "ansible-playbook"), "-i", INVENTORY,
            "-e", f"pod_sandbox_namespace={NAMESPACE}", *args]


def playbook(*args: str, timeout: float = 900) -> Run:
    """Run ansible-playbook of this checkout with the local inventory, the tests' namespace and `args`."""
    command = playbook_command(*args)
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=playbook_env(), capture_output=True, text=True, timeout=timeout)
    return Run(done.returncode, done.stdout + done.stderr, time.monotonic() - started)


@pytest.fixture(scope="session")
def api_client() -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=KUBECONFIG)
    yield api
    api.close()


@pytest.fixture(scope="session")
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def deployed() -> Iterator[str]:
    """site.yml converged into the tests' namespace; teardown.yml removes it afterwards."""
    run = playbook("site.yml")
    assert run.rc == 0, run.output[-4000:]
    yield NAMESPACE
    playbook("playbooks/teardown.yml")
