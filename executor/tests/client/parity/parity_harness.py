"""The differential harness: one program through PandasAI's own Agent, locally and in the sandbox.

``run(program, sandbox=None)`` drives PandasAI 3.0.0's ``Agent`` (or ``DataFrame.chat``) with a
fixed-code LLM (:class:`FixedCodeLLM`, a ``pandasai.llm.base.LLM`` answering with prepared code
in a Markdown block, as a chat model does) and records what the user sees: the response class
and value (or the exception ``chat()`` raised), what was printed to stdout and stderr, the chart
file, how often the LLM was asked (PandasAI's retries), the SQL PandasAI ran on the host, and,
with a sandbox, how many executions the pod ran. ``differences(local, sandboxed)`` lists where
the two outcomes disagree, each as a :class:`Difference` of a named kind.

Both sides start from the same state: a fresh working directory, PandasAI's global config set
for the program (restored after), no open matplotlib figure, and the warning filters and
``showwarning`` of a plain ``python`` process (pytest's own warning capture would otherwise
swallow the warnings local execution prints).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import re
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd

import pandasai as pai
from pandasai import Agent
from pandasai.llm.base import LLM

UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
CAUSE_SEPARATOR = "\nThe above exception was the direct cause of the following exception:\n"
#: A frame of the generated code in a traceback: locally exec()'d as "<string>", in the pod "<sandbox>".
CODE_FRAME_RE = re.compile(r'File "(<string>|<sandbox>)", line (\d+), in (\S+)')
#: Where a library is installed: the host's virtualenv locally, the image's in the pod.
SITE_PACKAGES_RE = re.compile(r"""[^\s"':]*/site-packages/""")


class FixedCodeLLM(LLM):
    """An LLM that answers with prepared code: ``codes[i]`` on the i-th call (the last one after)."""

    def __init__(self, codes: Sequence[str]) -> None:
        super().__init__()
        self.codes = list(codes)
        self.calls = 0

    @property
    def type(self) -> str:
        return "fixed-code"

    def call(self, instruction: Any, context: Any = None) -> str:
        code = self.codes[min(self.calls, len(self.codes) - 1)]
        self.calls += 1
        return "Here is the code:\n```python\n" + code.strip("\n") + "\n```\n"


@dataclass(frozen=True)
class Program:
    """One generated program of the corpus and how the user reaches it."""

    name: str
    tags: frozenset[str]
    codes: tuple[str, ...]  # what the LLM answers, attempt after attempt (retries)
    tables: tuple[str, ...] = ("sales",)
    question: str = "Answer the question about the data"
    via: str = "agent"  # or "dataframe_chat": DataFrame.chat(question, sandbox=...)
    timeout_s: float | None = None  # the sandbox's timeout_s for this program (None: the client's default)
    before: tuple[str, ...] = ()  # codes answered by earlier chats of the same session (host state)
    files: tuple[tuple[str, str], ...] = ()  # files the user has in the working directory on the host
    kept: frozenset[str] = frozenset()  # kinds of differences that are right to keep (README)
    open: frozenset[str] = frozenset()  # kinds not fixed yet (strict xfail until they are)
    check: Callable[["Outcome", "Outcome"], None] | None = None  # extra check of a kept difference


@dataclass
class Outcome:
    """What the user saw from one ``chat()``."""

    response_class: str  # e.g. "NumberResponse", "ErrorResponse", or "raised"
    value: Any = None
    raised: str | None = None  # the PandasAI/builtin exception class chat() raised
    raised_message: str = ""
    last_code: str | None = None
    error_text: str | None = None  # ErrorResponse.error
    stdout: str = ""
    stderr: str = ""
    llm_calls: int = 0
    sql_calls: list[str] = field(default_factory=list)
    pod_executions: int | None = None  # sandbox runs only: executions the executor counted
    sandbox_calls: int = 0  # sandbox runs only: codes PandasAI handed to sandbox.execute
    sandbox_failures: list[str] = field(default_factory=list)  # what those attempts raised
    chart: tuple[tuple[int, int], str, bytes] | None = None  # (size, mode, pixels) of the chart file
    seconds: float = 0.0


@dataclass(frozen=True)
class Difference:
    """One way the sandboxed outcome differs from the local one."""

    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


# -- a plain process's warnings -----------------------------------------------------------------------

_PLAIN_FILTERS: list[tuple[Any, ...]] | None = None


