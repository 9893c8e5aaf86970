"""A PandasAI-side client process for the hostile-answer suite (run under RLIMIT_AS by the test).

Reads one JSON request a line from stdin: ``{"case": name, "timeout_s": s}`` runs
``KubernetesSandbox.execute("# case: <name>")`` against the hostile server at argv[1];
``{"baseline": path}`` reads a Parquet file the way the client did before its bounds
(``pandas.read_parquet``). Answers one JSON line each: the exception raised (class, PandasAI
family, field, limit, message), the seconds taken and the peak RSS the case added.
"""

from __future__ import annotations

import json
import sys
import time


def peak_rss_kb() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:  # "5": reset this process's peak RSS
        fh.write("5")


def main() -> int:
    import io  # noqa: PLC0415

    import pandas as pd  # noqa: PLC0415

    from pod_sandbox.client import KubernetesSandbox  # noqa: PLC0415
    from pod_sandbox.client.pandasai_compat import CodeExecutionError  # noqa: PLC0415

    sandbox = KubernetesSandbox(connection="url", url=sys.argv[1], token="t" * 43,
                                echo_output=False, save_charts=False)
    for line in sys.stdin:
        job = json.loads(line)
        reset_peak()
        before = peak_rss_kb()
        t0 = time.monotonic()
        outcome: dict = {"error": None}
        try:
            if "baseline" in job:
                with open(job["baseline"], "rb") as fh:
                    pd.read_parquet(io.BytesIO(fh.read()))
            else:
                sandbox.timeout_s = job.get("timeout_s", 5.0)
                sandbox.execute(f"# case: {job['case']}", {})
        except BaseException as exc:  # noqa: BLE001 - reported to the test, whatever it is
            outcome = {"error": type(exc).__name__, "message": str(exc)[:2000],
                       "code_execution_error": isinstance(exc, CodeExecutionError),
                       "field": getattr(exc, "field", None), "limit": getattr(exc, "limit", None)}
        outcome.update(seconds=time.monotonic() - t0, added_peak_kb=peak_rss_kb() - before)
        print(json.dumps(outcome), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
