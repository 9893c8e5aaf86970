"""Fixtures for the client tests: a fake executor, a real local executor, the real cluster."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakes import FakeExecutor  # noqa: E402

CACHE = Path("/var/cache/pandasai-pod-sandbox")


@pytest.fixture
def fake_executor() -> Iterator[FakeExecutor]:
    """A protocol double of the executor on a loopback port."""
    with FakeExecutor() as fake:
        yield fake


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def executor_command() -> list[str] | None:
    """How to start the real executor here, or None when it is not installed."""
    exe = shutil.which("pod-sandbox-executor") or str(Path(sys.executable).parent / "pod-sandbox-executor")
    if os.path.exists(exe):
        return [exe]
    try:
        import pod_sandbox.executor.cli  # noqa: F401, PLC0415
    except ImportError:
        return None
    return [sys.executable, "-m", "pod_sandbox.executor"]


@pytest.fixture(scope="module")
def local_executor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``pod-sandbox-executor --claimable`` on 127.0.0.1, shared by a module's tests."""
    yield from _run_executor(tmp_path_factory.mktemp("executor"))


@pytest.fixture
def fresh_local_executor(tmp_path: Path) -> Iterator[str]:
    """A real executor of one's own (not yet claimed)."""
    yield from _run_executor(tmp_path)


def _run_executor(tmp_path: Path) -> Iterator[str]:
    cmd = executor_command()
    if cmd is None:
        pytest.skip("pod-sandbox-executor is not installed (executor server extra missing)")
    port = _free_port()
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    proc = subprocess.Popen(
        cmd + ["--claimable", "--host", "127.0.0.1", "--port", str(port),
               "--workspace", str(workspace), "--scratch-root", str(tmp_path / "scratch")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                pytest.fail(f"executor exited with {proc.returncode}:\n{out[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                    s.sendall(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if s.recv(64).startswith(b"HTTP/1.1 200"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("executor not ready within 60 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


# -- the real cluster ---------------------------------------------------------------------------------

def cluster_kubeconfig() -> str:
    """The local cluster's kubeconfig (POD_SANDBOX_KUBECONFIG overrides)."""
    return os.environ.get("POD_SANDBOX_KUBECONFIG", str(CACHE / "kubeconfig"))


def cluster_namespace() -> str:
    """The deployed sandbox namespace (POD_SANDBOX_NAMESPACE overrides)."""
    return os.environ.get("POD_SANDBOX_NAMESPACE", "pandasai-sandbox")


@pytest.fixture(scope="session")
def kubeconfig_path() -> str:
    """The local cluster's kubeconfig as a fixture (tests never import a conftest by module name:
    every conftest.py of a rootdir without packages is the module ``conftest``, the last loaded wins)."""
    return cluster_kubeconfig()


@pytest.fixture(scope="session")
def admin_kube():
    """A KubeApi with the kubeconfig's (admin) identity; skips when no cluster is reachable."""
    from pod_sandbox.client.errors import KubernetesAPIError, SandboxError  # noqa: PLC0415
    from pod_sandbox.client.kube import KubeApi  # noqa: PLC0415

    path = cluster_kubeconfig()
    if not os.path.isfile(path):
        pytest.skip(f"no cluster: kubeconfig {path} does not exist (start the local cluster: make deploy)")
    try:
        kube = KubeApi.from_kubeconfig(cluster_namespace(), path)
        kube.get_configmap("pandasai-sandbox-pod-template")
    except KubernetesAPIError as exc:
        pytest.skip(f"sandbox not deployed in namespace {cluster_namespace()}: {exc}")
    except SandboxError as exc:
        pytest.skip(f"no cluster reachable with {path}: {exc}")
    yield kube
    kube.close()


@pytest.fixture(scope="session")
def client_config(admin_kube):
    """Configuration of the client's own identity (ServiceAccount pandasai-sandbox-sa, Role
    pod-manager), so the tests prove the RBAC grants are enough; the admin identity when the
    ServiceAccount has no token Secret (Kubernetes >= 1.24 does not create one)."""
    import base64  # noqa: PLC0415

    from kubernetes import client  # noqa: PLC0415

    core = client.CoreV1Api(client.ApiClient(admin_kube.configuration))
    secrets = core.list_namespaced_secret(admin_kube.namespace, field_selector="type=kubernetes.io/service-account-token")
    for secret in secrets.items:
        annotations = secret.metadata.annotations or {}
        if annotations.get("kubernetes.io/service-account.name") == "pandasai-sandbox-sa":
            cfg = client.Configuration()
            cfg.host = admin_kube.configuration.host
            cfg.ssl_ca_cert = admin_kube.configuration.ssl_ca_cert
            cfg.verify_ssl = admin_kube.configuration.verify_ssl
            cfg.api_key = {"BearerToken": base64.b64decode(secret.data["token"]).decode()}
            cfg.api_key_prefix = {"BearerToken": "Bearer"}
            return cfg
    return admin_kube.configuration


@pytest.fixture(scope="session")
def session_ids():
    """Every session id the cluster tests started; checked for leaks at the end."""
    return set()


@pytest.fixture
def make_sandbox(admin_kube, client_config, session_ids):
    """Build KubernetesSandbox objects on the cluster with the client identity; stops them after."""
    from pod_sandbox.client import KubernetesSandbox  # noqa: PLC0415
    from pod_sandbox.client.kube import KubeApi  # noqa: PLC0415

    made = []

    def factory(**kw):
        kw.setdefault("warm_pool", False)
        kw.setdefault("connection", "port-forward")
        box = KubernetesSandbox(admin_kube.namespace, kube=KubeApi(client_config, admin_kube.namespace), **kw)
        made.append(box)
        original_start = box.start

        def start():
            original_start()
            if box.session_id:
                session_ids.add(box.session_id)

        box.start = start
        return box

    yield factory
    for box in made:
        box.stop()