def plain_filters() -> list[tuple[Any, ...]]:
    """The warning filters of a plain ``python -I`` of this interpreter (asked once, not assumed)."""
    global _PLAIN_FILTERS  # noqa: PLW0603 - a cache of a fact about the interpreter
    if _PLAIN_FILTERS is None:
        # message and module are None, a plain string (the interpreter's own defaults) or a regex
        probe = (
            "import json, warnings\n"
            "def part(x):\n"
            "    return None if x is None else [x, False] if isinstance(x, str) else [x.pattern, True]\n"
            "print(json.dumps([[a, part(m), c.__module__, c.__qualname__, part(mod), ln]"
            " for a, m, c, mod, ln in warnings.filters]))"
        )
        out = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True,
                             timeout=60, check=True).stdout

        def rebuild(part: list[Any] | None, flags: int = 0) -> Any:
            if part is None:
                return None
            text, is_regex = part
            return re.compile(text, flags) if is_regex else text

        filters = []
        for action, message, cat_module, cat_name, module, lineno in json.loads(out):
            category = getattr(sys.modules[cat_module], cat_name)
            filters.append((action, rebuild(message, re.I), category, rebuild(module), lineno))
        _PLAIN_FILTERS = filters
    return list(_PLAIN_FILTERS)


def _showwarning(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
                 line: str | None = None) -> None:
    """Python's own default: ``formatwarning`` written to the current ``sys.stderr``."""
    (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))


@contextlib.contextmanager
def plain_process_io() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """stdout/stderr captured, warnings filtered and shown as in a plain ``python`` process."""
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings():
        warnings.filters[:] = plain_filters()
        warnings.showwarning = _showwarning
        warnings._filters_mutated()  # type: ignore[attr-defined]  # drop cached "once" decisions
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield out, err


# -- running a program --------------------------------------------------------------------------------


@contextlib.contextmanager
def pandasai_config(llm: LLM) -> Iterator[None]:
    """PandasAI's global config for one program (its defaults but the LLM and logs), restored after."""
    manager = pai.config
    saved = manager.get()
    pai.config.set({"llm": llm, "save_logs": False, "verbose": False})
    try:
        yield
    finally:
        manager._config = saved  # noqa: SLF001 - put back exactly what was there


@contextlib.contextmanager
def sql_recorder(calls: list[str]) -> Iterator[None]:
    """Record every query PandasAI's Agent runs on the host (its ``_execute_sql_query``)."""
    original = Agent._execute_sql_query

    def recording(self: Agent, query: str) -> pd.DataFrame:
        calls.append(query)
        return original(self, query)

    Agent._execute_sql_query = recording  # type: ignore[method-assign]
    try:
        yield
    finally:
        Agent._execute_sql_query = original  # type: ignore[method-assign]


@contextlib.contextmanager
def counting_calls(sandbox: Any, handed: list[str], failures: list[str]) -> Iterator[None]:
    """Record each code PandasAI hands to ``sandbox.execute``, and what each failed attempt raised
    (PandasAI swallows it when it retries); nothing to do without a sandbox."""
    if sandbox is None:
        yield
        return
    original = sandbox.execute

    def execute(code: str, environment: dict) -> dict:
        handed.append(code)
        try:
            return original(code, environment)
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {str(exc)[:300]}")
            raise

    sandbox.execute = execute
    try:
        yield
    finally:
        del sandbox.execute  # the class's method again


