"""The differential suite through a real sandbox pod on the local cluster (cluster stage).

The same corpus as ``test_parity_local_executor.py``, with ``KubernetesSandbox`` creating a pod
from the namespace's template (the image site.yml built, its shipped limits) under the client's
own identity (ServiceAccount ``pandasai-sandbox-sa``), reached over a port-forward. Run by
scripts/test-cluster.sh (marker ``cluster``) under the cluster lock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from parity_checks import assert_parity, params
from parity_corpus import PROGRAMS
from parity_harness import Program, run
from pod_sandbox.client import KubernetesSandbox
from pod_sandbox.client.kube import KubeApi

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def pod_sandbox(admin_kube, client_config, session_ids) -> Iterator[KubernetesSandbox]:
    """One session on one cold pod for the whole corpus, as a user keeps one across chats."""
    box = KubernetesSandbox(admin_kube.namespace, kube=KubeApi(client_config, admin_kube.namespace),
                            warm_pool=False, connection="port-forward")
    try:
        box.start()
        assert box.pod_name is not None and box.session_id is not None
        session_ids.add(box.session_id)
        yield box
    finally:
        box.stop()


@pytest.mark.parametrize("program", params(PROGRAMS))
def test_the_pod_answers_as_local_execution(program: Program, frames, parity_root: Path,
                                            pod_sandbox: KubernetesSandbox) -> None:
    local = run(program, frames, parity_root / "local" / program.name)
    boxed = run(program, frames, parity_root / "pod" / program.name, pod_sandbox)
    assert_parity(program, local, boxed)
