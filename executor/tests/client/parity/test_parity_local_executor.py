"""The differential suite against a real executor on loopback (unit stage).

Every corpus program runs through PandasAI's own Agent twice: with local execution and with
``KubernetesSandbox(connection="url")`` on ``pod-sandbox-executor --claimable`` started with its
shipped limits (as uid 10001 from ``.venv-sandbox`` when the tests run as root, like the pod).
The cluster stage runs the same corpus through a real pod (``test_parity_cluster.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from parity_checks import assert_parity, params
from parity_corpus import PROGRAMS
from parity_harness import Program, run
from pod_sandbox.client import KubernetesSandbox
from server_process import start_executor

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[KubernetesSandbox]:
    """One open session for the whole corpus, as a user keeps one across chats."""
    server = start_executor(claimable=True)
    box = KubernetesSandbox(connection="url", url=f"http://127.0.0.1:{server.port}")
    try:
        box.start()
        yield box
    finally:
        box.stop()
        server.stop()


@pytest.mark.parametrize("program", params(PROGRAMS))
def test_the_sandbox_answers_as_local_execution(program: Program, frames, parity_root: Path,
                                                sandbox: KubernetesSandbox) -> None:
    local = run(program, frames, parity_root / "local" / program.name)
    boxed = run(program, frames, parity_root / "sandbox" / program.name, sandbox)
    assert_parity(program, local, boxed)
