"""Unit tests of cluster_prep's kube-sd-adapter (files/kube-sd-adapter): http_sd targets labelled
as kubernetes_sd labels them, kube-state-metrics series of one namespace, the HTTP routes, and
the loopback-only listener. The Kubernetes API is faked with the client's own model objects."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import io
import json
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

SOURCE = Path(__file__).resolve().parents[3] / "roles" / "cluster_prep" / "files" / "kube-sd-adapter"


def load() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("kube_sd_adapter", str(SOURCE))
    spec = importlib.util.spec_from_loader("kube_sd_adapter", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


adapter = load()
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def pod(name: str, ip: str | None = "172.30.99.7", phase: str = "Running", ready: str = "True",
        labels: dict[str, str] | None = None, deadline: int | None = 3600) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, namespace="ns", uid=f"uid-{name}", creation_timestamp=T0,
                                     labels=labels if labels is not None else {"app": "python-sandbox", "pandasai.io/pool": "warm"}),
        spec=client.V1PodSpec(node_name="localhost", active_deadline_seconds=deadline, containers=[client.V1Container(
            name="executor", image="img:1", ports=[client.V1ContainerPort(name="api", container_port=8080)],
            resources=client.V1ResourceRequirements(limits={"cpu": "500m", "memory": "512Mi"}, requests={"cpu": "100m"}))]),
        status=client.V1PodStatus(phase=phase, pod_ip=ip, start_time=T0,
                                  conditions=[client.V1PodCondition(type="Ready", status=ready)],
                                  container_statuses=[client.V1ContainerStatus(
                                      name="executor", ready=ready == "True", restart_count=0, image="img:1", image_id="",
                                      state=client.V1ContainerState(waiting=client.V1ContainerStateWaiting(reason="ErrImageNeverPull"))
                                      if ready != "True" else None)]))


class FakeCore:
    def __init__(self, pods: list[client.V1Pod]) -> None:
        self.pods = pods

    def list_namespaced_pod(self, namespace: str) -> Any:
        return client.V1PodList(items=[p for p in self.pods if p.metadata.namespace == namespace])

    def list_namespaced_resource_quota(self, namespace: str) -> Any:
        return client.V1ResourceQuotaList(items=[client.V1ResourceQuota(
            metadata=client.V1ObjectMeta(name="sandbox-quota", namespace=namespace),
            status=client.V1ResourceQuotaStatus(hard={"pods": "20", "limits.memory": "16Gi"}, used={"pods": "2", "limits.memory": "1Gi"}))])

    def list_node(self) -> Any:
        return client.V1NodeList(items=[client.V1Node(
            metadata=client.V1ObjectMeta(name="localhost", labels={"kubernetes.io/hostname": "localhost"}),
            status=client.V1NodeStatus(
                addresses=[client.V1NodeAddress(type="InternalIP", address="10.1.2.3"),
                           client.V1NodeAddress(type="Hostname", address="localhost")],
                daemon_endpoints=client.V1NodeDaemonEndpoints(kubelet_endpoint=client.V1DaemonEndpoint(port=10250))))])

    def get_api_resources(self) -> None:
        return None


class FakeApps:
    def list_namespaced_replica_set(self, namespace: str) -> Any:
        return client.V1ReplicaSetList(items=[client.V1ReplicaSet(
            metadata=client.V1ObjectMeta(name="pandasai-sandbox-warm-abc", namespace=namespace),
            spec=client.V1ReplicaSetSpec(replicas=2, selector=client.V1LabelSelector()),
            status=client.V1ReplicaSetStatus(replicas=2, ready_replicas=1))])


def get(app: Any, path: str, query: str = "") -> tuple[str, str]:
    seen: dict[str, Any] = {}

    def start(status: str, headers: list[tuple[str, str]]) -> None:
        seen["status"] = status

    body = b"".join(app({"PATH_INFO": path, "QUERY_STRING": query, "wsgi.input": io.BytesIO()}, start))
    return seen["status"], body.decode()


def test_pod_targets_carry_kubernetes_sd_labels() -> None:
    groups = adapter.pod_targets([pod("a"), pod("pending", ip=None)])
    assert len(groups) == 1  # no IP, no target
    (group,) = groups
    assert group["targets"] == ["172.30.99.7:8080"]
    labels = group["labels"]
    assert labels["__meta_kubernetes_pod_label_pandasai_io_pool"] == "warm"
    assert labels["__meta_kubernetes_pod_labelpresent_app"] == "true"
    assert labels["__meta_kubernetes_pod_container_port_name"] == "api"
    assert labels["__meta_kubernetes_pod_phase"] == "Running" and labels["__meta_kubernetes_pod_ready"] == "true"
    assert all(isinstance(v, str) for v in labels.values())


def test_node_targets_give_every_address_type() -> None:
    (group,) = adapter.node_targets(FakeCore([]).list_node().items)
    assert group["targets"] == ["10.1.2.3:10250"]
    assert group["labels"]["__meta_kubernetes_node_address_Hostname"] == "localhost"
    assert group["labels"]["__meta_kubernetes_node_address_InternalIP"] == "10.1.2.3"


def test_state_metrics_have_kube_state_metrics_names() -> None:
    app = adapter.App(FakeCore([pod("a"), pod("b", ready="False", labels={"app": "python-sandbox"})]), FakeApps())
    status, text = get(app, "/metrics", "namespace=ns")
    assert status.startswith("200")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in text_string_to_metric_families(text) for s in f.samples}
    def value(name: str, **labels: str) -> float:
        matches = [v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items()]
        assert len(matches) == 1, (name, labels, matches)
        return matches[0]
    assert value("kube_pod_status_phase", pod="a", phase="Running") == 1
    assert value("kube_pod_status_phase", pod="a", phase="Failed") == 0
    assert value("kube_pod_status_ready", pod="b", condition="false") == 1
    assert value("kube_pod_labels", pod="a", label_pandasai_io_pool="warm") == 1
    assert value("kube_pod_container_resource_limits", pod="a", resource="cpu", unit="core") == 0.5
    assert value("kube_pod_container_resource_limits", pod="a", resource="memory", unit="byte") == 512 * 2 ** 20
    assert value("kube_pod_container_status_waiting_reason", pod="b", reason="ErrImageNeverPull") == 1
    assert value("kube_pod_start_time", pod="a") == T0.timestamp()
    assert value("kube_resourcequota", resource="pods", type="used") == 2
    assert value("kube_resourcequota", resource="limits.memory", type="hard") == 16 * 2 ** 30
    assert value("kube_replicaset_spec_replicas", replicaset="pandasai-sandbox-warm-abc") == 2
    assert value("kube_replicaset_status_ready_replicas", replicaset="pandasai-sandbox-warm-abc") == 1


def test_routes() -> None:
    app = adapter.App(FakeCore([pod("a")]), FakeApps())
    status, body = get(app, "/targets/pods", "namespace=ns")
    assert status.startswith("200") and json.loads(body)[0]["targets"] == ["172.30.99.7:8080"]
    assert get(app, "/targets/pods", "")[0].startswith("400")
    assert get(app, "/targets/nodes")[0].startswith("200")
    assert get(app, "/healthz")[0].startswith("200")
    assert get(app, "/nope")[0].startswith("404")


def test_api_errors_become_gateway_errors() -> None:
    class Refusing(FakeCore):
        def list_namespaced_pod(self, namespace: str) -> Any:
            raise client.ApiException(status=403, reason="Forbidden")
    status, body = get(adapter.App(Refusing([]), FakeApps()), "/targets/pods", "namespace=ns")
    assert status.startswith("502") and "403 Forbidden" in body


@pytest.mark.parametrize("listen", ["0.0.0.0:9099", "10.1.2.3:9099", ":9099"])
def test_refuses_to_listen_beyond_loopback(listen: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        adapter.main(["--kubeconfig", str(tmp_path / "none"), "--listen", listen])
