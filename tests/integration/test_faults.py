"""Faults: the API server killed in the middle of a converge (a re-run converges with nothing
lost), and a wrong kubeconfig or a stopped cluster (site.yml fails fast, in cluster_prep, with a
message naming the problem)."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from conftest import CACHE, KUBECONFIG, NAMESPACE, ROOT, playbook, playbook_command, playbook_env

pytestmark = pytest.mark.cluster


def _objects(core: client.CoreV1Api, api_client: client.ApiClient) -> dict[str, bool]:
    """Which of site.yml's objects exist now."""
    rbac = client.RbacAuthorizationV1Api(api_client)
    net = client.NetworkingV1Api(api_client)

    def exists(read) -> bool:
        try:
            read()
            return True
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise

    return {
        "namespace": exists(lambda: core.read_namespace(NAMESPACE)),
        "serviceaccount": exists(lambda: core.read_namespaced_service_account("pandasai-sandbox-sa", NAMESPACE)),
        "role": exists(lambda: rbac.read_namespaced_role("pod-manager", NAMESPACE)),
        "rolebinding": exists(lambda: rbac.read_namespaced_role_binding("pod-manager-binding", NAMESPACE)),
        "networkpolicies": exists(lambda: net.read_namespaced_network_policy("sandbox-default-deny", NAMESPACE)),
        "quota": exists(lambda: core.read_namespaced_resource_quota("sandbox-quota", NAMESPACE)),
        "limitrange": exists(lambda: core.read_namespaced_limit_range("sandbox-limits", NAMESPACE)),
        "template": exists(lambda: core.read_namespaced_config_map("pandasai-sandbox-pod-template", NAMESPACE)),
    }


def _kill_apiserver() -> int:
    pid = int((CACHE / "run" / "kube-apiserver.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    return pid


@pytest.mark.skipif(not (CACHE / "run" / "kube-apiserver.pid").exists(), reason="needs the local provider's API server")
def test_apiserver_killed_mid_converge_then_rerun_converges(
    deployed: str, core: client.CoreV1Api, api_client: client.ApiClient
) -> None:
    assert playbook("playbooks/teardown.yml").rc == 0
    assert not any(_objects(core, api_client).values())
    converge = subprocess.Popen(
        playbook_command("site.yml"), cwd=ROOT, env=playbook_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines = []
    killed = None
    assert converge.stdout is not None
    for line in converge.stdout:
        lines.append(line)
        # Kill once the namespace exists and RBAC is being applied: part of the deployment is in.
        if killed is None and line.startswith("TASK [pandasai.pod_sandbox.rbac : Apply"):
            killed = _kill_apiserver()
    output = "".join(lines)
    assert converge.wait(timeout=600) != 0, f"the converge did not notice the API server's death:\n{output[-3000:]}"
    assert killed is not None, f"the converge never reached the RBAC step:\n{output[-3000:]}"

    rerun = playbook("site.yml")
    assert rerun.rc == 0, rerun.output[-4000:]
    assert "started kube-apiserver" in rerun.output or "kube-apiserver: stopped" in rerun.output, \
        "cluster_prep did not restart the killed API server"
    assert all(_objects(core, api_client).values()), _objects(core, api_client)
    again = playbook("site.yml")
    assert again.rc == 0 and again.changed == 0, again.output[-4000:]


def test_missing_kubeconfig_fails_fast_naming_it() -> None:
    noop = playbook("site.yml", "--tags", "cluster")
    assert noop.rc == 0, noop.output[-3000:]
    missing = "/nonexistent/pandasai-kubeconfig"
    run = playbook("site.yml", "-e", "cluster_prep_provider=existing",
                   "-e", f'{{"pod_sandbox_k8s_auth": {{"kubeconfig": "{missing}"}}}}')
    assert run.rc != 0
    assert "cluster_prep" in run.output and f"The kubeconfig {missing} does not exist" in run.output, run.output[-3000:]
    assert "pandasai.pod_sandbox.image" not in run.output, "later roles ran after the failure"
    print(f"missing kubeconfig failed after {run.seconds:.1f} s; a successful --tags cluster run took {noop.seconds:.1f} s")
    assert run.seconds < noop.seconds * 1.5


def test_stopped_cluster_fails_fast_naming_the_server(tmp_path: Path) -> None:
    """A kubeconfig whose API server does not answer (nothing listens there: a stopped cluster)."""
    kubeconfig = yaml.safe_load(Path(KUBECONFIG).read_text())
    for entry in kubeconfig["clusters"]:
        entry["cluster"]["server"] = "https://127.0.0.1:1"
    stopped = tmp_path / "stopped-cluster.kubeconfig"
    stopped.write_text(yaml.safe_dump(kubeconfig))
    stopped.chmod(0o600)
    noop = playbook("site.yml", "--tags", "cluster")
    run = playbook("site.yml", "-e", "cluster_prep_provider=existing",
                   "-e", f'{{"pod_sandbox_k8s_auth": {{"kubeconfig": "{stopped}"}}}}')
    assert run.rc != 0
    assert "https://127.0.0.1:1" in run.output and "is not reachable within" in run.output, run.output[-3000:]
    assert "pandasai.pod_sandbox.image" not in run.output, "later roles ran after the failure"
    print(f"stopped cluster failed after {run.seconds:.1f} s; a successful --tags cluster run took {noop.seconds:.1f} s")
    assert run.seconds < noop.seconds * 1.5


def test_unknown_context_fails_naming_it() -> None:
    run = playbook("site.yml", "-e", "cluster_prep_provider=existing",
                   "-e", f'{{"pod_sandbox_k8s_auth": {{"kubeconfig": "{KUBECONFIG}", "context": "no-such-context"}}}}')
    assert run.rc != 0
    assert "no usable context no-such-context" in run.output, run.output[-3000:]
