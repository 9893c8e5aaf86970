"""``python -m pod_sandbox.client check``: one execution through a real sandbox session, exit 0/1."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Sequence

from .errors import SandboxError
from .sandbox import CONNECTIONS, KubernetesSandbox

CHECK_CODE = 'result = {"type": "number", "value": 42}'


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m pod_sandbox.client")
    sub = p.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="start a sandbox, run one execution, stop; exit 0 when it answered 42")
    check.add_argument("--namespace", default="pandasai-sandbox")
    check.add_argument("--kubeconfig", default=None)
    check.add_argument("--context", default=None)
    check.add_argument("--connection", choices=CONNECTIONS, default="auto")
    check.add_argument("--url", default=None, help="executor URL for --connection url")
    check.add_argument("--pod-template", default=None, help="Pod manifest file instead of the ConfigMap")
    check.add_argument("--no-warm-pool", action="store_true", help="always create a cold pod")
    check.add_argument("--startup-timeout", type=float, default=120.0)
    return p


def check(args: argparse.Namespace) -> int:
    """Run the check; print one JSON line describing it."""
    report: dict[str, object] = {"namespace": args.namespace, "ok": False}
    t0 = time.perf_counter()
    sandbox = KubernetesSandbox(
        args.namespace,
        connection=args.connection,
        url=args.url,
        kubeconfig=args.kubeconfig,
        context=args.context,
        pod_template=args.pod_template,
        warm_pool=not args.no_warm_pool,
        startup_timeout_s=args.startup_timeout,
    )
    try:
        with sandbox:
            session = sandbox.session
            report["pod"] = sandbox.pod_name
            report["warm"] = bool(session and session.warm)
            result = sandbox.execute(CHECK_CODE, {})
            report["result"] = result
            report["ok"] = result == {"type": "number", "value": 42}
    except SandboxError as exc:
        report["error"] = f"{type(exc).__name__}: {exc}"
    report["seconds"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(report))
    return 0 if report["ok"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    if args.command == "check":
        return check(args)
    return 2  # pragma: no cover - argparse enforces the sub-command


if __name__ == "__main__":
    sys.exit(main())
