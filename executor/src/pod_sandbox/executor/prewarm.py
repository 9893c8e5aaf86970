"""An idle spare's warm-up: touch the common pandas paths before its job arrives, stopping at once when one does.

A spare forked from the zygote shares its pages copy-on-write; the first write to a page (most
often a reference count of an inherited object) copies it, ~1,000-1,800 faults for a small
query. A spare that has no job yet takes those faults here, on a tiny frame and on a few rows of
each staged dataset, off the request's critical path. The warm-up

* runs after the spare's confinement (seccomp, session, scrubbed environment, scratch as cwd);
  the job's rlimits come with the job and are applied after it, as before;
* polls the job pipe before each step (each well under a millisecond) and returns as soon as
  the job (or EOF: a discarded spare) is there, so a spare that gets its job at once never warms;
* leaves no trace a job could see: no module or namespace globals (the job's namespace is built
  afterwards), no files, no output (warnings are silenced, exceptions end the warm-up quietly),
  no matplotlib figure, no random state, no change to a staged frame's values.
"""

from __future__ import annotations

import select
import warnings
from functools import partial
from typing import Any, Callable, Iterator, Mapping

#: Rows of each staged dataset the warm-up works on (a slice: a view, never a copy of the data).
HEAD_ROWS = 8
#: Staged datasets warmed at most (each costs ~5 ms of CPU, once per spare).
MAX_DATASETS = 4


def job_waiting(poller: "select.poll") -> bool:
    """True when the job pipe is readable or closed: the warm-up must stop now."""
    return bool(poller.poll(0))


def _tiny_frame() -> Any:
    import numpy as np  # noqa: PLC0415 - preloaded in the zygote
    import pandas as pd  # noqa: PLC0415

    return pd.DataFrame({
        "k": ["a", "b", "a", "c", "b", "a", "c", "b"],
        "n": np.arange(8, dtype="int64"),
        "x": np.linspace(0.0, 7.0, 8),
    })


def _query_steps(box: dict[str, Any], source: Callable[[], Any],
                 rows: int = HEAD_ROWS) -> Iterator[Callable[[], object]]:
    """A filter, ``.loc``, reductions and a group-by on a few rows of ``source()``, one op a step."""

    def head() -> object:
        box["h"] = source().iloc[:rows]
        kinds = [(column, getattr(dtype, "kind", "O")) for column, dtype in box["h"].dtypes.items()]
        box["col"] = next((c for c, kind in kinds if kind in "iuf"), None)
        box["key"] = next((c for c, kind in kinds if kind in "OSUb"), None)
        return box["h"]

    def mask() -> object:
        if box["col"] is not None:
            box["m"] = box["h"][box["col"]] > box["h"][box["col"]].min()
        return None

    def loc() -> object:
        if box["col"] is not None:
            box["s"] = box["h"].loc[box["m"], box["col"]]
        return None

    def reduce() -> object:
        return None if box["col"] is None else (box["s"].mean(), box["h"][box["col"]].sum())

    def boolean_filter() -> object:
        return None if box["col"] is None else box["h"][box["m"]]

    def group_by() -> object:
        if box["col"] is None or box["key"] is None:
            return None
        return box["h"].groupby(box["key"])[box["col"]].sum()

    yield from (head, mask, loc, reduce, boolean_filter, group_by)


def steps(datasets: Mapping[str, Any], rows: int = HEAD_ROWS) -> Iterator[Callable[[], object]]:
    """The warm-up, as small steps (each well under 2 ms here, most under 1 ms): first the staged
    frames' own columns and dtypes on a few rows (what the next job most likely reads), then the
    same operations on a tiny frame (for jobs that build their own) and a number result's
    encoding. Sorting, ``to_dict`` and a DataFrame result's Parquet encoding (2-3 ms each) were
    measured and left out (executor/README.md: no query gain, more CPU)."""
    from .. import wire  # noqa: PLC0415

    box: dict[str, Any] = {}
    for frame in list(datasets.values())[:MAX_DATASETS]:
        yield partial(_touch_columns, frame)
        yield from _query_steps(box, partial(_same, frame), rows)

    def tiny() -> object:
        box["f"] = _tiny_frame()
        return box["f"]

    def encode_number() -> object:
        return wire.encode_result({"type": "number", "value": float(box["f"]["x"].mean())})

    yield tiny
    yield from _query_steps(box, partial(box.__getitem__, "f"))
    yield encode_number
    box.clear()


def _same(value: Any) -> Any:
    return value


def _touch_columns(frame: Any) -> object:
    """Column lookups of a staged frame (its cached column Series, index and lookup engines)."""
    columns = getattr(frame, "columns", ())
    for column in list(columns)[:64]:
        frame[column]  # noqa: B018
    return len(frame.index)


def warm_until_job(job_fd: int, datasets: Mapping[str, Any]) -> int:
    """Run the warm-up steps until they end or the job pipe is ready; return the steps run.

    Never raises: a step that fails ends the warm-up (the job then runs as it would have)."""
    poller = select.poll()
    poller.register(job_fd, select.POLLIN)
    done = 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for step in steps(datasets):
                if job_waiting(poller):
                    break
                step()
                done += 1
    except BaseException:  # noqa: BLE001,S110 - a warm-up is best effort and must stay invisible
        pass
    return done
