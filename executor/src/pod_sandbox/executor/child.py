"""What runs inside one forked sandbox child: confine itself, wait for a job, run it, report.

The child is forked from the warm zygote (pandas, numpy, matplotlib, pyarrow imported). It
talks on its own fds only: ``job_fd`` (one frame in), ``result_fd`` (one frame out, never stdout),
fds 1 and 2 (pipes the fork-server reads with a cap: the zygote handed it their read ends). It
never returns: it ends in ``os._exit``.
"""

from __future__ import annotations

import io
import json
import os
import resource
import signal
import sys
import traceback
from typing import Any, Callable, Mapping, Sequence

from .. import wire
from . import cleanslate, framing, isolation, sqlchannel
from . import prefault as _prefault
from . import prewarm as _prewarm

TRACEBACK_MAX = 64 * 1024
#: The code's file name in tracebacks and warnings: PandasAI exec()s the string, so "<string>".
CODE_FILENAME = "<string>"
EXIT_SETUP_FAILED = 120
EXIT_CRASHED = 121


#: Queries up to this length appear whole in MissingDatasetError's message (older clients parse
#: it); longer ones are cut there and travel whole in the error's ``query`` field only.
MISSING_QUERY_IN_MESSAGE = 500


class MissingDatasetError(LookupError):
    """``execute_sql_query`` got a query the client did not stage in ``datasets``.

    ``query`` is the full text the code asked for; the message shows at most
    :data:`MISSING_QUERY_IN_MESSAGE` characters of it. The execute response carries ``query``
    as ``error.query`` so the client can stage SQL built at run time, whatever its length.
    """

    def __init__(self, query: str) -> None:
        self.query = query
        if len(query) <= MISSING_QUERY_IN_MESSAGE:
            shown = repr(query)
        else:  # not a Python literal: a client parsing the message must not stage a cut query
            shown = (f"{query[:200]!r} ... ({len(query)} characters; the whole query is in the "
                     f"error's 'query' field)")
        super().__init__(
            f"no dataset was staged for this query; the client must upload it and pass it in "
            f"'datasets': {shown}"
        )


def close_fds_except(keep: set[int]) -> None:
    """Close every fd not in ``keep`` (the fork-server's channels, epoll, other jobs' pipes)."""
    low = 0
    for fd in sorted(keep | {65536}):
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    try:
        soft = os.sysconf("SC_OPEN_MAX")
    except (ValueError, OSError):
        soft = 1 << 20
    if soft > 65537:
        os.closerange(65537, soft)


