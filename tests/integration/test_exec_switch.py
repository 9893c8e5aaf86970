"""rbac_allow_exec switches pods/exec on and off for the sandbox ServiceAccount (apply removes
the rule again), checked with SubjectAccessReviews."""

from __future__ import annotations

import pytest
from kubernetes import client

from conftest import NAMESPACE, playbook

pytestmark = pytest.mark.cluster


def _may_exec(api_client: client.ApiClient) -> bool:
    review = client.V1SubjectAccessReview(spec=client.V1SubjectAccessReviewSpec(
        user=f"system:serviceaccount:{NAMESPACE}:pandasai-sandbox-sa",
        groups=["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}"],
        resource_attributes=client.V1ResourceAttributes(namespace=NAMESPACE, verb="create", resource="pods", subresource="exec"),
    ))
    return bool(client.AuthorizationV1Api(api_client).create_subject_access_review(review).status.allowed)


def test_pods_exec_follows_the_switch(deployed: str, api_client: client.ApiClient) -> None:
    try:
        on = playbook("site.yml", "--tags", "rbac", "-e", "rbac_allow_exec=true")
        assert on.rc == 0, on.output[-3000:]
        assert _may_exec(api_client)
    finally:
        off = playbook("site.yml", "--tags", "rbac")
    assert off.rc == 0, off.output[-3000:]
    assert not _may_exec(api_client)
