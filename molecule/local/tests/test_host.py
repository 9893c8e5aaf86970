"""Host-side facts of the local cluster (provider `local` only), checked with testinfra: every
listener and connection of its processes stays on 127.0.0.1 or the pod bridge, kubelet never
asks the EC2 metadata service, pods have no route out, and the executor image is in the engine
kubelet uses."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from kubernetes import client

CACHE = "/var/cache/pandasai-pod-sandbox"
PROCESSES = ("dockerd", "containerd", "etcd", "kube-apiserver", "kube-controller", "kube-scheduler", "kubelet")


@pytest.fixture(scope="module", autouse=True)
def local_only(inventory_vars: dict[str, Any]) -> None:
    if inventory_vars.get("cluster_prep_provider") != "local":
        pytest.skip("host checks apply to the local provider only")


def _bridge(inventory_vars: dict[str, Any]) -> ipaddress.IPv4Network:
    return ipaddress.ip_network(inventory_vars.get("cluster_prep_local_docker_bip", "172.30.99.1/24"), strict=False)


def _endpoints(host: Any, state: str) -> list[tuple[str, str, str]]:
    """(local address, peer address, process) of the cluster processes' TCP sockets in `state`."""
    out = host.check_output(f"ss -Htnp state {state}")
    rows = []
    for line in out.splitlines():
        fields = line.split()
        process = fields[-1] if fields[-1].startswith("users:") else ""
        if any(f'"{name}' in process for name in PROCESSES):
            rows.append((fields[-3], fields[-2], process))
    return rows


def _address(endpoint: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(endpoint.rsplit(":", 1)[0].strip("[]").split("%")[0])


def test_listeners_on_loopback_only(host: Any, inventory_vars: dict[str, Any]) -> None:
    listeners = _endpoints(host, "listening")
    assert listeners, "no listening socket of the cluster processes found"
    bad = [row for row in listeners if not _address(row[0]).is_loopback]
    assert not bad, bad


def test_connections_stay_on_this_host(host: Any, inventory_vars: dict[str, Any]) -> None:
    bridge = _bridge(inventory_vars)
    bad = [row for row in _endpoints(host, "established")
           if not all(_address(end).is_loopback or _address(end) in bridge for end in row[:2])]
    assert not bad, bad


def test_kubelet_never_asks_the_metadata_service(host: Any) -> None:
    pid = host.file(f"{CACHE}/run/kubelet.pid").content_string.strip()
    environ = host.file(f"/proc/{pid}/environ").content_string.split("\0")
    assert "AWS_EC2_METADATA_DISABLED=true" in environ


def test_pods_have_no_route_out(host: Any) -> None:
    assert host.sysctl("net.ipv4.ip_forward") == 0
    args = host.file(f"/proc/{host.file(CACHE + '/run/dockerd.pid').content_string.strip()}/cmdline").content_string
    for flag in ("--iptables=false", "--ip-masq=false", "--ip-forward=false"):
        assert flag in args.split("\0")


def test_docker_runs_containers_through_the_runc_wrapper(host: Any) -> None:
    assert host.check_output("docker info --format '{{.DefaultRuntime}}'") == "pandasai-runc"


def test_executor_image_is_in_the_engine(host: Any, live_template: client.V1ConfigMap) -> None:
    image = (live_template.metadata.annotations or {})["pandasai.io/image"]
    assert not image.endswith(":latest")
    assert host.run(f"docker image inspect {image}").rc == 0
