"""Bearer-token authentication: a token file read once at start, or one claim per pod."""

from __future__ import annotations

import errno
import hmac
import logging
import os
import stat
import threading
from enum import Enum

from .. import wire

log = logging.getLogger("pod_sandbox.auth")
#: A token is at most 256 characters (wire.TOKEN_RE); the file may add a newline or so.
MAX_TOKEN_FILE_BYTES = 4096


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
        """Read the token file and remove it: user code runs as the same uid, so a file it can
        reach it can also ``chmod`` and read. Refuse to start when the file cannot be removed
        (a read-only mount, a directory the uid may not write), is a symlink (removing the link
        would leave its target) or has another hard link (its other name would stay)."""
        if not path:
            return cls(None, claimable)

        def refuse(why: str) -> SystemExit:
            return SystemExit(f"pod-sandbox-executor: --token-file {path}: {why}; the server removes "
                              "the file once read, so that user code (the same uid) cannot read it: "
                              "put it in a directory the server may write (e.g. an emptyDir an init "
                              "container fills), or use --claimable")

        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise refuse("is a symbolic link") from None
            raise SystemExit(f"pod-sandbox-executor: cannot read --token-file {path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise refuse("is not a regular file")
            if st.st_size > MAX_TOKEN_FILE_BYTES:
                raise refuse(f"is {st.st_size} bytes (a token file has at most {MAX_TOKEN_FILE_BYTES})")
            raw = os.read(fd, MAX_TOKEN_FILE_BYTES + 1)
            try:
                os.unlink(path)
            except OSError as exc:
                raise refuse(f"cannot be removed ({exc.strerror})") from None
            left = os.fstat(fd).st_nlink
            if left:
                raise refuse(f"still has {left} other hard link(s) after its removal")
        finally:
            os.close(fd)
        try:
            token = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise SystemExit(f"pod-sandbox-executor: token in {path} is not UTF-8 text") from None
        if len(token) < 16 or any(c.isspace() for c in token):
            raise SystemExit(f"pod-sandbox-executor: token in {path} must be 16+ non-blank characters")
        log.info("read the token from %s and removed the file", path)
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
