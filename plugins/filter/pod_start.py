"""The verdicts of module_utils.pod_start for a list of pods, for wait loops in tasks."""
from __future__ import annotations

from typing import Any

from ansible_collections.pandasai.pod_sandbox.plugins.module_utils.pod_start import start_problem

DOCUMENTATION = r"""
name: pod_start_problems
short_description: Name the pods that will not become Ready by waiting, with the cluster's reason and the fix
description:
  - For each pod that the scheduler refused (Unschedulable - Insufficient cpu, an untolerated taint, no node
    with its labels), whose image cannot be pulled, or whose container exits or crash loops, one text
    C(pod NAME - what the cluster said; fix - what to change). Pods still starting normally give nothing.
  - The same verdicts as the verify role's test pod and the client (module_utils pod_start).
options:
  _input:
    description: Pod objects as the API returns them (for example C(k8s_info) resources).
    type: list
    elements: dict
    required: true
"""

EXAMPLES = r"""
warm_pool_problems: "{{ warm_pool_pods.resources | pandasai.pod_sandbox.pod_start_problems }}"
"""

RETURN = r"""
_value:
  description: One text per pod that cannot start; empty when none.
  type: list
  elements: str
"""


def pod_start_problems(pods: list[dict[str, Any]]) -> list[str]:
    """One ``pod NAME: said; fix: ...`` text per pod that cannot become Ready by waiting."""
    found = []
    for pod in pods or []:
        problem = start_problem(pod)
        if problem is not None:
            name = (pod.get("metadata") or {}).get("name", "?")
            found.append("pod %s: %s; fix: %s" % (name, problem[0], problem[1]))
    return found


class FilterModule:
    """Pod start verdicts of pandasai.pod_sandbox."""

    def filters(self) -> dict[str, Any]:
        return {"pod_start_problems": pod_start_problems}
