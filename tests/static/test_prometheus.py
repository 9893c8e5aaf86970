"""The Prometheus side of render.yml's output, checked with Debian's promtool: the rules file
(check rules, and the unit tests in prometheus/rules-test.yml), the configuration for a
Prometheus without the operator (check config), the PrometheusRule made from the same
definition, the dashboard (JSON and ConfigMap, every query parsed by promtool) and the warm
pool's HorizontalPodAutoscaler. Debian's promtool is built without Kubernetes service discovery,
so the kubernetes_sd variant of the configuration is compared with the http_sd one it must equal
apart from the discovery blocks."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import render, rendered_variant
from manifests import Manifest

HERE = Path(__file__).parent
RULES_TEST = HERE / "prometheus" / "rules-test.yml"
RULES = "prometheus/pandasai-sandbox-rules.yml"
CONFIG = "prometheus/prometheus.yml"
ALERTS = {"PandasaiSandboxWarmPoolEmpty", "PandasaiSandboxWarmPoolHitRatioLow", "PandasaiSandboxExecutionsFailingHard",
          "PandasaiSandboxPodsLeaked", "PandasaiSandboxPodPastDeadline", "PandasaiSandboxQuotaNearlyFull",
          "PandasaiSandboxExecutorNotReady"}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool missing: scripts/test-static.sh installs Debian's prometheus package"
    return subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def by_kind(found: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in found if m.kind == kind]


def run_rule_tests(render_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """promtool test rules on a copy of rules-test.yml beside the rendered rules; each expected
    alert's description (static text) is taken from the rule, its summary stays as written."""
    rules = load(render_dir / RULES)
    descriptions = {r["alert"]: r["annotations"]["description"]
                    for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = load(RULES_TEST)
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            for alert in check["exp_alerts"]:
                alert["exp_annotations"]["description"] = descriptions[check["alertname"]]
    shutil.copy(render_dir / RULES, tmp_path / "pandasai-sandbox-rules.yml")
    (tmp_path / "rules-test.yml").write_text(yaml.safe_dump(tests), encoding="utf-8")
    return promtool("test", "rules", "rules-test.yml", cwd=tmp_path)


@pytest.fixture(scope="module")
def defaults(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Manifest]]:
    return rendered_variant("defaults", tmp_path_factory)


def test_rules_pass_promtool_check(defaults: tuple[Path, list[Manifest]]) -> None:
    proc = promtool("check", "rules", str(defaults[0] / RULES))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_is_defined_and_unit_tested(defaults: tuple[Path, list[Manifest]]) -> None:
    rules = load(defaults[0] / RULES)
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == ALERTS
    tests = load(RULES_TEST)
    fired = {c["alertname"] for t in tests["tests"] for c in t.get("alert_rule_test", []) if c["exp_alerts"]}
    silent = {c["alertname"] for t in tests["tests"] for c in t.get("alert_rule_test", []) if not c["exp_alerts"]}
    assert fired == ALERTS, f"alerts never shown firing: {sorted(ALERTS - fired)}"
    assert silent == ALERTS, f"alerts never shown silent: {sorted(ALERTS - silent)}"


def test_rules_unit_tests_pass(defaults: tuple[Path, list[Manifest]], tmp_path: Path) -> None:
    proc = run_rule_tests(defaults[0], tmp_path)
    assert proc.returncode == 0 and "SUCCESS" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("setting", [
    {"monitoring_alert_quota_ratio_max": 0.99},   # 95% no longer fires
    {"monitoring_alert_timeout_ratio_max": 0.05},  # 9% killed now fires
    {"monitoring_alert_pod_lifetime_seconds": 7200},  # the 75 minute old pod is in time
])
def test_rules_unit_tests_see_the_thresholds(setting: dict[str, Any], tmp_path: Path) -> None:
    """The unit tests exercise the rendered thresholds: other settings make them fail."""
    render(tmp_path / "render", setting)
    proc = run_rule_tests(tmp_path / "render", tmp_path)
    assert proc.returncode != 0, f"{setting}: the rule tests still pass:\n{proc.stdout}"


def test_prometheusrule_carries_the_same_groups(defaults: tuple[Path, list[Manifest]]) -> None:
    rule = by_kind(defaults[1], "PrometheusRule")
    assert len(rule) == 1
    assert rule[0].obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule[0].obj["spec"] == load(defaults[0] / RULES)


