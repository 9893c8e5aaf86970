"""One sandbox session's resources (pod, tunnel, connection) and their idempotent release."""

from __future__ import annotations

import atexit
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from .errors import KubernetesAPIError
from .http import ExecutorHTTP
from .kube import KubeApi
from .protocol import ExecutorClient

log = logging.getLogger("pod_sandbox.client")


@dataclass
class Session:
    """What one ``start()`` acquired. ``close()`` releases it once; later calls do nothing.

    It holds no reference to the sandbox object, so a ``weakref.finalize`` on the sandbox can
    call ``close`` at garbage collection or interpreter exit (the atexit backstop).
    """

    session_id: str
    client: ExecutorClient
    http: ExecutorHTTP
    kube: KubeApi | None = None
    pod_name: str | None = None
    pod_uid: str | None = None
    warm: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    _closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def closed(self) -> bool:
        """True once ``close`` ran."""
        return self._closed

    def close(self, shutdown: bool = True) -> None:
        """Best-effort ``POST /v1/shutdown``, close the tunnel, delete the pod (grace 0).

        In ``url`` mode (no pod of ours) only the connection is closed: that executor is not
        this session's to stop.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if shutdown and self.pod_name is not None:
            try:
                self.client.shutdown(timeout_s=1.0)
            except Exception as exc:  # noqa: BLE001 - the pod is deleted anyway
                log.debug("shutdown of %s failed (ignored): %s", self.pod_name, exc)
        try:
            self.http.close()
        except Exception as exc:  # noqa: BLE001
            log.debug("closing the connection failed (ignored): %s", exc)
        if self.kube is not None and self.pod_name is not None:
            try:
                self.kube.delete_pod(self.pod_name, grace_period_seconds=0, uid=self.pod_uid)
            except KubernetesAPIError as exc:
                log.warning("could not delete sandbox pod %s: %s", self.pod_name, exc)
            except Exception as exc:  # noqa: BLE001 - API unreachable at exit
                log.warning("could not delete sandbox pod %s: %s", self.pod_name, exc)


def close_session(session: Any) -> None:
    """Finalizer entry point (a module-level function, so it keeps no sandbox alive)."""
    atexit.unregister(session.close)
    session.close()
