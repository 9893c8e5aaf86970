"""Bad settings are rejected by the roles' argument specs (and their validate steps) before any
cluster or engine call, with a message naming the variable at fault."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_playbook_json

ROLE_ENTRY = Path(__file__).parent / "playbooks" / "role_entry.yml"

# Actions that validate input; the failing task must be one of them.
VALIDATION_ACTIONS = {"ansible.builtin.validate_argument_spec", "ansible.builtin.assert", "ansible.builtin.fail"}
# Actions that could reach a cluster, an engine or the host; none may have run before the failure.
SIDE_EFFECT_PREFIXES = (
    "kubernetes.core.", "community.docker.", "pandasai.pod_sandbox.",
    "ansible.builtin.command", "ansible.builtin.shell", "ansible.builtin.script", "ansible.builtin.raw",
    "ansible.builtin.uri", "ansible.builtin.package", "ansible.builtin.apt", "ansible.builtin.file",
    "ansible.builtin.copy", "ansible.builtin.template", "ansible.builtin.get_url",
)

# (role, entry point, bad variables, variable the message must name)
BAD_CONFIGS: list[tuple[str, str, dict, str]] = [
    ("cluster_prep", "main", {"cluster_prep_provider": "docker-desktop"}, "cluster_prep_provider"),
    ("cluster_prep", "main", {"cluster_prep_api_timeout": "fast"}, "cluster_prep_api_timeout"),
    ("namespace", "main", {"namespace_pss_enforce": "strict"}, "namespace_pss_enforce"),
    ("namespace", "main", {"namespace_pss_warn": "paranoid"}, "namespace_pss_warn"),
    ("namespace", "manifests", {"namespace_name": "Bad_Name"}, "namespace_name"),
    ("namespace", "manifests", {"namespace_labels": ["team=a"]}, "namespace_labels"),
    ("namespace", "manifests", {"namespace_labels": {"-team": "a"}}, "namespace_labels"),
    ("pod_template", "manifests", {"pod_template_annotations": {"bad key": "x"}}, "pod_template_annotations"),
    ("node_placement", "main", {"node_placement_enabled": True, "node_placement_nodes": ["node-a"],
                                "node_placement_taints": [{"key": "dedicated", "value": "-no", "effect": "NoSchedule"}]},
     "node_placement_taints"),
    ("namespace", "teardown", {"namespace_delete_timeout": "soon"}, "namespace_delete_timeout"),
    ("network_policy", "main", {"network_policy_allow_monitoring": "perhaps"}, "network_policy_allow_monitoring"),
    ("network_policy", "main", {"network_policy_egress_rules": ["allow-all"]}, "network_policy_egress_rules"),
    ("network_policy", "manifests", {"network_policy_client_selector": "everyone"}, "network_policy_client_selector"),
    ("network_policy", "manifests", {"network_policy_port": 70000}, "network_policy_port"),
    ("network_policy", "manifests", {"network_policy_port": "API_port"}, "network_policy_port"),
    ("rbac", "main", {"rbac_allow_exec": "sometimes"}, "rbac_allow_exec"),
    ("rbac", "main", {"rbac_extra_subjects": ["system:anonymous"]}, "rbac_extra_subjects"),
    ("resource_limits", "main", {"resource_limits_quota_hard": ["pods=10"]}, "resource_limits_quota_hard"),
    ("resource_limits", "manifests", {"resource_limits_container_max": "4Gi"}, "resource_limits_container_max"),
    ("resource_limits", "manifests", {"resource_limits_quota_hard": {"pods": "ten"}}, "resource_limits_quota_hard"),
    ("monitoring", "main", {"monitoring_port": "http-metrics"}, "monitoring_port"),
    ("monitoring", "main", {"monitoring_service_monitor_enabled": "auto"}, "monitoring_service_monitor_enabled"),
    ("monitoring", "manifests", {"monitoring_prometheus_discovery": "consul"}, "monitoring_prometheus_discovery"),
    ("monitoring", "manifests", {"monitoring_dashboard_labels": {"bad key": "1"}}, "monitoring_dashboard_labels"),
    ("node_placement", "main", {"node_placement_enabled": "yes please"}, "node_placement_enabled"),
    ("node_placement", "main", {"node_placement_taints": ["pandasai.io/sandbox=true:NoSchedule"]}, "node_placement_taints"),
    ("pod_template", "main", {"pod_template_image_pull_policy": "Sometimes"}, "pod_template_image_pull_policy"),
    ("pod_template", "manifests", {"pod_template_emptydir_medium": "Disk"}, "pod_template_emptydir_medium"),
    ("pod_template", "manifests", {"pod_template_scratch_medium": "disk"}, "pod_template_scratch_medium"),
    ("pod_template", "manifests", {"pod_template_scratch_path": "/tmp/../etc"}, "pod_template_scratch_path"),
    ("pod_template", "manifests", {"pod_template_scratch_size_limit": "lots"}, "pod_template_scratch_size_limit"),
    ("pod_template", "main", {"pod_template_run_as_user": "root"}, "pod_template_run_as_user"),
    ("pod_template", "manifests", {"pod_template_image": "pandasai-sandbox-pod:latest"}, "pod_template_image"),
    ("pod_template", "manifests", {"pod_template_port": 80}, "pod_template_port"),
    ("pod_template", "manifests", {"pod_template_active_deadline_seconds": 5}, "pod_template_active_deadline_seconds"),
    ("verify", "main", {"verify_expected_type": "table"}, "verify_expected_type"),
    ("warm_pool", "main", {"warm_pool_replicas": "many"}, "warm_pool_replicas"),
    ("image", "main", {"image_target": "gcr"}, "image_target"),
    ("image", "main", {"image_builder": "kaniko"}, "image_builder"),
    ("image", "main", {"image_tag_length": "long"}, "image_tag_length"),
    ("image", "main", {"image_keep_previous": -1, "image_target": "local"}, "image_keep_previous"),
    ("image", "main", {"image_tag": "latest", "image_target": "local"}, "image_tag"),
    ("image", "main", {"image_target": "registry", "image_registry": ""}, "image_registry"),
    ("image", "main", {"image_build": False, "image_tag": "", "image_target": "local"}, "image_build"),
    ("image", "main", {"image_local_base": True, "image_local_base_packages": [], "image_target": "local"},
     "image_local_base_packages"),
]


def spec_options(role: str, entry: str) -> dict:
    spec_file = REPO / "roles" / role / "meta" / "argument_specs.yml"
    specs = yaml.safe_load(spec_file.read_text(encoding="utf-8"))["argument_specs"]
    assert entry in specs, f"{spec_file} has no entry point {entry!r}: update BAD_CONFIGS"
    return specs[entry].get("options") or {}


def test_enough_bad_configurations() -> None:
    assert len(BAD_CONFIGS) >= 15
    assert len({role for role, *_ in BAD_CONFIGS}) >= 6


@pytest.mark.parametrize(
    ("role", "entry", "bad_vars", "culprit"),
    BAD_CONFIGS,
    ids=[f"{r}-{e}-{c}" for r, e, _, c in BAD_CONFIGS],
)
def test_bad_configuration_is_rejected_before_any_call(role: str, entry: str, bad_vars: dict, culprit: str) -> None:
    options = spec_options(role, entry)
    assert culprit in options, f"roles/{role}: {culprit} is no longer in the {entry!r} argument spec"

    # Should validation wrongly pass, the role still reaches no real engine or cluster.
    safety = {"image_docker_host": "unix:///nonexistent/pod-sandbox-static/docker.sock"} if role == "image" else {}
    run = run_playbook_json(ROLE_ENTRY, {"static_role": role, "static_entry": entry, **safety, **bad_vars})

    assert run.returncode != 0, f"{role}/{entry} accepted {bad_vars}:\n{run.raw[-3000:]}"
    failed = [t for t in run.tasks if t.failed]
    assert failed, f"no failed task reported:\n{run.raw[-3000:]}"
    first_failure = failed[0]
    assert first_failure.action in VALIDATION_ACTIONS, (
        f"{role}/{entry} failed in {first_failure.action} ({first_failure.name}), not in validation: {first_failure.msg}"
    )
    assert culprit in first_failure.msg, f"message does not name {culprit}: {first_failure.msg}"
    index = run.tasks.index(first_failure)
    ran_before = [t for t in run.tasks[:index] if not t.skipped and t.action.startswith(SIDE_EFFECT_PREFIXES)]
    assert not ran_before, f"tasks with side effects ran before the validation failed: {[(t.name, t.action) for t in ran_before]}"


@pytest.mark.parametrize("role", ["image"])
def test_good_defaults_pass_validation(role: str) -> None:
    """Control case: the same harness with valid settings gets past validation (so the tests above
    fail because of the bad value, not because of the harness). The run then fails at the engine
    check, which is the first call out (DOCKER_HOST points nowhere)."""
    run = run_playbook_json(ROLE_ENTRY, {"static_role": role, "static_entry": "main", "image_target": "local",
                                         "image_docker_host": "unix:///nonexistent/docker.sock"})
    failed = [t for t in run.tasks if t.failed]
    assert failed, run.raw[-3000:]
    assert "validate_argument_spec" not in failed[0].action
    assert "image_docker_host" in failed[0].msg, failed[0].msg
