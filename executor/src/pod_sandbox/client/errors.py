"""Exceptions raised by the pod sandbox client, each naming what failed and where."""

from __future__ import annotations


class SandboxError(RuntimeError):
    """Base class of every error the pod sandbox client raises."""


class KubernetesAPIError(SandboxError):
    """The Kubernetes API server refused or failed a request."""

    def __init__(self, verb: str, what: str, status: int, reason: str, body: str = "") -> None:
        detail = body.strip()
        super().__init__(
            f"Kubernetes API {verb} {what} failed: HTTP {status} {reason}"
            + (f": {detail[:500]}" if detail else "")
        )
        self.verb = verb
        self.what = what
        self.status = status
        self.reason = reason
        self.body = body


class PodTemplateError(SandboxError):
    """The sandbox pod template (ConfigMap, file or dict) is missing or unusable."""


class SandboxStartError(SandboxError):
    """The sandbox pod could not be created, scheduled, started or claimed."""


class SandboxLostError(SandboxError):
    """The sandbox pod went away (deleted, evicted, failed) while the session was using it."""


class SandboxConnectionError(SandboxError):
    """The executor in the pod could not be reached or answered outside the protocol."""


class SandboxProtocolError(SandboxError):
    """The executor answered with an HTTP error or a body that breaks the wire format."""

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class SandboxExecutionError(SandboxError):
    """The code raised inside the sandbox; the message carries the in-pod traceback.

    PandasAI's Agent catches any exception from ``sandbox.execute`` and shows
    ``traceback.format_exc()`` to the LLM to regenerate the code, so the in-pod traceback is
    part of the message, not only an attribute.
    """

    def __init__(
        self,
        status: str,
        error_type: str,
        message: str,
        traceback_text: str = "",
        stdout: str = "",
        stderr: str = "",
    ) -> None:
        text = f"Code execution in the pod sandbox failed ({status}): {error_type}: {message}"
        if traceback_text:
            text += "\n--- traceback inside the sandbox ---\n" + traceback_text.rstrip()
        if stderr:
            text += "\n--- stderr ---\n" + stderr.rstrip()[-2000:]
        super().__init__(text)
        self.status = status
        self.error_type = error_type
        self.error_message = message
        self.traceback = traceback_text
        self.stdout = stdout
        self.stderr = stderr


class SandboxTimeoutError(SandboxExecutionError):
    """The code ran past its time limit and was killed inside the pod."""


class SandboxMemoryError(SandboxExecutionError):
    """The code exceeded its memory limit inside the pod."""


class NoResultError(SandboxExecutionError):
    """The code ran but assigned no ``result``."""
