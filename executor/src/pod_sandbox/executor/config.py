"""The executor's settings: limits, paths and modes, read from CLI flags and SANDBOX_* variables."""

from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Per-request and per-execution limits; reported by ``GET /v1/info``."""

    max_code_bytes: int = 1 * MIB
    max_body_bytes: int = 2 * MIB
    max_upload_bytes: int = 512 * MIB
    max_output_bytes: int = 1 * MIB
    max_result_bytes: int = 64 * MIB
    default_timeout_s: float = 30.0
    max_timeout_s: float = 300.0
    memory_limit_bytes: int = 2048 * MIB
    max_processes: int = 1024
    max_open_files: int = 256
    max_file_bytes: int = 256 * MIB
    slots: int = 2
    #: Added to the nice value of the zygote, its spares and so of user code (0-19): the HTTP
    #: process and the fork-server keep theirs, so requests, /health and answers come first.
    child_nice: int = 5
    #: SQL by call-back (docs/sql-callback.md): one answer's Parquet, all answers of one
    #: execution, queries of one execution, one query's text, one query's wait.
    max_query_bytes: int = 128 * MIB
    max_query_total_bytes: int = 512 * MIB
    max_queries: int = 10_000
    max_query_chars: int = 65_536
    default_query_timeout_s: float = 60.0
    max_query_timeout_s: float = 300.0

    def to_json(self) -> dict[str, Any]:
        """The limits as ``GET /v1/info`` reports them."""
        return asdict(self)


@dataclass(frozen=True)
class Config:
    """Everything the server needs to start."""

    host: str = "127.0.0.1"
    port: int = 8080
    limits: Limits = Limits()
    workspace: str = "/workspace"
    scratch_root: str = "/tmp/sandbox-scratch"
    token_file: str | None = None
    claimable: bool = False
    threads: int = 6
    spares: int = 2
    prewarm: bool = False
    prefault: bool = True
    heapfile: bool = True
    dataset_cache_bytes: int = 1024 * MIB
    log_level: str = "INFO"

    @property
    def data_dir(self) -> str:
        """Where uploaded files live (user code sees them in its working directory too)."""
        return os.path.join(self.workspace, "data")


def _env_bool(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def build_parser() -> argparse.ArgumentParser:
    """The command line; every flag also has a SANDBOX_* environment variable."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    d = Limits()
    p = argparse.ArgumentParser(
        prog="pod-sandbox-executor",
        description="Run PandasAI-generated Python in isolated pre-warmed processes over HTTP.",
    )
    p.add_argument("--host", default=None, help="bind address [SANDBOX_HOST, 127.0.0.1]")
    p.add_argument("--port", type=int, default=None, help="TCP port [SANDBOX_PORT, 8080]")
    p.add_argument("--token-file", default=None,
                   help="file holding the bearer token [SANDBOX_TOKEN_FILE]; none and not "
                        "--claimable means NO authentication (local use only)")
    p.add_argument("--claimable", action="store_true", default=None,
                   help="first POST /v1/claim sets the token [SANDBOX_CLAIMABLE=1]")
    p.add_argument("--workspace", default=None, help="session workspace [SANDBOX_WORKSPACE, /workspace]")
    p.add_argument("--scratch-root", default=None,
                   help="per-execution scratch dirs [SANDBOX_SCRATCH_ROOT, $TMPDIR/sandbox-scratch]")
    p.add_argument("--slots", type=int, default=None,
                   help=f"concurrent executions [SANDBOX_SLOTS, CPU count={max(2, cpus)}]")
    p.add_argument("--threads", type=int, default=None, help="HTTP threads [SANDBOX_THREADS, slots+4]")
    p.add_argument("--spares", type=int, default=None, help="pre-forked spare children [SANDBOX_SPARES, 2]")
    p.add_argument("--prewarm", choices=("on", "off"), default=None,
                   help="idle spares warm the common pandas paths until their job comes [SANDBOX_PREWARM, off]")
    p.add_argument("--prefault", choices=("on", "off"), default=None,
                   help="idle spares copy the pages an execution writes before their job comes "
                        "[SANDBOX_PREFAULT, on]")
    p.add_argument("--heapfile", choices=("on", "off"), default=None,
                   help="move the warm stack's memory onto a sealed memfd before the zygote starts, "
                        "so fork() and exit skip its page tables [SANDBOX_HEAPFILE, on]")
    p.add_argument("--timeout", type=float, default=None,
                   help=f"default timeout_s [SANDBOX_TIMEOUT_S, {d.default_timeout_s}]")
    p.add_argument("--max-timeout", type=float, default=None,
                   help=f"largest timeout_s a request may ask [SANDBOX_MAX_TIMEOUT_S, {d.max_timeout_s}]")
    p.add_argument("--memory-mb", type=int, default=None,
                   help="address space user code may add to the warm interpreter "
                        f"[SANDBOX_MEMORY_MB, {d.memory_limit_bytes // MIB}]")
    p.add_argument("--max-code-bytes", type=int, default=None, help="[SANDBOX_MAX_CODE_BYTES]")
    p.add_argument("--max-body-bytes", type=int, default=None, help="[SANDBOX_MAX_BODY_BYTES]")
    p.add_argument("--max-upload-bytes", type=int, default=None, help="[SANDBOX_MAX_UPLOAD_BYTES]")
    p.add_argument("--max-output-bytes", type=int, default=None, help="per stream [SANDBOX_MAX_OUTPUT_BYTES]")
    p.add_argument("--max-result-bytes", type=int, default=None, help="[SANDBOX_MAX_RESULT_BYTES]")
    p.add_argument("--max-processes", type=int, default=None,
                   help="RLIMIT_NPROC for user code [SANDBOX_MAX_PROCESSES]")
    p.add_argument("--max-file-bytes", type=int, default=None,
                   help=f"RLIMIT_FSIZE for user code [SANDBOX_MAX_FILE_BYTES, {d.max_file_bytes}]")
    p.add_argument("--max-open-files", type=int, default=None,
                   help=f"RLIMIT_NOFILE for user code [SANDBOX_MAX_OPEN_FILES, {d.max_open_files}]")
    p.add_argument("--child-nice", type=int, default=None,
                   help="nice increment of the zygote, its spares and user code, 0-19 "
                        f"[SANDBOX_CHILD_NICE, {d.child_nice}]")
    p.add_argument("--max-query-bytes", type=int, default=None,
                   help=f"one SQL call-back answer [SANDBOX_MAX_QUERY_BYTES, {d.max_query_bytes}]")
    p.add_argument("--max-query-total-bytes", type=int, default=None,
                   help=f"all answers of one execution [SANDBOX_MAX_QUERY_TOTAL_BYTES, {d.max_query_total_bytes}]")
    p.add_argument("--max-queries", type=int, default=None,
                   help=f"SQL call-backs of one execution [SANDBOX_MAX_QUERIES, {d.max_queries}]")
    p.add_argument("--max-query-chars", type=int, default=None,
                   help=f"one query's text [SANDBOX_MAX_QUERY_CHARS, {d.max_query_chars}]")
    p.add_argument("--query-timeout", type=float, default=None,
                   help=f"default query_timeout_s [SANDBOX_QUERY_TIMEOUT_S, {d.default_query_timeout_s}]")
    p.add_argument("--max-query-timeout", type=float, default=None,
                   help=f"largest query_timeout_s [SANDBOX_MAX_QUERY_TIMEOUT_S, {d.max_query_timeout_s}]")
    p.add_argument("--log-level", default=None, help="[SANDBOX_LOG_LEVEL, INFO]")
    return p