def default_signals() -> None:
    """Drop the server processes' signal handling inherited through fork (wake-up fd, handlers)."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)


def drop_font_cache() -> None:
    """Empty matplotlib's cache of open fonts, as its own after-fork hook does in each child
    (an FT2Font reads its file lazily, and a child closes the zygote's fds). The zygote calls it
    right before each fork (:mod:`.fastfork` skips the hooks); it never draws, so the cache is
    empty and this costs a microsecond."""
    font_manager = sys.modules.get("matplotlib.font_manager")
    if font_manager is not None:
        font_manager._get_font.cache_clear()  # noqa: SLF001 - what matplotlib registers at fork


def prepare_parent(scratch_root: str) -> tuple[tuple[str, str], ...]:
    """What the zygote does once so that each spare has less to do after ``fork()``.

    * ``sys.stdin``/``stdout``/``stderr`` as user code gets them: over fds 0-2, UTF-8,
      line-buffered, with no buffer below the text layer. The objects hold fd numbers, so a spare
      only ``dup2()``s its pipes onto fds 0-2 (the zygote flushes them before every fork).
    * the scrubbed environment (:func:`.isolation.scrub_environment`); a spare re-points
      ``HOME``/``TMPDIR`` at its scratch directory. Returns those variables, for ``spare_main``.
    """
    sys.stdin = open(0, "r", closefd=False)  # noqa: SIM115 - lives as long as the process
    sys.stdout = io.TextIOWrapper(open(1, "wb", buffering=0, closefd=False),  # noqa: SIM115
                                  encoding="utf-8", errors="backslashreplace", line_buffering=True)
    sys.stderr = io.TextIOWrapper(open(2, "wb", buffering=0, closefd=False),  # noqa: SIM115
                                  encoding="utf-8", errors="backslashreplace", line_buffering=True)
    return isolation.scrub_environment(scratch_root)


def spare_main(
    job_fd: int,
    result_fd: int,
    out_fd: int,
    err_fd: int,
    session_filter: bytes,
    datasets_cache: Mapping[str, Any],
    data_dir: str,
    scratch: str,
    scratch_variables: Sequence[tuple[str, str]],
    parent_pid: int | None = None,
    set_up: bool = False,
    prewarm: bool = False,
    prefault_ranges: Sequence[tuple[int, int]] = (),
    shared_before: Mapping[str, set[str]] | None = None,
) -> None:
    """Entry point right after fork(); never returns.

    The zygote has run :func:`prepare_parent` (stdio objects, scrubbed environment; it returned
    ``scratch_variables``) and its seccomp filter is inherited; ``session_filter`` (no
    ``setsid``/``setpgid``, see :class:`.isolation.SeccompLayers`) is attached after this
    process's own ``setsid()``.
    Everything that does not depend on the job (session, fds, seccomp, scratch directory,
    environment) happens before the job arrives, off the request's critical path: with
    ``set_up`` the zygote's C helper (:mod:`.spawn`) has already done all of it but the signal
    handlers and the environment (the job and result pipes are then fds 3 and 4, stdout and
    stderr 1 and 2); without it, it happens here in Python. Then,
    until its job is there, the spare copies the pages an execution is known to write
    (``prefault_ranges``, :mod:`.prefault`). With ``prewarm`` a spare whose job is not there yet
    then warms the common pandas paths (:mod:`.prewarm`), confined as it is, stopping as soon as
    the job pipe is readable.
    """
    try:
        if not set_up:  # else spawn.c did all this before fork() returned
            os.setsid()
            isolation.die_with_parent()
            if parent_pid is not None and os.getppid() != parent_pid:
                os._exit(EXIT_SETUP_FAILED)  # the parent died before PDEATHSIG was armed
            devnull = os.open("/dev/null", os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_fd, 1)
            os.dup2(err_fd, 2)
            close_fds_except({0, 1, 2, job_fd, result_fd})
            isolation.load_seccomp(session_filter)
            _make_scratch(scratch)
        default_signals()
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over RLIMIT_FSIZE: EFBIG, not death
        isolation.enter_scratch(scratch, scratch_variables)
    except BaseException:  # noqa: BLE001 - report on fd 2 and die; the fork-server sees the code
        try:
            os.write(2, traceback.format_exc().encode()[-4000:])
        finally:
            os._exit(EXIT_SETUP_FAILED)
    if prefault_ranges:
        _prefault.populate(prefault_ranges, job_fd)
    if prewarm:
        _prewarm.warm_until_job(job_fd, datasets_cache)
    try:
        frame = framing.read_frame_fd(job_fd)
        if frame is None:  # discarded spare
            os._exit(0)
        job = json.loads(frame)
        channel = sqlchannel.ChildChannel.for_job(job, job_fd, result_fd)
        if channel is None:  # else the job pipe carries the answers of its SQL queries
            os.close(job_fd)
        payload = run_job(job, datasets_cache, data_dir, scratch, shared_before or {}, channel)
        if channel is not None:
            payload = sqlchannel.RESULT_TAG + payload
    except BaseException:  # noqa: BLE001 - the job itself is wrapped; this is our own bug
        os.write(2, traceback.format_exc().encode()[-4000:])
        os._exit(EXIT_CRASHED)
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001,S110 - user code may have closed them
        pass
    # Close the output pipes before the result: the fork-server answers as soon as all three
    # reach EOF, instead of waiting for this process to tear its memory down and be reaped.
    for fd in (1, 2):
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        framing.write_all_fd(result_fd, payload)  # EOF ends the message
        os.close(result_fd)
    except OSError:
        os._exit(EXIT_CRASHED)
    os._exit(0)


def _error(exc: BaseException, skip_frames: int = 1) -> dict[str, str]:
    """The error object of the response: type, message, traceback (and ``query``, see below)."""
    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    try:
        text = "".join(traceback.format_exception(type(exc), exc, tb))
    except BaseException:  # noqa: BLE001 - formatting can fail under MemoryError
        text = f"{type(exc).__name__}: (traceback unavailable)\n"
    if len(text) > TRACEBACK_MAX:
        text = text[:1024] + "\n...\n" + text[-(TRACEBACK_MAX - 1100):]
    try:
        message = str(exc)[:8192]
    except BaseException:  # noqa: BLE001 - user exceptions may break __str__
        message = "(message unavailable)"
    error = {"type": type(exc).__name__, "message": message, "traceback": text}
    try:  # a user subclass may break the attribute
        query = exc.query if isinstance(exc, MissingDatasetError) else None
    except BaseException:  # noqa: BLE001
        query = None
    if isinstance(query, str):
        error["query"] = query
    return error


def _make_scratch(scratch: str) -> None:
    """The execution's private working directory, with PandasAI's chart folder in it."""
    os.mkdir(scratch, 0o700)
    os.mkdir(os.path.join(scratch, "exports"))
    os.mkdir(os.path.join(scratch, "exports", "charts"))
    os.chdir(scratch)


def _link_data(scratch: str, data_dir: str) -> None:
    """Uploaded files as they are now, reachable by their names from the working directory."""
    try:
        names = os.listdir(data_dir)
    except OSError:
        names = []
    for name in names:
        if wire.FILE_NAME_RE.match(name) and name != "exports":
            try:
                os.symlink(os.path.join(data_dir, name), os.path.join(scratch, name))
            except OSError:
                continue


def _loader(cache: Mapping[str, Any], data_dir: str) -> Callable[[str], Any]:
    def load_dataset(name: str) -> Any:
        """Return the uploaded file ``name`` as a DataFrame (served from the warm cache if there)."""
        wire.validate_file_name(name)
        if name in cache:
            return cache[name]
        return read_data_file(os.path.join(data_dir, name))

    return load_dataset


def read_data_file(path: Any, *, use_threads: bool = True, name: str | None = None) -> Any:
    """Read Parquet, CSV, JSON or Feather into a DataFrame, chosen by the file's suffix (of
    ``name`` when ``path`` is a file object: the zygote parses bytes it read, datacache.py)."""
    import pandas as pd  # noqa: PLC0415 - preloaded by the fork-server

    lower = (name or path).lower()
    if lower.endswith(".parquet") or lower.endswith(".pq"):
        import pyarrow.parquet as pq  # noqa: PLC0415

        if use_threads:
            return pq.read_table(path).to_pandas()
        # ParquetFile.read starts no thread (read_table starts pyarrow's I/O pool even without
        # use_threads): the zygote stays single-threaded and can move its heap again.
        return pq.ParquetFile(path).read(use_threads=False).to_pandas(use_threads=False)
    if lower.endswith(".csv"):
        return pd.read_csv(path)
    if lower.endswith(".json"):
        return pd.read_json(path)
    if lower.endswith(".feather") or lower.endswith(".arrow"):
        return pd.read_feather(path, use_threads=use_threads)
    raise ValueError(f"{os.path.basename(name or path)}: unknown data file type (use .parquet, .csv, .json, .feather)")


def build_namespace(datasets: Mapping[str, str], cache: Mapping[str, Any], data_dir: str,
                    ask: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """The globals user code sees: like PandasAI's CodeExecutor (pd, np, plt) plus data access.

    ``ask`` (SQL by call-back, :mod:`.sqlchannel`) answers a query not staged in ``datasets``."""
    import matplotlib.pyplot as plt  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415

    load_dataset = _loader(cache, data_dir)

    def execute_sql_query(sql_query: str) -> Any:
        """PandasAI's data access: returns the DataFrame the client staged for this query."""
        name = datasets.get(sql_query)
        if name is None and isinstance(sql_query, str):
            name = datasets.get(sql_query.strip())
        if name is None:
            if ask is not None:
                return ask(sql_query)
            raise MissingDatasetError(str(sql_query))
        return load_dataset(name)

    return {  # no __name__, as in PandasAI's environment (its warnings filter as locally)
        "__builtins__": __builtins__,
        "pd": pd,
        "np": np,
        "plt": plt,
        "execute_sql_query": execute_sql_query,
        "load_dataset": load_dataset,
        "DATA_DIR": data_dir,
        "MissingDatasetError": MissingDatasetError,
    }


