"""PandasAI's pod sandbox client: ``KubernetesSandbox`` and the errors it raises."""

from .errors import (
    KubernetesAPIError,
    NoResultError,
    PodTemplateError,
    SandboxConnectionError,
    SandboxError,
    SandboxExecutionError,
    SandboxLostError,
    SandboxMemoryError,
    SandboxProtocolError,
    SandboxStartError,
    SandboxTimeoutError,
)
from .sandbox import KubernetesSandbox

__all__ = [
    "KubernetesAPIError",
    "KubernetesSandbox",
    "NoResultError",
    "PodTemplateError",
    "SandboxConnectionError",
    "SandboxError",
    "SandboxExecutionError",
    "SandboxLostError",
    "SandboxMemoryError",
    "SandboxProtocolError",
    "SandboxStartError",
    "SandboxTimeoutError",
]
