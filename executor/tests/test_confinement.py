"""The user-code seccomp layers as compiled: the spare's own layer bound to its pid, the base
layer (the zygote's) refusing namespaces. The hostile suite (test_hostile.py) attacks the same
rules from user code on a pod-like server."""

from __future__ import annotations

import errno
import os
import signal
import sys

from forked import in_child

from pod_sandbox.executor import isolation


def test_session_layer_binds_the_spares_own_pid_and_nothing_else():
    """The placeholder stands for the spare's pid (and -pid) until bound; nothing else moves."""
    program = isolation.session_layer()
    bound = isolation.bind_own_pid(program, 4242)
    changed = [i for i in range(0, len(program), 8) if program[i:i + 8] != bound[i:i + 8]]
    assert len(changed) == 2
    assert isolation.bind_own_pid(bound, 99) == bound  # bound once: no placeholder left
    assert (isolation.OWN_PID_PLACEHOLDER).to_bytes(4, sys.byteorder) not in bound


def test_base_layer_refuses_namespaces_and_clone3_even_in_the_zygote():
    """What the zygote itself runs under: no namespace by unshare, clone or clone3 (ENOSYS, so
    libc falls back to clone, whose flags the filter reads); plain fork() still works."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def body() -> int:
        isolation.load_seccomp(isolation.compile_seccomp_layers(()).base)
        for flag in isolation.CLONE_NAMESPACES.values():
            if libc.syscall(ctypes.c_long(272), ctypes.c_long(flag)) == 0:  # unshare
                return 1
            rc = libc.syscall(ctypes.c_long(56), ctypes.c_long(flag | signal.SIGCHLD), 0, 0, 0, 0)  # clone
            if rc == 0:
                os._exit(0)
            if rc > 0 or ctypes.get_errno() != errno.EPERM:
                return 2
        args = (ctypes.c_uint64 * 11)(isolation.CLONE_NAMESPACES["CLONE_NEWUSER"], 0, 0, 0, signal.SIGCHLD)
        if libc.syscall(ctypes.c_long(435), ctypes.addressof(args), ctypes.c_long(88)) >= 0:
            return 3
        if ctypes.get_errno() != errno.ENOSYS:
            return 4
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        return 0 if os.waitpid(pid, 0)[1] >> 8 == 7 else 5

    assert in_child(body) == 0
