"""Command line entry point: start the fork-server, then the threaded WSGI server."""

from __future__ import annotations

import logging
import os
import resource
import signal
import sys
import threading
from typing import Sequence

from . import isolation
from .config import Config, load_config
from .files import Workspace
from .forkserver import start_fork_server
from .runner import Runner

log = logging.getLogger("pod_sandbox.cli")
DRAIN_TIMEOUT_S = 60.0
#: Open connections kept; over it the oldest idle or unfinished ones are closed (transport.py).
#: Well above the 500 idle or slow connections the probes must answer under without evicting
#: anyone (an evicted attacker that reconnects at once costs an accept and a close each time).
CONNECTION_BUDGET = 1024
#: File descriptors the HTTP process needs besides its connections (channels, pipes, logs).
FD_RESERVE = 128
MAX_HEADER_BYTES = 16 * 1024


def _exit_now(runner: Runner, code: int) -> None:
    runner.stop()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def fd_budget(connections: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE to fit ``connections`` (its hard limit allowing);
    return the connection budget that fits. The fork-server is forked before: user code's
    limit is its own (``--max-open-files``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = connections + FD_RESERVE
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    budget = max(16, min(connections, soft - FD_RESERVE))
    if budget < connections:
        log.warning("RLIMIT_NOFILE %d allows a connection budget of %d, not %d", soft, budget, connections)
    return budget


def serve(config: Config) -> None:
    """Run the executor until SIGTERM/SIGINT or POST /v1/shutdown."""
    workspace = Workspace(config.data_dir, config.limits.max_upload_bytes)
    workspace.ensure()
    os.makedirs(config.scratch_root, mode=0o700, exist_ok=True)
    # Order matters: fork before any thread exists, before the token is in memory, and before
    # the HTTP side's modules (Bottle, prometheus_client, the app: ~6 MB and 78 modules) are
    # imported, so the fork-server, the zygote and every child neither carry nor copy them.
    handle = start_fork_server(config)
    isolation.make_undumpable()
    from .app import CLAIM_BODY_BYTES, ServerState, create_app, make_gate  # noqa: PLC0415 - HTTP process only
    from .transport import create_transport  # noqa: PLC0415
    from .auth import TokenStore  # noqa: PLC0415
    from .metrics import Metrics  # noqa: PLC0415
    tokens = TokenStore.from_file(config.token_file, config.claimable)
    if not tokens.auth_enabled:
        log.warning("no --token-file and not --claimable: the API is UNAUTHENTICATED (local use only)")
    runner = Runner(handle, config.limits.max_result_bytes)
    metrics = Metrics()
    state = ServerState()
    app = create_app(config, runner, tokens, workspace, metrics, state)

    # Body limits per route are checked from the headers, before a body byte is buffered
    # (transport.py); waitress's own cap is only the largest of them. Headers of 16 KiB at most
    # and a 4 KiB claim body: what an unauthenticated connection can make the server hold.
    largest_body = max(config.limits.max_body_bytes, config.limits.max_upload_bytes, CLAIM_BODY_BYTES)
    server = create_transport(
        app, make_gate(config.limits, tokens), threads=max(config.threads, config.limits.slots + 2),
        connection_limit=fd_budget(CONNECTION_BUDGET), host=config.host, port=config.port,
        max_request_body_size=largest_body + 1, max_request_header_size=MAX_HEADER_BYTES,
        ident="pod-sandbox-executor", channel_timeout=600, clear_untrusted_proxy_headers=True,
    )

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        state.draining = True
        _exit_now(runner, 0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def drain_then_exit() -> None:
        state.shutdown_requested.wait()
        drained = runner.wait_idle(DRAIN_TIMEOUT_S)
        log.info("shutdown requested: %s", "drained" if drained else "drain timed out")
        threading.Event().wait(0.2)  # let the 202 reach the client
        _exit_now(runner, 0)

    threading.Thread(target=drain_then_exit, name="shutdown", daemon=True).start()
    log.info("pod-sandbox-executor listening on %s:%s (slots=%d, threads=%d, auth=%s)",
             config.host, server.effective_port, config.limits.slots, config.threads,
             "claimable" if config.claimable and not tokens.claimed else
             ("token" if tokens.auth_enabled else "none"))
    server.run()


def main(argv: Sequence[str] | None = None) -> int:
    """Console script ``pod-sandbox-executor``."""
    config = load_config(argv)
    logging.basicConfig(level=getattr(logging, config.log_level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    serve(config)
    return 0
