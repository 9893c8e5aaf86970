"""Exceptions raised by the pod sandbox client, each naming what failed and where."""

from __future__ import annotations

from .pandasai_compat import (
    NO_RESULT_MESSAGE,
    CodeExecutionError,
    InvalidOutputValueMismatch,
    MaliciousQueryError,
    NoResultFoundError,
)


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


class SandboxAnswerRefused(SandboxProtocolError, CodeExecutionError):
    """The sandbox's answer was refused before it was used: malformed, or beyond ``AnswerLimits``.

    The sandbox is not trusted, so its answer is checked (sizes, counts, nesting, numbers, types)
    before the client allocates for it. A PandasAI ``CodeExecutionError``: the Agent retries and
    then answers with its ``ErrorResponse``; the host process is not harmed. ``field`` names the
    part of the answer, ``limit`` the ``AnswerLimits`` attribute that refused it (or "").
    """

    def __init__(self, message: str, field: str = "", limit: str = "", status: int | None = None) -> None:
        super().__init__(message, status)
        self.field = field
        self.limit = limit


class PodTraceback(Exception):
    """The traceback of the code inside the pod, as text: the cause of a :class:`SandboxExecutionError`.

    Raised from it (``raise SandboxExecutionError(...) from PodTraceback(text)``), so
    ``traceback.format_exc()`` shows the in-pod traceback first, then the client's frames, the
    way PandasAI's own ``CodeExecutor`` chains the user's exception to ``CodeExecutionError``.
    PandasAI gives that text to the LLM to fix the code and keeps it in ``ErrorResponse.error``.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text.rstrip()


class SandboxExecutionError(SandboxError, CodeExecutionError):
    """The code failed inside the sandbox (raised, timed out, ran out of memory, was killed).

    A ``pandasai.exceptions.CodeExecutionError``, like a failure of local execution: PandasAI's
    Agent retries with the traceback and then answers with its ``ErrorResponse``. The in-pod
    traceback is this exception's ``__cause__`` (:class:`PodTraceback`) and ``traceback``.
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
        super().__init__(f"Code execution in the pod sandbox failed ({status}): {error_type}: {message}")
        self.status = status
        self.error_type = error_type
        self.error_message = message
        self.traceback = traceback_text
        self.stdout = stdout
        self.stderr = stderr


class SandboxQueryRefused(SandboxExecutionError, MaliciousQueryError):
    """The code asked for SQL the client will not run on the host (see ``pod_sandbox.client.sqlguard``).

    A failed execution to PandasAI (retried, then its ``ErrorResponse``), and PandasAI's own
    ``MaliciousQueryError``, the class its code cleaner raises for a query on a table it does
    not know.
    """

    def __init__(self, query: str, reason: str) -> None:
        shown = query if len(query) <= 300 else query[:300] + f"... ({len(query)} characters)"
        super().__init__("refused", "SQLRefused", f"the pod sandbox does not run this query on the host: {reason}: {shown}")
        self.query = query
        self.reason = reason


class SandboxTimeoutError(SandboxExecutionError):
    """The code ran past its time limit and was killed inside the pod."""


class SandboxMemoryError(SandboxExecutionError):
    """The code exceeded its memory limit inside the pod."""


class NoResultError(SandboxError, NoResultFoundError):
    """The code ran but assigned no ``result``: PandasAI's own ``NoResultFoundError``, same words."""

    def __init__(self, message: str = NO_RESULT_MESSAGE) -> None:
        super().__init__(message)


class SandboxResultError(SandboxError, InvalidOutputValueMismatch):
    """The code's ``result`` does not fit its declared type (the executor could not encode it).

    PandasAI's own ``InvalidOutputValueMismatch``, which its ``ResponseParser`` raises for the
    same code run locally: retried, then raised from ``chat()``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(f"Invalid output: {message}")
        self.error_message = message