def executions_so_far(sandbox: Any) -> int:
    """Executions the sandbox's executor has finished, from its ``/metrics`` (server-side count)."""
    session = sandbox.session
    if session is None:
        return 0
    body = session.http.request("GET", "/metrics", auth=False).body.decode()
    total = 0.0
    for line in body.splitlines():
        if line.startswith("pandasai_executor_executions_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def _pandasai_family(exc: BaseException) -> str:
    """The exception class a user would catch: PandasAI's own if it is one, else the first builtin."""
    mro = type(exc).__mro__
    for cls in mro:
        if cls.__module__.startswith("pandasai."):
            return cls.__name__
    for cls in mro:
        if cls.__module__ == "builtins":
            return cls.__name__
    return type(exc).__name__


def _chart_pixels(path: Path) -> tuple[tuple[int, int], str, bytes] | None:
    from PIL import Image  # noqa: PLC0415 - PandasAI's own dependency

    if not path.is_file():
        return None
    with Image.open(path) as img:
        rgba = img.convert("RGBA")
        return rgba.size, img.mode, rgba.tobytes()


def run(program: Program, frames: Callable[[tuple[str, ...]], list[Any]], workdir: Path,
        sandbox: Any = None) -> Outcome:
    """One ``chat()`` of ``program`` (after its ``before`` chats), locally or through ``sandbox``."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

    workdir.mkdir(parents=True, exist_ok=True)
    saved_cwd = os.getcwd()
    saved_timeout = getattr(sandbox, "timeout_s", None)
    os.chdir(workdir)
    plt.close("all")  # both sides start with no open figure (a fresh host process has none)
    try:
        if sandbox is not None and program.timeout_s is not None:
            sandbox.timeout_s = program.timeout_s
        for name, text in program.files:
            (workdir / name).write_text(text, encoding="utf-8")
        dfs = frames(program.tables)
        for code in program.before:
            _chat(program, dfs, FixedCodeLLM([code]), sandbox, sql=[])
        llm = FixedCodeLLM(program.codes)
        sql: list[str] = []
        executions_before = executions_so_far(sandbox) if sandbox is not None else 0
        handed: list[str] = []
        failures: list[str] = []
        t0 = time.perf_counter()
        with counting_calls(sandbox, handed, failures):
            outcome = _chat(program, dfs, llm, sandbox, sql)
        outcome.seconds = time.perf_counter() - t0
        outcome.sandbox_calls = len(handed)
        outcome.sandbox_failures = failures
        outcome.llm_calls = llm.calls
        outcome.sql_calls = sql
        if sandbox is not None:
            outcome.pod_executions = executions_so_far(sandbox) - executions_before
        if outcome.response_class == "ChartResponse" and isinstance(outcome.value, str):
            outcome.chart = _chart_pixels(workdir / outcome.value)
        return outcome
    finally:
        os.chdir(saved_cwd)
        if sandbox is not None:
            sandbox.timeout_s = saved_timeout
        plt.close("all")


def _chat(program: Program, dfs: list[Any], llm: FixedCodeLLM, sandbox: Any, sql: list[str]) -> Outcome:
    with pandasai_config(llm), sql_recorder(sql), plain_process_io() as (out, err):
        try:
            if program.via == "dataframe_chat":
                dfs[0]._agent = None  # noqa: SLF001 - a fresh conversation each time
                response = dfs[0].chat(program.question, sandbox=sandbox)
                agent = dfs[0]._agent  # noqa: SLF001
            else:
                agent = Agent(dfs if len(dfs) > 1 else dfs[0], sandbox=sandbox)
                response = agent.chat(program.question)
        except BaseException as exc:  # noqa: BLE001 - SystemExit from the code included
            if isinstance(exc, KeyboardInterrupt):
                raise
            return Outcome("raised", raised=_pandasai_family(exc), raised_message=str(exc),
                           stdout=out.getvalue(), stderr=err.getvalue())
    return Outcome(
        response_class=type(response).__name__,
        value=copy.deepcopy(response.value),
        last_code=response.last_code_executed,
        error_text=getattr(response, "error", None),
        stdout=out.getvalue(),
        stderr=err.getvalue(),
        llm_calls=llm.calls,
    )


# -- comparing ----------------------------------------------------------------------------------------


def normalise(text: str | None) -> str | None:
    """UUIDs (PandasAI's chart file names, new for every generated code) as ``<uuid>``."""
    return None if text is None else UUID_RE.sub("<uuid>", text)


def _user_blocks(text: str) -> list[str]:
    """The blocks of a formatted chain that belong to the code's own exception: all but the last
    (the last one is PandasAI's ``CodeExecutionError``, or the client's, raised from it)."""
    blocks = text.split(CAUSE_SEPARATOR)
    return blocks[:-1] if len(blocks) > 1 else blocks


def root_error(text: str) -> str:
    """The last line of the code's own exception in a formatted chain, e.g. ``KeyError: 'nope'``."""
    lines = [line for line in _user_blocks(text)[-1].strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def code_frames(text: str) -> list[tuple[str, str, str]]:
    """The generated code's frames in a formatted chain: (file name, line, function)."""
    return CODE_FRAME_RE.findall("\n".join(_user_blocks(text)))


def _same_number(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _frame_difference(a: Any, b: Any) -> str | None:
    if type(a) is not type(b):
        return f"{type(a).__name__} locally, {type(b).__name__} in the sandbox"
    try:
        if isinstance(a, pd.Series):
            pd.testing.assert_series_equal(a, b, check_exact=True, check_freq=True, check_flags=True)
        else:
            pd.testing.assert_frame_equal(a, b, check_exact=True, check_freq=True, check_flags=True)
    except AssertionError as exc:
        return " ".join(str(exc).split())[:600]
    return None


def differences(local: Outcome, boxed: Outcome) -> list[Difference]:
    """Every way ``boxed`` (the sandbox) differs from ``local``, by kind."""
    found: list[Difference] = []

    def differ(kind: str, detail: str) -> None:
        found.append(Difference(kind, detail))

    if (local.response_class, local.raised) != (boxed.response_class, boxed.raised):
        differ("outcome", f"{local.response_class}/{local.raised} locally, "
                          f"{boxed.response_class}/{boxed.raised} in the sandbox")
        return found  # the rest compares like with like
    if local.raised is not None and local.raised_message != boxed.raised_message:
        differ("raised-message", f"{local.raised_message!r} locally, {boxed.raised_message!r} in the sandbox")
    if local.response_class == "NumberResponse":
        if type(local.value) is not type(boxed.value):
            differ("number-type", f"{type(local.value).__module__}.{type(local.value).__name__} locally, "
                                  f"{type(boxed.value).__module__}.{type(boxed.value).__name__} in the sandbox")
        if not _same_number(local.value, boxed.value):
            differ("value", f"{local.value!r} locally, {boxed.value!r} in the sandbox")
    elif local.response_class == "DataFrameResponse":
        problem = _frame_difference(local.value, boxed.value)
        if problem:
            differ("frame", problem)
    elif local.response_class == "ChartResponse":
        if normalise(local.value) != normalise(boxed.value):
            differ("chart-value", f"{normalise(local.value)!r:.120} locally, {normalise(boxed.value)!r:.120} in the sandbox")
        if local.chart is None or boxed.chart is None:
            differ("chart-file", f"file present locally: {local.chart is not None}, "
                                 f"in the sandbox run: {boxed.chart is not None}")
        elif local.chart != boxed.chart:
            differ("chart-pixels", f"{local.chart[:2]} locally, {boxed.chart[:2]} in the sandbox")
    elif local.response_class == "ErrorResponse":
        if local.value != boxed.value:
            differ("value", f"{local.value!r} locally, {boxed.value!r} in the sandbox")
        lerr, berr = local.error_text or "", boxed.error_text or ""
        if root_error(lerr) != root_error(berr):
            differ("error", f"{root_error(lerr)!r} locally, {root_error(berr)!r} in the sandbox")
        lframes, bframes = code_frames(lerr), code_frames(berr)
        if [f[1:] for f in lframes] != [f[1:] for f in bframes]:
            differ("error-frames", f"{lframes} locally, {bframes} in the sandbox")
        elif {f[0] for f in lframes} != {f[0] for f in bframes}:
            differ("code-filename", f"{sorted({f[0] for f in lframes})} locally, "
                                    f"{sorted({f[0] for f in bframes})} in the sandbox")
    elif local.value != boxed.value:
        differ("value", f"{local.value!r:.200} locally, {boxed.value!r:.200} in the sandbox")
    if normalise(local.last_code) != normalise(boxed.last_code):
        differ("last-code", "the code PandasAI reports as executed differs")
    if local.stdout != boxed.stdout:
        differ("stdout", f"{local.stdout[-300:]!r} locally, {boxed.stdout[-300:]!r} in the sandbox")
    if local.stderr != boxed.stderr:
        lerr = SITE_PACKAGES_RE.sub("<site-packages>/", local.stderr)
        berr = SITE_PACKAGES_RE.sub("<site-packages>/", boxed.stderr)
        if lerr == berr:
            differ("library-paths", "warnings of library code name the pod's install path")
        elif berr.replace("<sandbox>:", "<string>:") == lerr:
            differ("code-filename", "warnings name the code '<sandbox>' in the pod, '<string>' locally")
        else:
            differ("stderr", f"{local.stderr[-400:]!r} locally, {boxed.stderr[-400:]!r} in the sandbox")
    if local.llm_calls != boxed.llm_calls:
        differ("retries", f"the LLM was asked {local.llm_calls} times locally, {boxed.llm_calls} with the "
                          f"sandbox; its attempts raised {boxed.sandbox_failures}")
    if local.sql_calls != boxed.sql_calls:  # each call of execute_sql_query runs its query once, in order
        differ("sql-calls", f"{local.sql_calls} locally, {boxed.sql_calls} in the sandbox")
    if boxed.pod_executions is not None and boxed.pod_executions != boxed.sandbox_calls:
        differ("pod-executions", f"the pod ran {boxed.pod_executions} executions for the "
                                 f"{boxed.sandbox_calls} codes PandasAI gave the sandbox")
    return found


def describe(diffs: Sequence[Difference]) -> str:
    """One difference per line, for assertion messages."""
    return "\n".join(f"  - {d}" for d in diffs) or "  (none)"


class OpenDifference(Exception):
    """A known difference that is not fixed yet (the test is a strict xfail raising this)."""


def numpy_scalar(value: Any) -> bool:
    """True for numpy scalars (what local execution often answers numbers with)."""
    return isinstance(value, np.generic)
