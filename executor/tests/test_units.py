"""Unit tests of the server's pieces: config, status decisions, auth, workspace, framing, seccomp."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import socket

import pytest
from forked import in_child

from pod_sandbox import wire
from pod_sandbox.executor import framing, isolation
from pod_sandbox.executor.auth import ClaimResult, TokenStore
from pod_sandbox.executor.config import load_config
from pod_sandbox.executor.files import Workspace
from pod_sandbox.executor.runner import decide


def test_config_flags_beat_env_beat_defaults():
    cfg = load_config(["--slots", "3", "--timeout", "5"], {"SANDBOX_SLOTS": "7", "SANDBOX_MEMORY_MB": "256",
                                                          "SANDBOX_CLAIMABLE": "1"})
    assert cfg.limits.slots == 3 and cfg.limits.default_timeout_s == 5
    assert cfg.limits.memory_limit_bytes == 256 << 20
    assert cfg.claimable and cfg.threads == 7
    assert cfg.spares == 2 and cfg.limits.max_open_files == 256
    cfg = load_config(["--max-file-bytes", "1000", "--max-open-files", "32"], {"SANDBOX_SPARES": "0"})
    assert cfg.limits.max_file_bytes == 1000 and cfg.limits.max_open_files == 32 and cfg.spares == 0
    with pytest.raises(SystemExit):
        load_config(["--slots", "0"], {})
    with pytest.raises(SystemExit):
        load_config(["--max-open-files", "3"], {})
    with pytest.raises(SystemExit):
        load_config([], {"SANDBOX_PORT": "eighty"})


def test_child_nice_setting(capsys):
    assert load_config([], {}).limits.child_nice == 5
    assert load_config([], {"SANDBOX_CHILD_NICE": "0"}).limits.child_nice == 0
    assert load_config(["--child-nice", "19"], {"SANDBOX_CHILD_NICE": "3"}).limits.child_nice == 19
    for argv, env in ((["--child-nice", "20"], {}), ([], {"SANDBOX_CHILD_NICE": "-1"})):
        with pytest.raises(SystemExit, match="child_nice"):
            load_config(argv, env)


HEADER = {"exit_code": 0, "signal": None, "timed_out": False, "result_too_large": False}


def test_decide_statuses():
    ok = json.dumps({"status": "ok", "result": {"type": "number", "value": 1}, "error": None}).encode()
    assert decide(HEADER, ok, 5, 10)[0] == "ok"
    assert decide({**HEADER, "timed_out": True}, ok, 5, 10)[0] == "timeout"
    assert decide({**HEADER, "signal": signal.SIGXCPU, "exit_code": None}, b"", 5, 10)[0] == "timeout"
    assert decide({**HEADER, "signal": signal.SIGSEGV, "exit_code": None}, b"", 5, 10)[0] == "killed"
    assert decide({**HEADER, "result_too_large": True}, b"", 5, 10)[2]["type"] == "ResultTooLarge"
    assert decide({**HEADER, "exit_code": 3}, b"", 5, 10)[2]["type"] == "ExitedWithoutResult"
    assert decide(HEADER, b"garbage", 5, 10)[2]["type"] == "ResultError"
    forged = json.dumps({"status": "ok", "result": {"type": "plot", "value": "/etc/passwd"}}).encode()
    assert decide(HEADER, forged, 5, 10)[0] == "error"
    mem = json.dumps({"status": "memory", "result": None,
                      "error": {"type": "MemoryError", "message": "", "traceback": "tb"}}).encode()
    assert decide(HEADER, mem, 5, 10)[0] == "memory"


def test_token_store_claim_and_check():
    store = TokenStore(None, claimable=True)
    assert store.auth_enabled and not store.check("Bearer " + "a" * 40)
    with pytest.raises(wire.WireError):
        store.claim("short")
    assert store.claim("a" * 40) is ClaimResult.CLAIMED
    assert store.claim("b" * 40) is ClaimResult.CONFLICT
    assert store.check("Bearer " + "a" * 40) and store.check("bearer " + "a" * 40)
    assert not store.check("Basic " + "a" * 40)
    open_store = TokenStore(None, claimable=False)
    assert open_store.check(None) and open_store.claim("a" * 40) is ClaimResult.CONFLICT


def test_token_file_is_removed_once_read(tmp_path):
    path = tmp_path / "token"
    path.write_text("z" * 40 + "\n")
    store = TokenStore.from_file(str(path), claimable=False)
    assert store.check("Bearer " + "z" * 40)
    assert not os.path.lexists(path)
    with pytest.raises(SystemExit):
        TokenStore.from_file(str(tmp_path / "missing"), False)


def test_workspace_caps_and_atomic_put(tmp_path):
    ws = Workspace(str(tmp_path / "data"), max_upload_bytes=10)
    ws.ensure()
    assert ws.put("a.csv", io.BytesIO(b"12345"), 5).size == 5
    with pytest.raises(wire.WireError) as exc:
        ws.put("b.csv", io.BytesIO(b"x" * 11), None)
    assert exc.value.http_status == 413
    with pytest.raises(wire.WireError):
        ws.put("c.csv", io.BytesIO(b"x" * 3), 5)
    assert [f.name for f in ws.list()] == ["a.csv"]
    assert os.listdir(ws.data_dir) == ["a.csv"]
    with pytest.raises(wire.WireError):
        ws.open("../x")


def test_framing_roundtrip():
    a, b = socket.socketpair()
    framing.send_frame(a, b"hello")
    framing.send_frame(a, b"")
    assert framing.recv_frame(b) == b"hello" and framing.recv_frame(b) == b""
    a.close()
    assert framing.recv_frame(b) is None
    r, w = os.pipe()
    framing.write_frame_fd(w, b"x" * 1000)
    assert framing.read_frame_fd(r) == b"x" * 1000
    os.close(w)
    assert framing.read_frame_fd(r) is None


def test_seccomp_blocks_inet_sockets_and_signals_to_protected_pids():
    me = os.getpid()

    def body() -> int:
        isolation.install_seccomp((me,))
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                socket.socket(family, socket.SOCK_STREAM)
                return 1
            except PermissionError as exc:
                assert exc.errno == errno.EACCES
        a, b = socket.socketpair()  # AF_UNIX stays usable
        a.close(), b.close()
        for target in (me, -os.getpgid(me), -1):
            try:
                os.kill(target, 0)
                return 2
            except PermissionError:
                pass
        os.kill(os.getpid(), 0)
        try:
            os.setsid()
            return 3
        except PermissionError:
            pass
        return 0

    assert in_child(body) == 0


def test_seccomp_layers_stack_to_the_whole_filter():
    """The zygote's base layer leaves setsid/setpgid to the session layer each spare adds after
    its own setsid(); together they deny what the one-piece filter denies."""
    me = os.getpid()
    layers = isolation.compile_seccomp_layers((me,))

    def spare() -> int:
        os.setsid()  # the base layer allows it: the spare needs its own session
        isolation.load_seccomp(layers.sessions)
        for call in (os.setsid, lambda: os.setpgid(0, 0)):
            try:
                call()
                return 3
            except PermissionError:
                pass
        return 0

    def zygote() -> int:
        isolation.load_seccomp(layers.base)
        try:
            socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            return 1
        except PermissionError:
            pass
        try:
            os.kill(me, 0)
            return 2
        except PermissionError:
            pass
        return in_child(spare)

    assert in_child(zygote) == 0


def test_scrubbed_environment_is_prepared_once_and_pointed_at_each_scratch(tmp_path):
    root = str(tmp_path / "scratch") + "/"  # a trailing slash as a user may write it

    def body() -> int:
        os.environ["SANDBOX_TOKEN_FILE"] = "/secret/token"
        os.environ.pop("MPLCONFIGDIR", None)
        variables = isolation.scrub_environment(root)
        if "SANDBOX_TOKEN_FILE" in os.environ:
            return 1
        if dict(variables) != {"HOME": "", "TMPDIR": "", "MPLCONFIGDIR": "/.mpl"}:
            return 2
        scratch = os.path.join(root, "x-1")
        isolation.enter_scratch(scratch, variables)
        return 0 if dict(os.environ) == isolation.scrubbed_environment(scratch) else 3

    assert in_child(body) == 0


def test_rlimits_and_dumpable():
    def body() -> int:
        isolation.apply_rlimits(isolation.ChildLimits(cpu_seconds=5, address_space_bytes=isolation.address_space_bytes() + (64 << 20),
                                                      max_processes=50, max_file_bytes=1000, max_open_files=64))
        try:
            bytearray(256 << 20)
            return 1
        except MemoryError:
            pass
        isolation.make_undumpable()
        return 0 if not isolation.is_dumpable() else 2

    assert in_child(body) == 0
