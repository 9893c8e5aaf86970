"""Kernel-level confinement: prctl flags, rlimits and the seccomp filter for user-code children."""

from __future__ import annotations

import ctypes
import errno
import math
import os
import resource
import signal
import socket
from dataclasses import dataclass
from typing import Any, Iterable

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_DUMPABLE = 3

_libc = ctypes.CDLL(None, use_errno=True)
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.prctl.restype = ctypes.c_int

#: Syscalls user code never needs and that would let it reach past its process (EPERM); with
#: :data:`SESSION_SYSCALLS` below, which live in a layer of their own (see :class:`SeccompLayers`).
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "bpf", "perf_event_open", "userfaultfd",
    "keyctl", "add_key", "request_key", "unshare", "setns", "mount", "umount2", "pivot_root",
    "chroot", "io_uring_setup", "io_uring_enter", "io_uring_register", "pidfd_open",
    "pidfd_send_signal", "pidfd_getfd", "tkill", "kexec_load", "init_module",
    "finit_module", "delete_module", "acct", "swapon", "swapoff", "reboot", "fanotify_init",
    "open_by_handle_at", "name_to_handle_at", "move_mount", "open_tree", "fsopen", "fsmount",
    "mbind", "migrate_pages", "move_pages", "set_mempolicy", "quotactl", "lookup_dcookie",
    "vmsplice",
)
#: Signal-sending syscalls whose first argument is a pid; denied when it names a server process.
SIGNAL_SYSCALLS = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
#: Syscalls that change another process's limits or scheduling when their first argument is a
#: pid other than 0 (this process): denied that way, since the server's processes share the uid
#: (prlimit of RLIMIT_NOFILE to 3 on the zygote stopped every later execution).
SELF_ONLY_SYSCALLS = ("prlimit64", "sched_setscheduler", "sched_setparam", "sched_setattr",
                      "sched_setaffinity")
PRIO_PROCESS = 0
IOPRIO_WHO_PROCESS = 1
_U32 = 0xFFFFFFFF


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    """Call prctl(2); raise OSError on failure."""
    rc = _libc.prctl(option, arg2, arg3, 0, 0)
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}, {arg2}): {os.strerror(err)}")
    return rc


def make_undumpable() -> None:
    """No core dumps, no ptrace, /proc/<pid>/{environ,mem,fd} owned by root: hides the token."""
    prctl(PR_SET_DUMPABLE, 0)


#: The kernel's OOM killer picks the zygote and user code before the HTTP process and the
#: fork-server (the most a process may raise its own score to).
OOM_SCORE_ADJ_USER_CODE = 1000


def raise_oom_score_adj(value: int = OOM_SCORE_ADJ_USER_CODE) -> None:
    """Raise this process's ``oom_score_adj`` (inherited by every process it forks).

    A non-dumpable process's /proc files belong to root, so it turns dumpable for the write:
    the zygote does this once, before it has any child that could look at it meanwhile."""
    was_dumpable = is_dumpable()
    prctl(PR_SET_DUMPABLE, 1)
    try:
        with open("/proc/self/oom_score_adj", "w", encoding="ascii") as fh:
            fh.write(str(value))
    finally:
        if not was_dumpable:
            prctl(PR_SET_DUMPABLE, 0)


def _cgroup_files(v1_controller: str) -> list[str]:
    """The directories of this process's cgroup and its ancestors, innermost first, as mounted
    here (in a container the cgroup namespace or the runtime's mount shows its own as root)."""
    try:
        with open("/proc/self/cgroup", encoding="ascii") as fh:
            lines = [line.rstrip("\n").split(":", 2) for line in fh]
    except OSError:
        return []
    out = []
    for _hid, controllers, path in lines:
        if controllers == "":
            base = "/sys/fs/cgroup"
        elif v1_controller in controllers.split(","):
            base = f"/sys/fs/cgroup/{v1_controller}"
        else:
            continue
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), -1, -1):
            out.append(os.path.join(base, *parts[:depth]))
    return out


def pod_memory() -> tuple[int, int] | None:
    """The tightest memory limit of this process's cgroups and the usage charged there now
    (bytes), or None when no limit applies (cgroup v2 ``memory.max``, v1 ``limit_in_bytes``)."""
    best: tuple[int, int] | None = None
    for directory in _cgroup_files("memory"):
        for limit_name, usage_name in (("memory.max", "memory.current"),
                                       ("memory.limit_in_bytes", "memory.usage_in_bytes")):
            try:
                with open(os.path.join(directory, limit_name), encoding="ascii") as fh:
                    raw = fh.read().strip()
                with open(os.path.join(directory, usage_name), encoding="ascii") as fh:
                    usage = int(fh.read())
            except (OSError, ValueError):
                continue
            if raw == "max" or not raw.isdigit() or int(raw) >= 1 << 60:
                continue
            if best is None or int(raw) - usage < best[0] - best[1]:
                best = (int(raw), usage)
    return best


