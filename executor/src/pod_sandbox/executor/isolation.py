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
#: Process creation: a spare's user code may start threads (``clone`` with ``CLONE_THREAD``)
#: but no process, so nothing it starts outlives it, writes on its pipes, escapes its group,
#: adds to its memory beyond its own ``RLIMIT_AS`` or sends an exit signal to anyone.
NO_PROCESS_SYSCALLS = ("fork", "vfork")
#: System V IPC and POSIX message queues live in the pod's IPC namespace, outside any
#: directory the server cleans: an object one execution made would outlive it for the next.
IPC_SYSCALLS = ("shmget", "msgget", "semget", "mq_open")
#: fcntl commands that arm a signal the kernel later sends on the caller's behalf (F_SETOWN*,
#: F_SETSIG: SIGIO/SIGURG or any signal to any pid of the uid) or that make another process's
#: open() of a file wait (F_SETLEASE: a lease break holds the opener up to 45 s).
FCNTL_DENIED = {"F_SETOWN": 8, "F_SETSIG": 10, "F_SETOWN_EX": 15, "F_SETLEASE": 1024}
F_SETFL = 4
O_ASYNC = 0o20000
#: ioctl requests that do the same (FIOSETOWN, SIOCSPGRP, FIOASYNC) or act on a terminal's
#: foreground group or input (TIOCSPGRP, TIOCSCTTY, TIOCSTI).
IOCTL_DENIED = {"FIOSETOWN": 0x8901, "SIOCSPGRP": 0x8902, "FIOASYNC": 0x5452,
                "TIOCSPGRP": 0x5410, "TIOCSCTTY": 0x540E, "TIOCSTI": 0x5412}
CLONE_THREAD = 0x00010000
#: clone flags that make a namespace (or leave the parent's): refused in every layer.
CLONE_NAMESPACES = {"CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000,
                    "CLONE_NEWUTS": 0x04000000, "CLONE_NEWIPC": 0x08000000,
                    "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
                    "CLONE_NEWNET": 0x40000000}  # CLONE_NEWTIME: clone3 and unshare only
#: Stands for the spare's own pid in the session layer until the spare binds it
#: (:func:`bind_own_pid`, and spawn.c): above any pid (``pid_max`` is at most 2**22).
OWN_PID_PLACEHOLDER = 0x7ABCDE01
_SECCOMP_RET_ALLOW = 0x7FFF0000
_SECCOMP_RET_ERRNO = 0x00050000
_SECCOMP_RET_KILL_PROCESS = 0x80000000
_X32_SYSCALL_BIT = 0x40000000
_AUDIT_ARCH_X86_64 = 0xC000003E


@dataclass(frozen=True)
class SeccompLayers:
    """The user-code filter in two layers (raw BPF programs, see :func:`compile_seccomp_layers`).

    ``base`` is everything but the session rules; the zygote loads it into itself once, so every
    spare and probe inherits it through ``fork()`` instead of attaching a copy (the kernel checks
    and JIT-compiles each attached program; measured in a spare: 0.27 -> 0.16 ms). ``sessions``
    (:func:`session_layer`) is what only a spare may not do: its own ``setsid()`` first, then no
    session or group change, no process creation, signals to itself only, nothing that arms a
    signal; each spare attaches it after its ``setsid()``, bound to its own pid. Filters stack:
    a syscall must pass both.
    """

    base: bytes
    sessions: bytes


class _Bpf:
    """A tiny classic-BPF assembler (forward jumps to labels) for :func:`session_layer`."""

    LD_ABS, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06

    def __init__(self) -> None:
        self.code: list[tuple[int, str | int, str | int, int]] = []
        self.labels: dict[str, int] = {}

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def load(self, offset: int) -> None:
        self.code.append((self.LD_ABS, 0, 0, offset))

    def jump(self, op: int, k: int, true: str | int = 0, false: str | int = 0) -> None:
        self.code.append((op, true, false, k & _U32))

    def ret(self, value: int) -> None:
        self.code.append((self.RET, 0, 0, value))

    def assemble(self) -> bytes:
        import struct  # noqa: PLC0415

        out = []
        for pc, (op, jt, jf, k) in enumerate(self.code):
            def rel(target: str | int) -> int:
                if isinstance(target, int):
                    return target
                offset = self.labels[target] - pc - 1
                if not 0 <= offset < 256:
                    raise ValueError(f"BPF jump to {target} out of range ({offset})")
                return offset
            out.append(struct.pack("=HBBI", op, rel(jt), rel(jf), k))
        return b"".join(out)


def _arg_low(index: int) -> int:
    """Offset of the low 32 bits of syscall argument ``index`` in ``struct seccomp_data``."""
    import sys  # noqa: PLC0415

    return 16 + 8 * index + (0 if sys.byteorder == "little" else 4)