def load_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Flags win over environment variables, which win over defaults."""
    env = dict(os.environ if environ is None else environ)
    args = build_parser().parse_args(argv)

    def pick(flag: Any, name: str, default: Any, cast: Any = str) -> Any:
        if flag is not None:
            return flag
        raw = env.get(name)
        if raw is None or raw == "":
            return default
        try:
            return cast(raw)
        except ValueError:
            raise SystemExit(f"pod-sandbox-executor: {name}={raw!r} is not a valid {cast.__name__}") from None

    d = Limits()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    slots = pick(args.slots, "SANDBOX_SLOTS", max(2, cpus), int)
    memory_mb = pick(args.memory_mb, "SANDBOX_MEMORY_MB", d.memory_limit_bytes // MIB, int)
    limits = Limits(
        max_code_bytes=pick(args.max_code_bytes, "SANDBOX_MAX_CODE_BYTES", d.max_code_bytes, int),
        max_body_bytes=pick(args.max_body_bytes, "SANDBOX_MAX_BODY_BYTES", d.max_body_bytes, int),
        max_upload_bytes=pick(args.max_upload_bytes, "SANDBOX_MAX_UPLOAD_BYTES", d.max_upload_bytes, int),
        max_output_bytes=pick(args.max_output_bytes, "SANDBOX_MAX_OUTPUT_BYTES", d.max_output_bytes, int),
        max_result_bytes=pick(args.max_result_bytes, "SANDBOX_MAX_RESULT_BYTES", d.max_result_bytes, int),
        default_timeout_s=pick(args.timeout, "SANDBOX_TIMEOUT_S", d.default_timeout_s, float),
        max_timeout_s=pick(args.max_timeout, "SANDBOX_MAX_TIMEOUT_S", d.max_timeout_s, float),
        memory_limit_bytes=memory_mb * MIB,
        max_processes=pick(args.max_processes, "SANDBOX_MAX_PROCESSES", d.max_processes, int),
        max_file_bytes=pick(args.max_file_bytes, "SANDBOX_MAX_FILE_BYTES", d.max_file_bytes, int),
        max_open_files=pick(args.max_open_files, "SANDBOX_MAX_OPEN_FILES", d.max_open_files, int),
        slots=slots,
        child_nice=pick(args.child_nice, "SANDBOX_CHILD_NICE", d.child_nice, int),
        max_query_bytes=pick(args.max_query_bytes, "SANDBOX_MAX_QUERY_BYTES", d.max_query_bytes, int),
        max_query_total_bytes=pick(args.max_query_total_bytes, "SANDBOX_MAX_QUERY_TOTAL_BYTES",
                                   d.max_query_total_bytes, int),
        max_queries=pick(args.max_queries, "SANDBOX_MAX_QUERIES", d.max_queries, int),
        max_query_chars=pick(args.max_query_chars, "SANDBOX_MAX_QUERY_CHARS", d.max_query_chars, int),
        default_query_timeout_s=pick(args.query_timeout, "SANDBOX_QUERY_TIMEOUT_S",
                                     d.default_query_timeout_s, float),
        max_query_timeout_s=pick(args.max_query_timeout, "SANDBOX_MAX_QUERY_TIMEOUT_S",
                                 d.max_query_timeout_s, float),
    )
    problems = [
        name for name, value in (
            ("slots", limits.slots), ("max_code_bytes", limits.max_code_bytes),
            ("max_body_bytes", limits.max_body_bytes), ("max_upload_bytes", limits.max_upload_bytes),
            ("max_result_bytes", limits.max_result_bytes), ("default_timeout_s", limits.default_timeout_s),
            ("max_timeout_s", limits.max_timeout_s), ("memory_mb", memory_mb),
            ("max_processes", limits.max_processes), ("max_file_bytes", limits.max_file_bytes),
            ("max_open_files", limits.max_open_files), ("max_query_bytes", limits.max_query_bytes),
            ("max_query_total_bytes", limits.max_query_total_bytes), ("max_queries", limits.max_queries),
            ("max_query_chars", limits.max_query_chars),
            ("query_timeout", limits.default_query_timeout_s), ("max_query_timeout", limits.max_query_timeout_s),
        ) if value <= 0
    ]
    if limits.max_output_bytes < 0:
        problems.append("max_output_bytes")
    if not 0 <= limits.child_nice <= 19:
        problems.append("child_nice (0-19)")
    if limits.max_open_files < 16:
        problems.append("max_open_files (at least 16: the interpreter needs some)")
    if limits.default_timeout_s > limits.max_timeout_s:
        problems.append("timeout (above max_timeout)")
    if limits.default_query_timeout_s > limits.max_query_timeout_s:
        problems.append("query_timeout (above max_query_timeout)")
    spares = pick(args.spares, "SANDBOX_SPARES", 2, int)
    if spares < 0:
        problems.append("spares")
    switches = {}
    for name, flag, default in (("prewarm", args.prewarm, "off"), ("prefault", args.prefault, "on"),
                                ("heapfile", args.heapfile, "on")):
        value = pick(flag, f"SANDBOX_{name.upper()}", default).strip().lower()
        if value not in ("on", "off", "1", "0", "true", "false", "yes", "no"):
            problems.append(f"{name} (on or off)")
        switches[name] = value in ("on", "1", "true", "yes")
    if problems:
        raise SystemExit(f"pod-sandbox-executor: invalid settings: {', '.join(problems)}")
    tmp = env.get("TMPDIR") or "/tmp"
    return Config(
        host=pick(args.host, "SANDBOX_HOST", "127.0.0.1"),
        port=pick(args.port, "SANDBOX_PORT", 8080, int),
        limits=limits,
        workspace=pick(args.workspace, "SANDBOX_WORKSPACE", "/workspace"),
        scratch_root=pick(args.scratch_root, "SANDBOX_SCRATCH_ROOT", os.path.join(tmp, "sandbox-scratch")),
        token_file=pick(args.token_file, "SANDBOX_TOKEN_FILE", None),
        claimable=bool(args.claimable) or _env_bool(env.get("SANDBOX_CLAIMABLE")),
        threads=pick(args.threads, "SANDBOX_THREADS", slots + 4, int),
        spares=spares,
        prewarm=switches["prewarm"],
        prefault=switches["prefault"],
        heapfile=switches["heapfile"],
        log_level=pick(args.log_level, "SANDBOX_LOG_LEVEL", "INFO").upper(),
    )
