"""Run the executor the way a sandbox pod runs it: the pod template's limits, the shipped defaults.

The limits come from the pod_template role's defaults (``roles/pod_template/defaults/main.yml``),
never from numbers tuned for a test:

* memory: a memory cgroup (v1 or v2) limited to ``pod_template_memory_limit``, swap off, as the
  kubelet sets the container's cgroup; CPU: a CFS quota of ``pod_template_cpu_limit``;
* processes: a pids cgroup with ``PODLIKE_PIDS_BUDGET`` (the pod spec cannot carry a pids limit;
  the kubelet's ``podPidsLimit`` does, and the executor's shipped ``--max-processes`` is the
  budget its README asks ops to keep above: one figure, the executor's default);
* filesystem: a private mount namespace whose every mount is read-only
  (``readOnlyRootFilesystem``) but the pod's volumes: ``/tmp`` (``pod_template_tmp_size_limit``),
  the workspace (``pod_template_workspace_size_limit``; at ``<pod dir>/workspace``, since a
  read-only host root has no ``/workspace`` to mount on), the scratch volume
  (``pod_template_scratch_size_limit``, at ``pod_template_scratch_path``), each a tmpfs of that
  size, and a fresh 64 MiB ``/dev/shm`` (the container runtime's default);
* processes see a PID namespace of their own, the HTTP process is PID 1 (as in the pod);
* identity: ``pod_template_run_as_user``/``_group``, supplementary group ``pod_template_fs_group``;
* arguments: ``pod_template_args`` plus the template's own (``--scratch-root``); only the
  listen address differs (127.0.0.1 and a free port: no network namespace here).

It needs root (cgroups, namespaces, mounts); the tests skip where that is missing. A test
reaches the pod's files through ``/proc/<pid>/root`` (:meth:`PodlikeExecutor.host_path`).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from server_process import REPO, SECRET_ENV_VALUE, ExecutorProcess, free_port, server_python

ROLE_DEFAULTS = os.path.join(REPO, "roles", "pod_template", "defaults", "main.yml")
DEV_SHM_BYTES = 64 * 1024 * 1024  # docker's and containerd's default /dev/shm for a pod
_QUANTITY = re.compile(r"^([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T|m)?$")
_FACTORS = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40,
            "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def quantity(value: Any) -> float:
    """A Kubernetes quantity (``256Mi``, ``1Gi``, ``250m``, ``1``) as a number (bytes, cores)."""
    match = _QUANTITY.match(str(value).strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    number, suffix = float(match.group(1)), match.group(2)
    if suffix == "m":
        return number / 1000
    return number * _FACTORS[suffix]


@dataclass(frozen=True)
class PodLimits:
    """What the pod template gives the executor container."""

    memory_bytes: int
    cpu_cores: float
    tmp_bytes: int
    workspace_bytes: int
    scratch_bytes: int
    scratch_path: str
    uid: int
    gid: int
    fs_group: int
    pids: int
    args: tuple[str, ...]

    @classmethod
    def from_role_defaults(cls, path: str = ROLE_DEFAULTS) -> "PodLimits":
        """Read the pod_template role's defaults (plain values; templated ones are not used)."""
        with open(path, encoding="utf-8") as fh:
            d = yaml.safe_load(fh)
        from pod_sandbox.executor.config import Limits  # noqa: PLC0415 - the shipped default

        return cls(
            memory_bytes=int(quantity(d["pod_template_memory_limit"])),
            cpu_cores=quantity(d["pod_template_cpu_limit"]),
            tmp_bytes=int(quantity(d["pod_template_tmp_size_limit"])),
            workspace_bytes=int(quantity(d["pod_template_workspace_size_limit"])),
            scratch_bytes=int(quantity(d["pod_template_scratch_size_limit"])),
            scratch_path=str(d["pod_template_scratch_path"]),
            uid=int(d["pod_template_run_as_user"]),
            gid=int(d["pod_template_run_as_group"]),
            fs_group=int(d["pod_template_fs_group"]),
            pids=Limits().max_processes,
            args=tuple(str(a) for a in d["pod_template_args"] + d["pod_template_extra_args"]),
        )


def podlike_supported() -> str | None:
    """Why this machine cannot run a pod-like executor, or None."""
    if os.geteuid() != 0:
        return "needs root (cgroups, mount and PID namespaces)"
    if not shutil.which("unshare"):
        return "needs util-linux unshare"
    try:
        _cgroup_dirs("probe")
    except OSError as exc:
        return f"no usable memory/pids/cpu cgroup: {exc}"
    return None


def _own_cgroup(controller: str) -> str:
    """This process's cgroup path for ``controller`` (v1), or the unified one (``""`` key)."""
    with open("/proc/self/cgroup", encoding="ascii") as fh:
        for line in fh:
            _hid, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return path
    raise OSError(f"no {controller} cgroup in /proc/self/cgroup")


