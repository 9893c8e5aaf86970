"""Bearer-token authentication: a token file read once at start, or one claim per pod."""

from __future__ import annotations

import hmac
import logging
import os
import threading
from enum import Enum

from .. import wire

log = logging.getLogger("pod_sandbox.auth")


class ClaimResult(Enum):
    """Outcome of ``POST /v1/claim``."""

    CLAIMED = 200
    CONFLICT = 409


class TokenStore:
    """Holds the bearer token in memory only (the process is not dumpable)."""

    def __init__(self, token: str | None, claimable: bool) -> None:
        self._token = token
        self._claimable = claimable and token is None
        self._lock = threading.Lock()

    @classmethod
    def from_file(cls, path: str | None, claimable: bool) -> "TokenStore":
        """Read the token file, then make it unreadable to the sandbox user (best effort)."""
        if not path:
            return cls(None, claimable)
        try:
            with open(path, encoding="utf-8") as fh:
                token = fh.read().strip()
        except OSError as exc:
            raise SystemExit(f"pod-sandbox-executor: cannot read --token-file {path}: {exc.strerror}") from None
        if len(token) < 16 or any(c.isspace() for c in token):
            raise SystemExit(f"pod-sandbox-executor: token in {path} must be 16+ non-blank characters")
        try:
            os.chmod(path, 0)
        except OSError as exc:
            log.warning("token file %s stays readable (%s): mount it so the sandbox uid cannot "
                        "read it, or use --claimable", path, exc.strerror)
        return cls(token, claimable)

    @property
    def auth_enabled(self) -> bool:
        """False only in the documented no-token local mode."""
        return self._token is not None or self._claimable

    @property
    def claimed(self) -> bool:
        """Whether a token is in force."""
        return self._token is not None

    def check(self, authorization: str | None) -> bool:
        """Whether an Authorization header carries the token (constant-time compare)."""
        if not self.auth_enabled:
            return True
        token = self._token
        if token is None or not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), token.encode())

    def claim(self, token: str) -> ClaimResult:
        """Set the token once, in claimable mode; raise WireError for a malformed token."""
        wire.validate_token(token)
        with self._lock:
            if not self._claimable or self._token is not None:
                return ClaimResult.CONFLICT
            self._token = token
            return ClaimResult.CLAIMED