def session_layer() -> bytes:
    """The spare's own layer (raw BPF; its pid is :data:`OWN_PID_PLACEHOLDER` until bound).

    * ``kill``, ``tgkill``, ``rt_sigqueueinfo``, ``rt_tgsigqueueinfo``: only to its own pid, its
      own group (``0``, ``-pid``: it is a session leader and creates no process); ``tkill`` (a
      bare thread id of any process) never. So no signal reaches the HTTP process, the
      fork-server, the zygote, another spare, or a thread id of any of them;
    * ``clone`` only with ``CLONE_THREAD`` and no namespace flag; ``fork``/``vfork`` EPERM;
      ``clone3`` ENOSYS (its flags are in memory seccomp cannot read; libc falls back to clone);
    * ``fcntl`` :data:`FCNTL_DENIED` and ``F_SETFL`` with ``O_ASYNC``, ``ioctl``
      :data:`IOCTL_DENIED`: nothing arms a signal the kernel would send later;
    * :data:`SESSION_SYSCALLS` and :data:`IPC_SYSCALLS` EPERM.
    Any other architecture (i386 or x32 calls on x86_64) kills the process.
    """
    import pyseccomp as sc  # noqa: PLC0415 - only the zygote needs it

    arch = sc.system_arch()

    def nr(name: str) -> int | None:
        number = sc.resolve_syscall(sc.Arch.NATIVE, name)
        return number if isinstance(number, int) and number >= 0 else None

    b = _Bpf()
    b.load(4)
    b.jump(b.JEQ, arch, 0, "kill")
    b.load(0)
    if arch == _AUDIT_ARCH_X86_64:
        b.jump(b.JGE, _X32_SYSCALL_BIT, "kill", 0)
    dispatch: list[tuple[str, str]] = [(n, "pid") for n in SIGNAL_SYSCALLS]
    dispatch += [("tkill", "eperm"), ("clone", "clone"), ("clone3", "enosys"), ("fcntl", "fcntl"),
                 ("ioctl", "ioctl")]
    dispatch += [(n, "eperm") for n in NO_PROCESS_SYSCALLS + SESSION_SYSCALLS + IPC_SYSCALLS]
    for name, target in dispatch:
        number = nr(name)
        if number is not None:
            b.jump(b.JEQ, number, target, 0)
    b.ret(_SECCOMP_RET_ALLOW)
    b.label("pid")
    b.load(_arg_low(0))
    b.jump(b.JEQ, OWN_PID_PLACEHOLDER, "allow", 0)
    b.jump(b.JEQ, -OWN_PID_PLACEHOLDER, "allow", 0)
    b.jump(b.JEQ, 0, "allow", "eperm")
    b.label("clone")
    b.load(_arg_low(0))
    b.jump(b.JSET, sum(CLONE_NAMESPACES.values()), "eperm", 0)
    b.jump(b.JSET, CLONE_THREAD, "allow", "eperm")
    b.label("fcntl")
    b.load(_arg_low(1))
    for cmd in FCNTL_DENIED.values():
        b.jump(b.JEQ, cmd, "eperm", 0)
    b.jump(b.JEQ, F_SETFL, 0, "allow")
    b.load(_arg_low(2))
    b.jump(b.JSET, O_ASYNC, "eperm", "allow")
    b.label("ioctl")
    b.load(_arg_low(1))
    for request in IOCTL_DENIED.values():
        b.jump(b.JEQ, request, "eperm", 0)
    b.label("allow")
    b.ret(_SECCOMP_RET_ALLOW)
    b.label("eperm")
    b.ret(_SECCOMP_RET_ERRNO | errno.EPERM)
    b.label("enosys")
    b.ret(_SECCOMP_RET_ERRNO | errno.ENOSYS)
    b.label("kill")
    b.ret(_SECCOMP_RET_KILL_PROCESS)
    return b.assemble()


def bind_own_pid(program: bytes, pid: int) -> bytes:
    """``program`` with :data:`OWN_PID_PLACEHOLDER` (and its negation) replaced by ``pid``
    (spawn.c does the same in C); a program without the placeholder comes back unchanged."""
    import struct  # noqa: PLC0415

    swap = {OWN_PID_PLACEHOLDER: pid & _U32, (-OWN_PID_PLACEHOLDER) & _U32: (-pid) & _U32}
    out = bytearray(program)
    for off in range(0, len(out), 8):
        op, jt, jf, k = struct.unpack_from("=HBBI", out, off)
        if op & 0x07 != _Bpf.RET and k in swap:
            struct.pack_into("=HBBI", out, off, op, jt, jf, swap[k])
    return bytes(out)


def compile_seccomp_layers(protected_pids: Iterable[int]) -> SeccompLayers:
    """The user-code filter, as :class:`SeccompLayers`.

    * ``socket()`` fails with EACCES for every family but AF_UNIX: no TCP/UDP/raw/netlink.
    * the syscalls in :data:`DENIED_SYSCALLS` fail with EPERM (ptrace, io_uring, namespaces,
      ...), ``clone`` with a namespace flag too, and ``clone3`` with ENOSYS (libc falls back to
      ``clone``, whose flags seccomp can read).
    * kill/tgkill/rt_sig*queueinfo fail with EPERM when aimed at a protected pid, at its
      process group (or the group it is in), or at -1 (every process of the user).
    * prlimit64, sched_set{scheduler,param,attr,affinity}, setpriority and ioprio_set work on
      this process only (pid 0; for setpriority/ioprio_set "this process" and who 0): user
      code cannot lower the server's limits or priority (they share the uid).
    * the session layer (:func:`session_layer`).

    Compiling takes milliseconds (libseccomp); attaching a layer well under one.
    """
    return SeccompLayers(base=_export(_base_filter(protected_pids, DENIED_SYSCALLS)), sessions=session_layer())


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
    for flag in CLONE_NAMESPACES.values():
        filt.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    filt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
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
    """Install a compiled filter in this process (no_new_privs first, as unprivileged needs),
    bound to this process's pid (:func:`bind_own_pid`)."""
    program = bind_own_pid(program, os.getpid())
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    buf = ctypes.create_string_buffer(program, len(program))
    prog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog))


def install_seccomp(protected_pids: Iterable[int]) -> None:
    """Compile and load both layers in one go, as a spare has them (tests and one-off use)."""
    layers = compile_seccomp_layers(protected_pids)
    load_seccomp(layers.base)
    load_seccomp(layers.sessions)


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