def _cgroup_dirs(name: str) -> dict[str, str]:
    """Where the pod's cgroups go: below this process's own, per controller."""
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):  # v2 only
        base = "/sys/fs/cgroup" + _own_cgroup("")
        return {"unified": os.path.join(base, name)}
    out = {}
    for controller in ("memory", "pids", "cpu"):
        root = f"/sys/fs/cgroup/{controller}"
        if not os.path.isdir(root):
            raise OSError(f"{root} is missing")
        out[controller] = os.path.join(root + _own_cgroup(controller), name)
    return out


def _read(path: str) -> str:
    """A small file's text, stripped ("" when it is not there yet)."""
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except FileNotFoundError:
        return ""


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as fh:
        fh.write(value)


def make_cgroups(name: str, limits: PodLimits) -> dict[str, str]:
    """Create the pod's cgroups with its memory, CPU and pids limits; return their directories."""
    dirs = _cgroup_dirs(name)
    for path in dirs.values():
        os.makedirs(path)
    period = 100_000
    quota = str(int(limits.cpu_cores * period))
    if "unified" in dirs:
        d = dirs["unified"]
        _write(os.path.join(d, "memory.max"), str(limits.memory_bytes))
        _write(os.path.join(d, "memory.swap.max"), "0")
        _write(os.path.join(d, "pids.max"), str(limits.pids))
        _write(os.path.join(d, "cpu.max"), f"{quota} {period}")
        return dirs
    _write(os.path.join(dirs["memory"], "memory.limit_in_bytes"), str(limits.memory_bytes))
    memsw = os.path.join(dirs["memory"], "memory.memsw.limit_in_bytes")
    if os.path.exists(memsw):
        _write(memsw, str(limits.memory_bytes))
    _write(os.path.join(dirs["pids"], "pids.max"), str(limits.pids))
    _write(os.path.join(dirs["cpu"], "cpu.cfs_period_us"), str(period))
    _write(os.path.join(dirs["cpu"], "cpu.cfs_quota_us"), quota)
    return dirs


def remove_cgroups(dirs: dict[str, str], timeout_s: float = 10.0) -> None:
    """Remove the pod's cgroups once their last process is gone."""
    deadline = time.monotonic() + timeout_s
    for path in dirs.values():
        while True:
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)


def memory_events(dirs: dict[str, str]) -> dict[str, int]:
    """OOM-kill and limit-hit counts of the pod's memory cgroup."""
    if "unified" in dirs:
        with open(os.path.join(dirs["unified"], "memory.events"), encoding="ascii") as fh:
            return {k: int(v) for k, v in (line.split() for line in fh)}
    d = dirs["memory"]
    out = {}
    with open(os.path.join(d, "memory.failcnt"), encoding="ascii") as fh:
        out["max"] = int(fh.read())
    with open(os.path.join(d, "memory.oom_control"), encoding="ascii") as fh:
        for line in fh:
            key, value = line.split()
            if key == "oom_kill":
                out["oom_kill"] = int(value)
    return out


@dataclass
class PodlikeExecutor(ExecutorProcess):
    """An :class:`ExecutorProcess` inside pod-like limits: ``pid`` is the HTTP process (PID 1 of
    its namespace), ``proc`` the launcher that waits for it."""

    limits: PodLimits | None = None
    cgroups: dict[str, str] | None = None
    server_pid: int = 0
    #: The executor's limits as ``GET /v1/info`` reports them (the hostile suite's fixture sets it).
    limits_info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.server_pid or self.proc.pid

    def host_path(self, path: str) -> str:
        """``path`` as the pod sees it, reachable from this (host) process."""
        return f"/proc/{self.pid}/root{path}"

    def scratch_dirs(self) -> list[str]:
        assert self.limits is not None
        try:
            return os.listdir(self.host_path(self.limits.scratch_path))
        except FileNotFoundError:
            return []

    def stop(self) -> None:
        super().stop()
        if self.cgroups:
            for path in self.cgroups.values():  # anything the launcher left behind
                procs = os.path.join(path, "cgroup.procs")
                try:
                    with open(procs, encoding="ascii") as fh:
                        for pid in fh.read().split():
                            try:
                                os.kill(int(pid), signal.SIGKILL)
                            except ProcessLookupError:
                                pass
                except FileNotFoundError:
                    pass
            remove_cgroups(self.cgroups)


