"""Length-prefixed frames over file descriptors and sockets (fork-server and child protocol)."""

from __future__ import annotations

import json
import os
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!I")
MAX_FRAME = 1 << 30


class FrameError(EOFError):
    """The peer closed the channel mid-frame or sent an impossible length."""


def _read_exact_fd(fd: int, size: int) -> bytes | None:
    chunks = []
    remaining = size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            if remaining == size:
                return None
            raise FrameError(f"fd {fd}: closed after {size - remaining}/{size} bytes")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame_fd(fd: int) -> bytes | None:
    """One frame from a blocking fd; None on a clean EOF before the frame starts."""
    head = _read_exact_fd(fd, _HEADER.size)
    if head is None:
        return None
    (size,) = _HEADER.unpack(head)
    if size > MAX_FRAME:
        raise FrameError(f"fd {fd}: frame of {size} bytes is too large")
    body = _read_exact_fd(fd, size) if size else b""
    if body is None:
        raise FrameError(f"fd {fd}: closed before the frame body")
    return body


def write_all_fd(fd: int, data: bytes) -> None:
    """Write all of ``data`` to a blocking fd."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def frame(payload: bytes) -> bytes:
    """One frame's bytes (for a writer that sends them itself, e.g. to a non-blocking pipe)."""
    return _HEADER.pack(len(payload)) + payload


def write_frame_fd(fd: int, payload: bytes) -> None:
    """Write one frame to a blocking fd."""
    write_all_fd(fd, frame(payload))


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], min(size - got, 1 << 20))
        if n == 0:
            if got == 0:
                return None
            raise FrameError(f"socket closed after {got}/{size} bytes")
        got += n
    return bytes(buf)


def recv_frame(sock: socket.socket) -> bytes | None:
    """One frame from a socket (honours its timeout); None on a clean EOF before the frame."""
    head = _recv_exact(sock, _HEADER.size)
    if head is None:
        return None
    (size,) = _HEADER.unpack(head)
    if size > MAX_FRAME:
        raise FrameError(f"frame of {size} bytes is too large")
    if size == 0:
        return b""
    body = _recv_exact(sock, size)
    if body is None:
        raise FrameError("socket closed before the frame body")
    return body


def send_frame(sock: socket.socket, payload: bytes) -> None:
    """Send one frame on a socket."""
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def send_frames(sock: socket.socket, payloads: list[bytes]) -> None:
    """Send several frames with one sendall (one wake-up of the reader instead of one per frame)."""
    sock.sendall(b"".join(_HEADER.pack(len(p)) + p for p in payloads))


def dumps(obj: Any) -> bytes:
    """Compact strict JSON bytes."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