@pytest.fixture(scope="module")
def http_variant(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """render.yml with the local cluster's way of discovery (http_sd, client certificate)."""
    tmp_path = tmp_path_factory.mktemp("http-sd")
    certs = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in certs.values():
        path.write_text("placeholder\n", encoding="utf-8")
    render_dir = tmp_path / "render-http"
    render(render_dir, {
        "monitoring_prometheus_discovery": "http",
        "monitoring_prometheus_discovery_url": "http://127.0.0.1:9099",
        "monitoring_prometheus_kubelet_address_type": "Hostname",
        "monitoring_prometheus_kubelet_client": {"tls_config": {
            "ca_file": str(certs["ca"]), "cert_file": str(certs["cert"]), "key_file": str(certs["key"]),
            "server_name": "localhost"}},
        "monitoring_prometheus_state_metrics_target": "127.0.0.1:9099",
    })
    return render_dir, load(render_dir / CONFIG)


def test_http_sd_configuration_passes_promtool(http_variant: tuple[Path, dict[str, Any]]) -> None:
    render_dir, config = http_variant
    proc = promtool("check", "config", str(render_dir / CONFIG))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 1 rule files found" in proc.stdout, proc.stdout
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    assert set(jobs) == {"pandasai-sandbox", "pandasai-sandbox-cadvisor", "pandasai-sandbox-state"}
    assert jobs["pandasai-sandbox"]["http_sd_configs"][0]["url"] == \
        "http://127.0.0.1:9099/targets/pods?namespace=pandasai-sandbox"


@pytest.fixture(scope="module")
def kubernetes_variant(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """render.yml as for a real cluster's Prometheus (the role's defaults, not the local inventory's)."""
    render_dir = tmp_path_factory.mktemp("kubernetes-sd") / "render"
    render(render_dir, {
        "monitoring_prometheus_discovery": "kubernetes",
        "monitoring_prometheus_kubelet_address_type": "InternalIP",
        "monitoring_prometheus_kubelet_client": {
            "authorization": {"credentials_file": "/var/run/secrets/kubernetes.io/serviceaccount/token"},
            "tls_config": {"ca_file": "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt", "insecure_skip_verify": True}},
        "monitoring_prometheus_state_metrics_target": "kube-state-metrics.kube-system.svc:8080",
    })
    return load(render_dir / CONFIG)


def test_kubernetes_sd_configuration_differs_only_in_discovery(kubernetes_variant: dict[str, Any],
                                                               http_variant: tuple[Path, dict[str, Any]]) -> None:
    kube = copy.deepcopy(kubernetes_variant)
    http = copy.deepcopy(http_variant[1])
    for job in kube["scrape_configs"] + http["scrape_configs"]:
        job.pop("tls_config", None)
        job.pop("authorization", None)
        for rule in job.get("relabel_configs", []):
            if rule.get("replacement", "").endswith(":10250"):
                rule["source_labels"] = ["__meta_kubernetes_node_address"]
    kube_sd = {j["job_name"]: j.pop("kubernetes_sd_configs", None) for j in kube["scrape_configs"]}
    http_sd = {j["job_name"]: j.pop("http_sd_configs", None) for j in http["scrape_configs"]}
    for job in ("pandasai-sandbox", "pandasai-sandbox-cadvisor"):
        assert kube_sd[job] and http_sd[job], job
    assert kube_sd["pandasai-sandbox"] == [{"role": "pod", "namespaces": {"names": ["pandasai-sandbox"]}}]
    assert kube_sd["pandasai-sandbox-cadvisor"] == [{"role": "node"}]
    for job in kube["scrape_configs"] + http["scrape_configs"]:
        if job["job_name"].endswith("-state"):
            job["static_configs"] = []
    assert kube == http


def test_dashboard_json_and_configmap(defaults: tuple[Path, list[Manifest]], tmp_path: Path) -> None:
    dashboard = json.loads((defaults[0] / "monitoring" / "pandasai-sandbox-dashboard.json").read_text(encoding="utf-8"))
    configmaps = [m for m in by_kind(defaults[1], "ConfigMap") if m.name == "pandasai-sandbox-dashboard"]
    assert len(configmaps) == 1
    assert configmaps[0].obj["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmaps[0].obj["data"]["pandasai-sandbox.json"]) == dashboard
    titles = [p["title"] for p in dashboard["panels"]]
    for needed in ("Executions by status", "latency percentiles", "in flight", "Warm pool", "by phase",
                   "CPU used / limit", "Memory working set / limit"):
        assert any(needed.lower() in t.lower() for t in titles), f"no panel about {needed}: {titles}"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert all(t["refId"] and t["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"] for t in p["targets"])
    # Every query parses: promtool checks them as recording rules.
    check = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:q{i}", "expr": e}
                                                         for i, e in enumerate(exprs)]}]}
    (tmp_path / "dashboard-queries.yml").write_text(yaml.safe_dump(check), encoding="utf-8")
    proc = promtool("check", "rules", str(tmp_path / "dashboard-queries.yml"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_autoscaler_targets_the_rendered_warm_pool(defaults: tuple[Path, list[Manifest]]) -> None:
    hpas = by_kind(defaults[1], "HorizontalPodAutoscaler")
    pools = by_kind(defaults[1], "ReplicaSet")
    assert len(hpas) == 1 and len(pools) == 1
    spec = hpas[0].obj["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": pools[0].name}
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    metric = spec["metrics"][0]["external"]["metric"]
    assert metric["name"] == "pandasai_sandbox_warm_pool_claims"