def start_podlike(*extra_args: str, limits: PodLimits | None = None, token: str = "p" * 8 + "-podlike-token-0123456789",
                  claim: bool = True, env: dict[str, str] | None = None) -> PodlikeExecutor:
    """Start the executor with the pod's arguments and limits; claim it with ``token``."""
    why = podlike_supported()
    if why:
        raise RuntimeError(f"pod-like executor unavailable: {why}")
    limits = limits or PodLimits.from_role_defaults()
    root = tempfile.mkdtemp(prefix="podlike-", dir="/var/tmp")  # not below /tmp: that is a volume
    os.chmod(root, 0o755)
    name = f"podlike-{uuid.uuid4().hex[:12]}"
    cgroups = make_cgroups(name, limits)
    port = free_port()
    # The pod mounts its workspace volume at /workspace; a read-only host root has no such
    # directory, so the volume goes on one in this pod's own directory (only the path differs).
    workspace = os.path.join(root, "workspace")
    os.mkdir(workspace)
    plan = {
        "limits": asdict(limits), "cgroups": cgroups, "pid_file": os.path.join(root, "server.pid"),
        "argv": [server_python(), "-m", "pod_sandbox.executor", *limits.args, "--host", "127.0.0.1",
                 "--port", str(port), f"--scratch-root={limits.scratch_path}", "--workspace", workspace,
                 *extra_args],
        "env": {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "MPLCONFIGDIR": "/tmp/mpl",
                "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "NUMEXPR_NUM_THREADS": "1",
                "SANDBOX_TEST_SECRET": SECRET_ENV_VALUE, **(env or {})},
        "workspace": workspace,
    }
    log_path = os.path.join(root, "server.log")
    log = open(log_path, "wb")  # noqa: SIM115 - closed once the launcher has it
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--launch", json.dumps(plan)],
                            stdout=log, stderr=subprocess.STDOUT, cwd="/")
    log.close()
    server = PodlikeExecutor(port=port, proc=proc, root=root, token=token if claim else None,
                             token_file=None, args=plan["argv"], log_path=log_path,
                             limits=limits, cgroups=cgroups)
    try:
        deadline = time.monotonic() + 30
        while not _read(plan["pid_file"]):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pod-like launcher failed:\n{server.log()}")
            time.sleep(0.05)
        server.server_pid = int(_read(plan["pid_file"]))
        server.wait_ready()
        if claim:
            r = server.request("POST", "/v1/claim", json.dumps({"token": token}),
                               {"Content-Type": "application/json"}, auth=False)
            if r.status != 200:
                raise RuntimeError(f"claim failed: {r.status} {r.body[:200]!r}")
    except BaseException:
        server.stop()
        raise
    return server


# --- the launcher (runs as root, as its own process) ----------------------------------------

CLONE_NEWNS = 0x00020000
CLONE_NEWPID = 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
_libc = ctypes.CDLL(None, use_errno=True)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: None if s is None else s.encode())
    if _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} {target} {fstype}: {os.strerror(err)}")


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        points = [line.split()[4].replace("\\040", " ") for line in fh]
    return points


def _read_only_root() -> None:
    """Every mount read-only but the kernel's own (/proc, /sys, /dev): readOnlyRootFilesystem."""
    for point in _mount_points():
        if point in ("/proc", "/sys", "/dev") or point.startswith(("/proc/", "/sys/", "/dev/")):
            continue
        try:
            st = os.statvfs(point)
        except OSError:
            continue
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY
        for bit, mflag in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC)):
            if st.f_flag & bit:
                flags |= mflag
        try:
            _mount(None, point, None, flags)
        except OSError:
            continue  # stacked or vanished mounts


def _volume(target: str, size: int, limits: dict[str, Any]) -> None:
    """An emptyDir: a tmpfs of ``size`` bytes owned by root, group fsGroup with setgid, 2775."""
    _mount("tmpfs", target, "tmpfs", MS_NOSUID | MS_NODEV, f"size={size},mode=2775,gid={limits['fs_group']}")


def launch(plan: dict[str, Any]) -> int:
    """Join the cgroups, enter new mount and PID namespaces, set up the pod's filesystem, drop to
    the pod's uid and run the executor as PID 1; forward SIGTERM; return its exit status."""
    limits = plan["limits"]
    for path in plan["cgroups"].values():
        _write(os.path.join(path, "cgroup.procs"), str(os.getpid()))
    if _libc.unshare(CLONE_NEWNS | CLONE_NEWPID) != 0:
        raise OSError(ctypes.get_errno(), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates to the host
    pid = os.fork()
    if pid == 0:
        try:
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            _read_only_root()
            _volume("/tmp", limits["tmp_bytes"], limits)
            os.mkdir(limits["scratch_path"])
            _volume(limits["scratch_path"], limits["scratch_bytes"], limits)
            _volume(plan["workspace"], limits["workspace_bytes"], limits)
            _mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={DEV_SHM_BYTES},mode=1777")
            os.setsid()  # a container's first process leads its own session and group
            os.setgroups([limits["fs_group"]])
            os.setgid(limits["gid"])
            os.setuid(limits["uid"])
            os.chdir("/tmp")
            os.execve(plan["argv"][0], plan["argv"], plan["env"])
        except BaseException as exc:  # noqa: BLE001 - report and die: the test reads the log
            os.write(2, f"pod-like launch failed: {exc!r}\n".encode())
            os._exit(127)
    with open(plan["pid_file"], "w", encoding="ascii") as fh:
        fh.write(str(pid))
    signal.signal(signal.SIGTERM, lambda *_: os.kill(pid, signal.SIGTERM))
    signal.signal(signal.SIGINT, lambda *_: os.kill(pid, signal.SIGTERM))
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        except InterruptedError:
            continue


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--launch":
    sys.exit(launch(json.loads(sys.argv[2])))
