"""Start a real executor process for tests (as uid 10001 when run as root) and talk to it over HTTP."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

SANDBOX_UID = 10001
SECRET_ENV_VALUE = "server-env-secret-4f1c9a0d7e"


REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def server_python() -> str:
    """The interpreter for the server: one the sandbox uid may execute when we run as root."""
    explicit = os.environ.get("SANDBOX_TEST_PYTHON")
    if explicit:
        return explicit
    if os.geteuid() != 0:
        return sys.executable
    candidate = os.path.join(REPO, ".venv-sandbox", "bin", "python")
    if not os.path.exists(candidate):
        raise RuntimeError(
            "running as root: the executor under test runs as uid 10001 and needs an interpreter "
            "that uid can execute; run executor/scripts/make-sandbox-venv.sh (scripts/test-unit.sh does)")
    return candidate


def sandbox_uid_tasks() -> int:
    """Processes and threads the sandbox uid runs on this host now (what RLIMIT_NPROC counts)."""
    uid = SANDBOX_UID if os.geteuid() == 0 else os.geteuid()
    total = 0
    for p in psutil.process_iter(["uids", "num_threads"]):
        try:
            if p.info["uids"].real == uid:
                total += p.info["num_threads"] or 1
        except (psutil.NoSuchProcess, TypeError):
            continue
    return total


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Response:
    """A decoded HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


@dataclass
class ExecutorProcess:
    """One executor server process and its temporary directories."""

    port: int
    proc: subprocess.Popen
    root: str
    token: str | None
    token_file: str | None
    args: list[str]
    log_path: str
    _local: threading.local = field(default_factory=threading.local)

    @property
    def pid(self) -> int:
        """The HTTP process's pid."""
        return self.proc.pid

    def conn(self) -> http.client.HTTPConnection:
        """A keep-alive connection for this thread."""
        c = getattr(self._local, "conn", None)
        if c is None:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            self._local.conn = c
        return c

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None, auth: bool = True) -> Response:
        """One request on this thread's connection (reconnects once if the server closed it)."""
        hdrs = dict(headers or {})
        if auth and self.token and "Authorization" not in hdrs:
            hdrs["Authorization"] = f"Bearer {self.token}"
        for attempt in range(2):
            c = self.conn()
            try:
                c.request(method, path, body=body, headers=hdrs)
                r = c.getresponse()
                data = r.read()
                return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    http.client.CannotSendRequest):
                c.close()
                self._local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def execute(self, code: str, **fields: Any) -> Response:
        """POST /v1/execute."""
        return self.request("POST", "/v1/execute", json.dumps({"code": code, **fields}),
                            {"Content-Type": "application/json"})

    def run(self, code: str, **fields: Any) -> dict[str, Any]:
        """Execute and return the JSON body, asserting HTTP 200."""
        r = self.execute(code, **fields)
        assert r.status == 200, (r.status, r.body[:500])
        return r.json()

    def tree(self) -> list[psutil.Process]:
        """The server and every descendant."""
        try:
            top = psutil.Process(self.pid)
            return [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def sandbox_user_processes(self) -> list[psutil.Process]:
        """Every live (non-zombie) process owned by the sandbox uid, inside the tree or not."""
        uid = SANDBOX_UID if os.geteuid() == 0 else os.geteuid()
        out = []
        for p in psutil.process_iter(["uids", "status"]):
            try:
                if p.info["uids"].real == uid and p.info["status"] != psutil.STATUS_ZOMBIE:
                    out.append(p)
            except (psutil.NoSuchProcess, TypeError):
                continue
        return out

    def idle_spares(self) -> int:
        """Spare children kept ready (``--spares``, default 2)."""
        spares = 2
        for i, a in enumerate(self.args):
            if a == "--spares":
                spares = int(self.args[i + 1])
        return spares

    def idle_process_count(self) -> int:
        """HTTP process + fork-server + zygote + spares: what must remain once work is over."""
        return 3 + self.idle_spares()

    def roles(self) -> dict[str, list[psutil.Process]]:
        """The live tree by role: ``http``, ``forkserver``, ``zygote``, ``spare`` (children of a
        zygote) and ``other`` (anything deeper or elsewhere)."""
        tree = [p for p in self.tree() if _alive(p)]
        out: dict[str, list[psutil.Process]] = {"http": [], "forkserver": [], "zygote": [], "spare": [], "other": []}
        if not tree:
            return out
        out["http"] = [tree[0]]
        parent_role = {tree[0].pid: "http"}
        below = {"http": "forkserver", "forkserver": "zygote", "zygote": "spare"}
        pending = tree[1:]
        while pending:  # parents before children, whatever order psutil listed them in
            progressed = False
            for p in list(pending):
                ppid = _ppid(p)
                if ppid in parent_role:
                    role = below.get(parent_role[ppid], "other")
                    out[role].append(p)
                    parent_role[p.pid] = role
                    pending.remove(p)
                    progressed = True
            if not progressed:
                out["other"].extend(pending)
                break
        return out

    def spare_minor_faults(self) -> list[int]:
        """Minor page faults so far of each child of the zygote (field 10 of /proc/<pid>/stat)."""
        faults = []
        for spare in self.roles()["spare"]:
            try:
                with open(f"/proc/{spare.pid}/stat", encoding="ascii") as fh:
                    faults.append(int(fh.read().rsplit(")", 1)[1].split()[7]))
            except OSError:
                continue  # gone meanwhile
        return faults

    def long_lived(self) -> list[psutil.Process]:
        """HTTP process, fork-server and zygote (the processes that hold memory across executions)."""
        roles = self.roles()
        return roles["http"] + roles["forkserver"] + roles["zygote"]

    def leftovers(self) -> list[psutil.Process]:
        """Processes beyond HTTP process + fork-server + zygote + its idle spares, or outside the tree."""
        roles = self.roles()
        if not roles["http"]:
            return []
        extra = (roles["other"] + roles["forkserver"][1:] + roles["zygote"][1:]
                 + roles["spare"][self.idle_spares():])
        tree_pids = {p.pid for ps in roles.values() for p in ps}
        for p in self.sandbox_user_processes():
            if p.pid not in tree_pids and _cwd_under(p, self.root):
                extra.append(p)
        return extra

    def wait_no_leftovers(self, timeout_s: float = 10.0) -> list[psutil.Process]:
        """Wait until only the idle processes remain; return the extras still there."""
        deadline = time.monotonic() + timeout_s
        extra = self.leftovers()
        while extra and time.monotonic() < deadline:
            time.sleep(0.1)
            extra = self.leftovers()
        return extra

    def scratch_dirs(self) -> list[str]:
        """Per-execution scratch directories present now (spares own one each)."""
        try:
            return os.listdir(os.path.join(self.root, "tmp", "scratch"))
        except FileNotFoundError:
            return []

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Poll /ready until 200."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"executor exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if self.request("GET", "/ready").status == 200:
                    return
            except OSError:
                self._local.conn = None
            time.sleep(0.1)
        raise RuntimeError(f"executor not ready after {timeout_s}s:\n{self.log()}")

    def log(self) -> str:
        """The server's combined output so far."""
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()[-20000:]

    def stop(self) -> None:
        """SIGTERM by pid, then SIGKILL the tree if needed; remove the temporary directories."""
        tree = self.tree()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                for p in tree:
                    try:
                        p.kill()
                    except psutil.NoSuchProcess:
                        pass
                self.proc.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)


