"""PandasAI's pod sandbox client: ``KubernetesSandbox`` and the errors it raises.

Usage (``pip install "pandasai-pod-sandbox[client,pandasai]"``)::

    import pandasai as pai
    from pandasai import Agent
    from pod_sandbox.client import KubernetesSandbox

    with KubernetesSandbox(namespace="pandasai-sandbox") as sandbox:
        agent = Agent(pai.read_csv("sales.csv"), sandbox=sandbox)
        agent.chat("Which region sold most?")

Each session gets its own pod: a warm one claimed from the pool when the namespace has one
(``roles/warm_pool``), else a new pod from ConfigMap ``pandasai-sandbox-pod-template``
(``pod_template=`` a file path or dict for GitOps setups). The pod is reached through a
port-forward made with the Python kubernetes client (``connection="pod-ip"`` or the default
``"auto"`` inside a cluster uses the pod IP; ``connection="url"`` targets an executor you run
yourself). A fresh token is handed over with ``POST /v1/claim``; ``stop()`` deletes the pod.
SQL that the generated code passes to ``execute_sql_query`` runs on the host (PandasAI's own
function) when it is one read-only query on the agent's tables (``sqlguard``), and its result
travels to the pod as Parquet. Answers are what local execution gives: failures are PandasAI's
own exceptions (``CodeExecutionError`` and family) carrying the in-pod traceback, so its retries
and ``ErrorResponse`` work; prints and warnings are written to this process's stdout/stderr;
charts are written where PandasAI's code saved them. Differences that remain are listed in this
package's README.md. Leaked pods: ``activeDeadlineSeconds`` from the template, and
``pod-sandbox-reaper`` / ``playbooks/reap.yml``.
"""

from ..limits import AnswerLimits
from .errors import (
    KubernetesAPIError,
    NoResultError,
    PodTemplateError,
    SandboxAnswerRefused,
    SandboxConnectionError,
    SandboxError,
    SandboxExecutionError,
    SandboxLostError,
    SandboxMemoryError,
    SandboxProtocolError,
    SandboxQueryRefused,
    SandboxResultError,
    SandboxStartError,
    SandboxTimeoutError,
)
from .sandbox import KubernetesSandbox

__all__ = [
    "AnswerLimits",
    "KubernetesAPIError",
    "KubernetesSandbox",
    "NoResultError",
    "PodTemplateError",
    "SandboxAnswerRefused",
    "SandboxConnectionError",
    "SandboxError",
    "SandboxExecutionError",
    "SandboxLostError",
    "SandboxMemoryError",
    "SandboxProtocolError",
    "SandboxQueryRefused",
    "SandboxResultError",
    "SandboxStartError",
    "SandboxTimeoutError",
]