def run_job(job: Mapping[str, Any], cache: Mapping[str, Any], data_dir: str, scratch: str,
            shared_before: Mapping[str, set[str]] | None = None,
            channel: sqlchannel.ChildChannel | None = None) -> bytes:
    """Run one job's code in this process; return the result message (JSON bytes).

    First the clean slate (:mod:`.cleanslate`): its scratch directory as made, whatever another
    execution planted there while this spare waited, and the pod's shared directories as the
    fork-server found them (``shared_before``; the zygote sweeps them after each exit too, but
    a job may start before that sweep has run). ``channel``: SQL by call-back (:mod:`.sqlchannel`)."""
    isolation.apply_rlimits(isolation.ChildLimits(**job["limits"]))
    cleanslate.fresh_scratch(scratch)
    cleanslate.sweep_shared(shared_before or {}, os.path.dirname(scratch))
    _link_data(scratch, data_dir)
    namespace = build_namespace(job.get("datasets") or {}, cache, data_dir,
                                channel.ask if channel is not None else None)
    status, error, result = "ok", None, None
    try:
        code = compile(job["code"], CODE_FILENAME, "exec")
        exec(code, namespace)  # noqa: S102 - running untrusted code is this module's job
    except MemoryError as exc:
        status, error = "memory", _error(exc)
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt included
        status, error = "error", _error(exc)
    if status == "ok":
        try:
            result = wire.encode_result(namespace.get("result"), cwd=scratch)
        except MemoryError as exc:
            status, error = "memory", _error(exc, 0)
        except wire.ResultError as exc:
            status, error = "error", {"type": "ResultError", "message": str(exc), "traceback": ""}
        except BaseException as exc:  # noqa: BLE001 - a broken value (e.g. __str__ raising)
            status, error = "error", _error(exc, 0)
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) * 1024
    try:
        return framing.dumps({"status": status, "result": result, "error": error, "peak_rss_bytes": rss})
    except MemoryError as exc:
        return framing.dumps({"status": "memory", "result": None, "error": _error(exc, 0)})
    except (TypeError, ValueError) as exc:
        return framing.dumps({"status": "error", "result": None,
                              "error": {"type": "ResultError", "message": str(exc), "traceback": ""}})
