"""The verdict on one program: equal, a kept difference as documented, or an open difference."""

from __future__ import annotations

from typing import Any

import pytest

from parity_corpus import KEPT_EVERYWHERE, KEPT_SHOWS, OPEN, OPEN_SHOWS
from parity_harness import Outcome, OpenDifference, Program, describe, differences


def marks(program: Program) -> list[Any]:
    """A strict xfail (raising OpenDifference only) for a program with an open difference."""
    if not program.open:
        return []
    reason = "; ".join(f"{kind}: {OPEN[kind]}" for kind in sorted(program.open))
    return [pytest.mark.xfail(raises=OpenDifference, strict=True, reason=reason)]


def params(programs: list[Program]) -> list[Any]:
    """The corpus as pytest parameters, named, with their marks."""
    return [pytest.param(p, id=p.name, marks=marks(p)) for p in programs]


def assert_parity(program: Program, local: Outcome, boxed: Outcome) -> None:
    """Fail unless the sandboxed outcome equals the local one but for the program's listed kinds.

    Kept differences must show exactly as documented (the program's own check); open ones
    raise :class:`OpenDifference` while they are there, so the strict xfail turns into a failure
    the day they are fixed. Any other difference fails outright, open or not.
    """
    diffs = [d for d in differences(local, boxed) if d.kind not in KEPT_EVERYWHERE]
    allowed: set[str] = set()
    for kind in program.kept:
        allowed |= KEPT_SHOWS[kind]
    for kind in program.open:
        allowed |= OPEN_SHOWS[kind]
    unexpected = [d for d in diffs if d.kind not in allowed]
    assert not unexpected, (f"{program.name}: the sandbox answers differently from local execution:\n"
                            f"{describe(unexpected)}\nlocal: {local}\nsandbox: {boxed}")
    if program.kept:
        assert diffs, f"{program.name}: the kept difference {sorted(program.kept)} did not show"
        assert program.check is not None, f"{program.name}: a kept difference needs its check"
        program.check(local, boxed)
    if program.open and diffs:
        raise OpenDifference(f"{program.name} ({', '.join(sorted(program.open))}):\n{describe(diffs)}")
