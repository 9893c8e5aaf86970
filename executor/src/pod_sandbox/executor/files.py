"""The session workspace: uploaded data files, validated names, capped sizes, atomic writes.

User code runs as the server's uid and can write the data directory: any name in it may be a
symlink (to ``/dev/zero``, a FIFO, another file), a FIFO, a socket, a directory, a hard link to
another file or a file that grows while it is read. Server processes therefore open workspace
files only through :func:`open_regular`: relative to a directory fd opened once, without
following links, without blocking, and only when ``fstat`` says it is a regular file with one
link and a size within the caller's bound; the caller then reads at most that size.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import BinaryIO

from .. import wire

CHUNK = 1 << 20
#: How a server process opens a workspace file: never follows a link in the last component,
#: never blocks (a FIFO opens at once and is then refused by type), never becomes a tty.
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
#: Out of space (ENOSPC) or over a quota (EDQUOT): the upload is refused with 507.
FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class UnsafeFile(Exception):
    """A workspace name that is not a regular, singly linked file within its size bound."""

    def __init__(self, name: str, reason: str, status: int = 404) -> None:
        super().__init__(f"{name!r} {reason}")
        self.name = name
        self.reason = reason
        self.status = status


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return kind
    return "not a regular file"


def open_regular(dir_fd: int, name: str, max_bytes: int) -> tuple[int, os.stat_result]:
    """Open ``name`` under ``dir_fd`` for reading if it is a regular file with one link and at most
    ``max_bytes`` bytes; return the fd (blocking again) and its ``fstat``.

    Raises FileNotFoundError when there is no such name, :class:`UnsafeFile` (naming what the name
    is) for anything else: a symlink, FIFO, socket, device, directory, a hard-linked file or one
    above the bound.
    """
    try:
        fd = os.open(name, OPEN_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise FileNotFoundError(name) from None
        if exc.errno == errno.ELOOP:
            raise UnsafeFile(name, "is a symbolic link: not read") from None
        if exc.errno == errno.ENXIO:
            raise UnsafeFile(name, "is a socket: not read") from None
        raise UnsafeFile(name, f"cannot be opened: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(name, f"is {_kind(st.st_mode)}: not read")
        if st.st_nlink != 1:
            raise UnsafeFile(name, f"has {st.st_nlink} hard links: not read")
        if st.st_size > max_bytes:
            raise UnsafeFile(name, f"is {st.st_size} bytes, above the limit of {max_bytes}", 413)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_regular(dir_fd: int, name: str, max_bytes: int) -> tuple[bytes, os.stat_result]:
    """The whole content of a regular workspace file (see :func:`open_regular`) and its ``fstat``:
    at most the size ``fstat`` gave, however the file grows meanwhile."""
    fd, st = open_regular(dir_fd, name, max_bytes)
    try:
        chunks = []
        left = st.st_size
        while left > 0:
            chunk = os.read(fd, min(CHUNK, left))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks), st
    finally:
        os.close(fd)


@dataclass(frozen=True)
class FileInfo:
    """One uploaded file as listed by ``GET /v1/files``."""

    name: str
    size: int

    def to_json(self) -> dict[str, object]:
        """JSON form."""
        return {"name": self.name, "size": self.size}


class Workspace:
    """Files under ``<workspace>/data``; user code sees them in its working directory.

    Every operation is relative to the directory fd :meth:`ensure` opens (``O_NOFOLLOW``): a
    symlink user code puts in place of the directory, or of any file in it, is never followed.
    The directory holds the uploaded files only: :meth:`sweep` (after every execution) removes
    whatever else user code left there, so what one execution leaves costs the next nothing.
    """

    def __init__(self, data_dir: str, max_upload_bytes: int) -> None:
        self.data_dir = data_dir
        self.max_upload_bytes = max_upload_bytes
        self._dir_fd: int | None = None
        self._lock = threading.Lock()
        self._uploaded: set[str] = set()
        self._writing: Counter[str] = Counter()  # names of uploads being written

    def ensure(self) -> None:
        """Create the data directory (owner-only) and open it; files already there count as uploaded."""
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        self._dir_fd = os.open(self.data_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with self._lock:
            self._uploaded = {f.name for f in self.list()}

    def sweep(self) -> int:
        """Remove every entry that is not an uploaded file (regular, singly linked) or an upload
        being written; return how many. Runs after each execution (user code may write here)."""
        if self._dir_fd is None:
            return 0
        removed = 0
        with os.scandir(self._dir_fd) as entries:
            for entry in entries:
                with self._lock:
                    if entry.name in self._writing:
                        continue
                    keep = entry.name in self._uploaded
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if keep and stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                    continue
                try:
                    if stat.S_ISDIR(st.st_mode):
                        shutil.rmtree(entry.name, dir_fd=self._dir_fd)
                    else:
                        os.unlink(entry.name, dir_fd=self._dir_fd)
                    removed += 1
                except OSError:
                    continue
                with self._lock:
                    self._uploaded.discard(entry.name)
        return removed

    @property
    def dir_fd(self) -> int:
        """The data directory's fd (after :meth:`ensure`)."""
        if self._dir_fd is None:
            raise wire.WireError("workspace", "the data directory is not open", 503)
        return self._dir_fd

    def writable(self) -> bool:
        """Whether uploads can be stored (readiness)."""
        if self._dir_fd is None:
            return False
        try:
            st = os.fstat(self._dir_fd)
            return st.st_nlink > 0 and os.access(".", os.W_OK | os.X_OK, dir_fd=self._dir_fd)
        except OSError:
            return False

    def list(self) -> list[FileInfo]:
        """Uploaded files (regular, singly linked), sorted by name."""
        out = []
        with os.scandir(self.dir_fd) as entries:
            for entry in entries:
                if not wire.FILE_NAME_RE.match(entry.name) or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_nlink == 1:
                    out.append(FileInfo(entry.name, st.st_size))
        return sorted(out, key=lambda f: f.name)

    def put(self, name: str, stream: BinaryIO, length: int | None) -> FileInfo:
        """Store a body atomically; WireError 413 over the cap, 507 when the disk is full."""
        wire.validate_file_name(name)
        if length is not None and length > self.max_upload_bytes:
            raise wire.WireError("body", f"{length} bytes exceeds max_upload_bytes={self.max_upload_bytes}", 413)
        tmp = f".upload-{uuid.uuid4().hex}"
        with self._lock:  # the sweep leaves both names alone until the upload is in the set
            self._writing.update((tmp, name))
        try:
            return self._write(name, tmp, stream, length)
        finally:
            with self._lock:
                self._writing.subtract((tmp, name))
                self._writing += Counter()  # drop the names at zero

    def _write(self, name: str, tmp: str, stream: BinaryIO, length: int | None) -> FileInfo:
        dir_fd = self.dir_fd
        size = 0
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=dir_fd)
        try:
            try:
                remaining = length
                while remaining is None or remaining > 0:
                    chunk = stream.read(CHUNK if remaining is None else min(CHUNK, remaining))
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > self.max_upload_bytes:
                        raise wire.WireError("body", f"exceeds max_upload_bytes={self.max_upload_bytes}", 413)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view):]
                    if remaining is not None:
                        remaining -= len(chunk)
            finally:
                os.close(fd)
            if length is not None and size != length:
                raise wire.WireError("body", f"got {size} of {length} bytes (Content-Length)")
            try:
                os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                with self._lock:
                    self._uploaded.add(name)
            except IsADirectoryError:
                raise wire.WireError("name", f"{name!r} is a directory in the workspace", 409) from None
        except OSError as exc:
            _unlink_quietly(tmp, dir_fd)
            if exc.errno in FULL_ERRNOS:
                raise wire.WireError("body", f"the workspace is full ({os.strerror(exc.errno)}) after "
                                             f"{size} bytes: delete files or upload less", 507) from None
            if exc.errno == errno.EFBIG:
                raise wire.WireError("body", f"the file size limit was reached after {size} bytes", 413) from None
            raise
        except BaseException:
            _unlink_quietly(tmp, dir_fd)
            raise
        return FileInfo(name, size)

    def open(self, name: str) -> tuple[BinaryIO, int] | None:
        """An open regular file and its size, or None if absent; WireError for anything else."""
        wire.validate_file_name(name)
        try:
            fd, st = open_regular(self.dir_fd, name, self.max_upload_bytes)
        except FileNotFoundError:
            return None
        except UnsafeFile as exc:
            raise wire.WireError("name", str(exc), exc.status) from None
        return os.fdopen(fd, "rb"), st.st_size

    def delete(self, name: str) -> bool:
        """Remove a file; False if it did not exist."""
        wire.validate_file_name(name)
        try:
            os.unlink(name, dir_fd=self.dir_fd)
            return True
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            raise wire.WireError("name", f"{name!r} is a directory in the workspace", 409) from None
        finally:
            with self._lock:
                self._uploaded.discard(name)


def _unlink_quietly(name: str, dir_fd: int) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
