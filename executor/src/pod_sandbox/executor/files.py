"""The session workspace: uploaded data files, validated names, capped sizes, atomic writes."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import BinaryIO

from .. import wire

CHUNK = 1 << 20


@dataclass(frozen=True)
class FileInfo:
    """One uploaded file as listed by ``GET /v1/files``."""

    name: str
    size: int

    def to_json(self) -> dict[str, object]:
        """JSON form."""
        return {"name": self.name, "size": self.size}


class Workspace:
    """Files under ``<workspace>/data``; user code sees them in its working directory."""

    def __init__(self, data_dir: str, max_upload_bytes: int) -> None:
        self.data_dir = data_dir
        self.max_upload_bytes = max_upload_bytes

    def ensure(self) -> None:
        """Create the data directory (owner-only)."""
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)

    def writable(self) -> bool:
        """Whether uploads can be stored (readiness)."""
        return os.path.isdir(self.data_dir) and os.access(self.data_dir, os.W_OK | os.X_OK)

    def path(self, name: str) -> str:
        """The path of a validated name (raises WireError on a bad name)."""
        return os.path.join(self.data_dir, wire.validate_file_name(name))

    def list(self) -> list[FileInfo]:
        """Uploaded files, sorted by name."""
        out = []
        for entry in sorted(os.scandir(self.data_dir), key=lambda e: e.name):
            if wire.FILE_NAME_RE.match(entry.name) and entry.is_file(follow_symlinks=False):
                out.append(FileInfo(entry.name, entry.stat(follow_symlinks=False).st_size))
        return out

    def put(self, name: str, stream: BinaryIO, length: int | None) -> FileInfo:
        """Store a body atomically; WireError 413 when it is over the cap."""
        target = self.path(name)
        if length is not None and length > self.max_upload_bytes:
            raise wire.WireError("body", f"{length} bytes exceeds max_upload_bytes={self.max_upload_bytes}", 413)
        tmp = os.path.join(self.data_dir, f".upload-{uuid.uuid4().hex}")
        size = 0
        try:
            with open(tmp, "xb") as fh:
                remaining = length
                while remaining is None or remaining > 0:
                    chunk = stream.read(CHUNK if remaining is None else min(CHUNK, remaining))
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > self.max_upload_bytes:
                        raise wire.WireError("body", f"exceeds max_upload_bytes={self.max_upload_bytes}", 413)
                    fh.write(chunk)
                    if remaining is not None:
                        remaining -= len(chunk)
            if length is not None and size != length:
                raise wire.WireError("body", f"got {size} of {length} bytes (Content-Length)")
            os.chmod(tmp, 0o600)
            os.replace(tmp, target)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        return FileInfo(name, size)

    def open(self, name: str) -> tuple[BinaryIO, int] | None:
        """An open file and its size, or None if absent."""
        path = self.path(name)
        try:
            fh = open(path, "rb")  # noqa: SIM115 - handed to the WSGI server, which closes it
        except (FileNotFoundError, IsADirectoryError):
            return None
        return fh, os.fstat(fh.fileno()).st_size

    def delete(self, name: str) -> bool:
        """Remove a file; False if it did not exist."""
        try:
            os.unlink(self.path(name))
            return True
        except FileNotFoundError:
            return False