def _alive(p: psutil.Process) -> bool:
    try:
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _ppid(p: psutil.Process) -> int:
    try:
        return p.ppid()
    except psutil.NoSuchProcess:
        return -1


def _cwd_under(p: psutil.Process, root: str) -> bool:
    try:
        return p.cwd().startswith(root)
    except (psutil.NoSuchProcess, psutil.AccessDenied, OSError):
        return False


def start_executor(*extra_args: str, token: str | None = "t" * 8 + "-test-token-0123456789abcdef",
                   claimable: bool = False, env: dict[str, str] | None = None) -> ExecutorProcess:
    """Start ``python -m pod_sandbox.executor`` on a free port; wait until ready."""
    root = tempfile.mkdtemp(prefix="pod-sandbox-test-")
    os.chmod(root, 0o755)
    for sub in ("workspace", "tmp", "secrets"):
        os.makedirs(os.path.join(root, sub))
    token_file = None
    if token is not None and not claimable:
        token_file = os.path.join(root, "secrets", "token")
        with open(token_file, "w", encoding="utf-8") as fh:
            fh.write(token)
        os.chmod(token_file, 0o400)
    as_root = os.geteuid() == 0
    if as_root:
        for dirpath, _dirs, files in os.walk(root):
            os.chown(dirpath, SANDBOX_UID, SANDBOX_UID)
            for name in files:
                os.chown(os.path.join(dirpath, name), SANDBOX_UID, SANDBOX_UID)
    port = free_port()
    args = [server_python(), "-m", "pod_sandbox.executor", "--host", "127.0.0.1", "--port", str(port),
            "--workspace", os.path.join(root, "workspace"),
            "--scratch-root", os.path.join(root, "tmp", "scratch"), *extra_args]
    if token_file:
        args += ["--token-file", token_file]
    if claimable:
        args += ["--claimable"]
    child_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.path.join(root, "tmp"),
        "TMPDIR": os.path.join(root, "tmp"),
        "MPLCONFIGDIR": os.path.join(root, "tmp", "mpl"),
        "SANDBOX_TEST_SECRET": SECRET_ENV_VALUE,
        "LANG": "C.UTF-8",
    }
    child_env.update(env or {})
    log_path = os.path.join(root, "server.log")
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process
    kwargs: dict[str, Any] = {}
    if as_root:
        kwargs = {"user": SANDBOX_UID, "group": SANDBOX_UID, "extra_groups": []}
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=child_env,
                            cwd=os.path.join(root, "tmp"), **kwargs)
    log.close()
    server = ExecutorProcess(port=port, proc=proc, root=root, token=None if claimable else token,
                             token_file=token_file, args=args, log_path=log_path)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


class HealthPoller:
    """Polls /health from its own thread and connection; records failures and the worst latency."""

    def __init__(self, server: ExecutorProcess, interval_s: float = 0.05) -> None:
        self.server = server
        self.interval_s = interval_s
        self.failures: list[str] = []
        self.worst_s = 0.0
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "HealthPoller":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=5)
        while not self._stop.is_set():
            t0 = time.perf_counter()
            try:
                conn.request("GET", "/health")
                r = conn.getresponse()
                body = r.read()
                if r.status != 200 or json.loads(body) != {"status": "ok"}:
                    self.failures.append(f"{r.status} {body[:100]!r}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=5)
            self.worst_s = max(self.worst_s, time.perf_counter() - t0)
            self.polls += 1
            self._stop.wait(self.interval_s)
        conn.close()
