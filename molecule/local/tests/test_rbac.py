"""The sandbox ServiceAccount's permissions, asked of the API server with SubjectAccessReviews:
exactly what the sandbox client needs in the sandbox namespace, nothing elsewhere, no secrets,
pods/exec only when rbac_allow_exec is on."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

SERVICE_ACCOUNT = "pandasai-sandbox-sa"


@pytest.fixture(scope="module")
def can(api_client: client.ApiClient, namespace: str):
    """can(verb, resource, namespace=..., subresource=..., name=...) for the sandbox ServiceAccount."""
    authz = client.AuthorizationV1Api(api_client)
    user = f"system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}"
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"]

    def ask(verb: str, resource: str, ns: str | None = namespace, subresource: str = "", name: str = "", group: str = "") -> bool:
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user, groups=groups,
                resource_attributes=client.V1ResourceAttributes(
                    namespace=ns, verb=verb, resource=resource, subresource=subresource or None,
                    name=name or None, group=group,
                ),
            )
        )
        return bool(authz.create_subject_access_review(review).status.allowed)

    return ask


@pytest.mark.parametrize("verb", ["create", "get", "list", "watch", "delete"])
def test_may_manage_pods_in_the_sandbox_namespace(can, verb: str) -> None:
    assert can(verb, "pods")


def test_may_port_forward_in_the_sandbox_namespace(can) -> None:
    assert can("create", "pods", subresource="portforward")


def test_may_read_only_the_pod_template_configmap(can) -> None:
    assert can("get", "configmaps", name="pandasai-sandbox-pod-template")
    assert not can("get", "configmaps", name="something-else")
    assert not can("list", "configmaps")


@pytest.mark.parametrize("verb", ["create", "delete", "list"])
def test_may_not_touch_pods_in_default(can, verb: str) -> None:
    assert not can(verb, "pods", ns="default")


@pytest.mark.parametrize("verb", ["get", "list", "watch"])
def test_may_not_read_secrets(can, namespace: str, verb: str) -> None:
    assert not can(verb, "secrets")
    assert not can(verb, "secrets", ns="default")
    assert not can(verb, "secrets", ns=None)


def test_no_cluster_wide_rights(can) -> None:
    assert not can("list", "nodes", ns=None)
    assert not can("list", "pods", ns=None)
    assert not can("create", "roles", ns=None, group="rbac.authorization.k8s.io")
    assert not can("create", "rolebindings", group="rbac.authorization.k8s.io")


def test_pods_exec_only_when_enabled(can, inventory_vars: dict[str, Any], rendered: dict[str, list[dict[str, Any]]]) -> None:
    enabled = str(inventory_vars.get("rbac_allow_exec", False)).lower() in ("true", "1", "yes")
    role = next(doc for items in rendered.values() for doc in items if doc["kind"] == "Role")
    in_role = any("pods/exec" in rule.get("resources", []) for rule in role["rules"])
    assert in_role is enabled
    assert can("create", "pods", subresource="exec") is enabled
