"""--token-file: the token is gone from the filesystem once read, whatever user code then does;
a token file the server cannot remove (or that has another name) stops it from starting."""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Callable, Iterator

import pytest

from server_process import SANDBOX_UID, ExecutorProcess, free_port, server_python, start_executor

TOKEN = "tok-" + "Q7x" * 12


@pytest.fixture(scope="module")
def token_server() -> Iterator[ExecutorProcess]:
    proc = start_executor("--slots", "2", token=TOKEN)
    yield proc
    proc.stop()


def test_the_token_file_is_gone_once_the_server_listens(token_server: ExecutorProcess) -> None:
    assert token_server.token_file and not os.path.lexists(token_server.token_file)
    assert token_server.request("GET", "/v1/info").status == 200  # and the token works


SEARCH = """
import os, stat
path = TOKEN_FILE
found = []
try:
    os.chmod(path, 0o600)
except OSError as exc:
    found.append(f'chmod: {type(exc).__name__}')
for opener in (lambda: open(path).read(), lambda: open(os.path.dirname(path) + '/..data/token').read()):
    try:
        if TOKEN in opener():
            found.append('LEAK: read the token file')
    except OSError:
        pass
# Every file the uid can reach under the test's root, the workspace, /tmp and /dev/shm.
for top in (ROOT, '/tmp', '/dev/shm', os.getcwd()):
    for dirpath, dirs, files in os.walk(top):
        for name in files:
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
                if stat.S_ISREG(st.st_mode) and st.st_size < 1 << 20:
                    if TOKEN.encode() in open(p, 'rb').read():
                        found.append('LEAK: ' + p)
            except OSError:
                pass
# The server processes' own views: fds, environment, command lines.
for pid in os.listdir('/proc'):
    if not pid.isdigit():
        continue
    for what in ('environ', 'cmdline'):
        try:
            if TOKEN.encode() in open(f'/proc/{pid}/{what}', 'rb').read():
                found.append(f'LEAK: /proc/{pid}/{what}')
        except OSError:
            pass
    try:
        for fd in os.listdir(f'/proc/{pid}/fd'):
            try:
                target = os.readlink(f'/proc/{pid}/fd/{fd}')
                if 'token' in target:
                    found.append(f'LEAK: /proc/{pid}/fd/{fd} -> {target}')
            except OSError:
                pass
    except OSError:
        pass
result = {'type': 'string', 'value': '\\n'.join(found)}
"""


def test_user_code_cannot_find_the_token_anywhere(token_server: ExecutorProcess) -> None:
    code = (SEARCH.replace("TOKEN_FILE", repr(token_server.token_file)).replace("ROOT", repr(token_server.root))
            .replace("TOKEN in", f"{TOKEN!r} in").replace("TOKEN.encode()", f"{TOKEN!r}.encode()"))
    body = token_server.run(code, timeout_s=60)
    assert body["status"] == "ok", body
    assert "LEAK" not in body["result"]["value"], body["result"]["value"]


def _dir_not_writable(secrets: str, token_file: str) -> None:
    os.chmod(secrets, 0o555)


def _symlink(secrets: str, token_file: str) -> None:
    real = os.path.join(secrets, "real-token")
    os.rename(token_file, real)
    os.symlink(real, token_file)


def _hard_link(secrets: str, token_file: str) -> None:
    os.link(token_file, os.path.join(secrets, "other-name"))


def _fifo(secrets: str, token_file: str) -> None:
    os.unlink(token_file)
    os.mkfifo(token_file)


def _oversized(secrets: str, token_file: str) -> None:
    with open(token_file, "a") as fh:
        fh.write("x" * 5000)


UNSAFE: dict[str, tuple[Callable[[str, str], None], str]] = {
    "directory_not_writable": (_dir_not_writable, "cannot be removed"),
    "symlink": (_symlink, "symbolic link"),
    "hard_link": (_hard_link, "hard link"),
    "fifo": (_fifo, "not a regular file"),
    "oversized": (_oversized, "bytes"),
}


@pytest.mark.parametrize("kind", sorted(UNSAFE))
def test_a_token_file_that_would_stay_readable_stops_the_server(kind: str) -> None:
    plant, message = UNSAFE[kind]
    root = tempfile.mkdtemp(prefix="pod-sandbox-token-")
    secrets = os.path.join(root, "secrets")
    os.makedirs(os.path.join(root, "workspace"))
    os.makedirs(os.path.join(root, "tmp"))
    os.makedirs(secrets)
    token_file = os.path.join(secrets, "token")
    with open(token_file, "w") as fh:
        fh.write(TOKEN)
    as_root = os.geteuid() == 0
    try:
        if as_root:
            for dirpath, _dirs, files in os.walk(root):
                os.chown(dirpath, SANDBOX_UID, SANDBOX_UID)
                for name in files:
                    os.chown(os.path.join(dirpath, name), SANDBOX_UID, SANDBOX_UID)
        plant(secrets, token_file)
        if as_root:
            for name in os.listdir(secrets):
                os.lchown(os.path.join(secrets, name), SANDBOX_UID, SANDBOX_UID)
        kwargs = {"user": SANDBOX_UID, "group": SANDBOX_UID, "extra_groups": []} if as_root else {}
        proc = subprocess.run(
            [server_python(), "-m", "pod_sandbox.executor", "--port", str(free_port()),
             "--workspace", os.path.join(root, "workspace"), "--scratch-root", os.path.join(root, "tmp", "s"),
             "--token-file", token_file],
            capture_output=True, text=True, timeout=120, cwd=os.path.join(root, "tmp"),
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": os.path.join(root, "tmp"),
                 "HOME": os.path.join(root, "tmp"), "MPLCONFIGDIR": os.path.join(root, "tmp", "mpl")},
            **kwargs)
        assert proc.returncode != 0, proc.stderr[-2000:]
        assert message in proc.stderr and token_file in proc.stderr, proc.stderr[-2000:]
        assert TOKEN not in proc.stderr and "Traceback" not in proc.stderr
    finally:
        os.chmod(secrets, 0o755)
        subprocess.run(["rm", "-rf", root], check=False)