def execution_memory_bytes(configured: int) -> int:
    """What one execution may allocate on top of the warm interpreter: ``configured``
    (``--memory-mb``), but never more than three quarters of what the pod's memory cgroup has
    left now (the rest is for the zygote, the spares' own pages, the scratch tmpfs and the HTTP
    process), so user code meets ``MemoryError`` under its ``RLIMIT_AS`` before the kernel's
    OOM killer meets the pod."""
    pod = pod_memory()
    if pod is None:
        return configured
    limit, usage = pod
    return max(64 << 20, min(configured, (limit - usage) * 3 // 4))


def is_dumpable() -> bool:
    """Whether this process is dumpable (for tests and /ready)."""
    return bool(prctl(PR_GET_DUMPABLE))


def become_subreaper() -> None:
    """Orphaned grandchildren of user code are re-parented here, so they can be reaped."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def die_with_parent() -> None:
    """SIGKILL this process if its parent (the fork-server) dies."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def address_space_bytes() -> int:
    """This process's current virtual size (VmSize) in bytes."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError(errno.ENOENT, "VmSize missing from /proc/self/status")


@dataclass(frozen=True)
class ChildLimits:
    """The rlimits one execution runs under."""

    cpu_seconds: int
    address_space_bytes: int
    max_processes: int
    max_file_bytes: int
    max_open_files: int

    @classmethod
    def for_timeout(
        cls, timeout_s: float, *, baseline_vm: int, memory_limit_bytes: int,
        max_processes: int, max_file_bytes: int, max_open_files: int,
    ) -> "ChildLimits":
        """CPU seconds just above the wall timeout (the wall clock normally fires first)."""
        return cls(
            cpu_seconds=int(math.ceil(timeout_s)) + 1,
            address_space_bytes=baseline_vm + memory_limit_bytes,
            max_processes=max_processes,
            max_file_bytes=max_file_bytes,
            max_open_files=max_open_files,
        )


def apply_rlimits(limits: ChildLimits) -> None:
    """Set the rlimits in this (child) process; lowering never needs privileges."""
    def lower(res: int, soft: int, hard: int | None = None) -> None:
        cur_soft, cur_hard = resource.getrlimit(res)
        hard = soft if hard is None else hard
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        resource.setrlimit(res, (soft, hard))

    lower(resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 2)
    lower(resource.RLIMIT_AS, limits.address_space_bytes)
    lower(resource.RLIMIT_NPROC, limits.max_processes)
    lower(resource.RLIMIT_FSIZE, limits.max_file_bytes)
    lower(resource.RLIMIT_NOFILE, limits.max_open_files)
    lower(resource.RLIMIT_CORE, 0)


#: The rules of the session layer: a spare loads them itself, right after its own ``setsid()``.
SESSION_SYSCALLS = ("setsid", "setpgid")


@dataclass(frozen=True)
class SeccompLayers:
    """The user-code filter in two layers (raw BPF programs, see :func:`compile_seccomp_layers`).

    ``base`` is everything but the session rules; the zygote loads it into itself once, so every
    spare and probe inherits it through ``fork()`` instead of attaching a copy (the kernel checks
    and JIT-compiles each attached program; measured in a spare: 0.27 -> 0.16 ms). ``sessions`` denies
    :data:`SESSION_SYSCALLS`; each spare attaches it after its own ``setsid()``, which the base
    layer must allow. Filters stack: a syscall must pass both.
    """

    base: bytes
    sessions: bytes


def compile_seccomp(protected_pids: Iterable[int]) -> bytes:
    """Build the whole user-code filter (both layers in one program) and return its raw BPF.

    * ``socket()`` fails with EACCES for every family but AF_UNIX: no TCP/UDP/raw/netlink.
    * the syscalls in :data:`DENIED_SYSCALLS` and :data:`SESSION_SYSCALLS` fail with EPERM
      (ptrace, io_uring, namespaces, setsid/setpgid so user processes cannot leave the process
      group we kill, ...).
    * kill/tgkill/rt_sig*queueinfo fail with EPERM when aimed at a protected pid, at its
      process group (or the group it is in), or at -1 (every process of the user).
    * prlimit64, sched_set{scheduler,param,attr,affinity}, setpriority and ioprio_set work on
      this process only (pid 0; for setpriority/ioprio_set "this process" and who 0): user
      code cannot lower the server's limits or priority (they share the uid).
    """
    return _export(_base_filter(protected_pids, DENIED_SYSCALLS + SESSION_SYSCALLS))


def compile_seccomp_layers(protected_pids: Iterable[int]) -> SeccompLayers:
    """The same filter as :func:`compile_seccomp`, split into :class:`SeccompLayers`.

    Compiling takes milliseconds (libseccomp); attaching a layer well under one.
    """
    import pyseccomp as sc  # noqa: PLC0415 - only the zygote needs it

    sessions = sc.SyscallFilter(defaction=sc.ALLOW)
    for name in SESSION_SYSCALLS:
        sessions.add_rule(sc.ERRNO(errno.EPERM), name)
    return SeccompLayers(base=_export(_base_filter(protected_pids, DENIED_SYSCALLS)), sessions=_export(sessions))


def _base_filter(protected_pids: Iterable[int], denied: Iterable[str]) -> Any:
    """A libseccomp filter: the socket, ``denied``, signal and self-only rules."""
    import pyseccomp as sc  # noqa: PLC0415 - only the zygote needs it

    filt = sc.SyscallFilter(defaction=sc.ALLOW)
    filt.add_rule(sc.ERRNO(errno.EACCES), "socket", sc.Arg(0, sc.NE, socket.AF_UNIX))
    for name in denied:
        try:
            filt.add_rule(sc.ERRNO(errno.EPERM), name)
        except (OSError, ValueError, RuntimeError):
            continue  # a syscall this kernel/arch does not have
    targets = {(-1) & _U32}
    for pid in protected_pids:
        if pid > 0:
            targets.add(pid & _U32)
            targets.add((-pid) & _U32)
            try:
                group = os.getpgid(pid)
            except OSError:
                continue
            if group > 0:  # 0: a group outside this PID namespace
                targets.add((-group) & _U32)
    for name in SIGNAL_SYSCALLS:
        for target in sorted(targets):
            filt.add_rule(sc.ERRNO(errno.EPERM), name, sc.Arg(0, sc.MASKED_EQ, _U32, target))
    for name in SELF_ONLY_SYSCALLS:
        filt.add_rule(sc.ERRNO(errno.EPERM), name, sc.Arg(0, sc.NE, 0))
    for name, which in (("setpriority", PRIO_PROCESS), ("ioprio_set", IOPRIO_WHO_PROCESS)):
        filt.add_rule(sc.ERRNO(errno.EPERM), name, sc.Arg(0, sc.NE, which))
        filt.add_rule(sc.ERRNO(errno.EPERM), name, sc.Arg(1, sc.NE, 0))
    return filt


def _export(filt: Any) -> bytes:
    """A libseccomp filter's raw BPF program (``export_bpf`` writes it to a file descriptor)."""
    read_fd, write_fd = os.pipe()
    try:
        with os.fdopen(write_fd, "wb", closefd=True) as out:
            filt.export_bpf(out)
        chunks = []
        while True:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
    program = b"".join(chunks)
    if not program or len(program) % 8:
        raise OSError(errno.EINVAL, f"libseccomp exported a {len(program)}-byte BPF program")
    return program


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


def load_seccomp(program: bytes) -> None:
    """Install a compiled filter in this process (no_new_privs first, as unprivileged needs)."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog))


def install_seccomp(protected_pids: Iterable[int]) -> None:
    """Compile and load the filter in one go (tests and one-off use)."""
    load_seccomp(compile_seccomp(protected_pids))


def scrubbed_environment(scratch: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The only environment user code sees: no tokens, no service account, no proxy settings."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": scratch,
        "TMPDIR": scratch,
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": os.environ.get("MPLCONFIGDIR", os.path.join(scratch, ".mpl")),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        env[name] = os.environ.get(name, "1")
    env.update(extra or {})
    return env


def scrub_environment(scratch_root: str) -> tuple[tuple[str, str], ...]:
    """Make this process's environment :func:`scrubbed_environment` for ``scratch_root``; return
    the variables that name it (or a path in it), each with the rest of its path after it.

    The zygote does this once, before its first spare: spares inherit the scrubbed environment
    and only point those variables at their own directory (:func:`enter_scratch`) instead of each
    clearing and refilling it (~0.4 ms of CPU apiece, most of it first writes to pages shared
    with the zygote)."""
    root = os.path.normpath(scratch_root)
    env = scrubbed_environment(root)
    os.environ.clear()
    os.environ.update(env)
    return tuple((name, value[len(root):]) for name, value in env.items()
                 if value == root or value.startswith(root + os.sep))


def enter_scratch(scratch: str, variables: Iterable[tuple[str, str]]) -> None:
    """Point the variables :func:`scrub_environment` returned at ``scratch``."""
    for name, rest in variables:
        os.environ[name] = scratch + rest
