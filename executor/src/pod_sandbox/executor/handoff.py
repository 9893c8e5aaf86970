"""Messages between the fork-server and the zygote: one JSON object per SEQPACKET datagram, with fds.

The zygote hands each new spare's pipe ends to the fork-server as ``SCM_RIGHTS`` ancillary data
on the same datagram as its facts, so a spare and its description always arrive together.

fork-server -> zygote: ``{"op": "spawn", "n": int}`` (fork n more spares),
``{"op": "cache", "seq": int, "names": [str]}`` (check and (re)load these datasets).

zygote -> fork-server: ``{"op": "ready", "pid": int}``, ``{"op": "spare", "pid", "generation",
"scratch"}`` + 4 fds (job_w, result_r, out_r, err_r), ``{"op": "exit", "pid", "status",
"maxrss_kb"}``, ``{"op": "spawn_failed", "error": str}``, ``{"op": "cached", "seq",
"generation", "checked": {name: [ino, size, mtime_ns] | null}, "cached": [name]}``.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

#: Largest datagram either side sends or accepts (the socket buffers are sized for it).
MAX_MESSAGE = 256 * 1024
SPARE_FDS = 4


class HandoffError(OSError):
    """A datagram that is truncated, not JSON, or carries the wrong number of fds."""


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """A connected AF_UNIX SEQPACKET pair (message boundaries kept, fds passable)."""
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for sock in (left, right):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MAX_MESSAGE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MAX_MESSAGE)
    return left, right


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    """Send one message (and fds) as one datagram."""
    data = json.dumps(message, separators=(",", ":")).encode("utf-8")
    if len(data) > MAX_MESSAGE:
        raise HandoffError(f"handoff message {message.get('op')!r} of {len(data)} bytes exceeds {MAX_MESSAGE}")
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def receive(sock: socket.socket) -> tuple[dict[str, Any], list[int]] | None:
    """One message and its fds; None on EOF. Raises BlockingIOError when nothing is queued."""
    data, fds, flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, SPARE_FDS)
    if not data and not fds:
        return None
    try:
        if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise HandoffError(f"handoff datagram truncated (flags {flags:#x})")
        message = json.loads(data)
        if not isinstance(message, dict) or not isinstance(message.get("op"), str):
            raise HandoffError(f"handoff datagram is not a message: {data[:80]!r}")
        expected = SPARE_FDS if message["op"] == "spare" else 0
        if len(fds) != expected:
            raise HandoffError(f"handoff {message['op']!r} carried {len(fds)} fds, expected {expected}")
    except (HandoffError, ValueError) as exc:
        for fd in fds:
            os.close(fd)
        if isinstance(exc, HandoffError):
            raise
        raise HandoffError(f"handoff datagram is not JSON: {exc}") from exc
    return message, list(fds)
