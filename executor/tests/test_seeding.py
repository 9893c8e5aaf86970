"""seeding: the zygote's reseed before each fork gives every child its own numbers, written
straight into numpy's MT19937 state or, when its layout is not the one expected, through numpy."""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
from forked import in_child

from pod_sandbox.executor import fastfork, seeding


def _draws_of_children(seeds: seeding.GlobalSeeds, children: int = 3) -> list[tuple[float, float, list[int]]]:
    """Reseed before each fork, as the zygote does; what each child draws first."""
    draws = []
    for _ in range(children):
        seeds.reseed()
        r, w = os.pipe()
        pid = fastfork.fork()
        if pid == 0:
            value = repr((float(np.random.rand()), random.random(),
                          np.random.permutation(1000)[:3].tolist()))
            os.write(w, value.encode())
            os._exit(0)
        os.close(w)
        draws.append(eval(os.read(r, 4096).decode()))  # noqa: S307 - our own child's repr
        os.close(r)
        os.waitpid(pid, 0)
    return draws


def test_with_this_numpy_the_state_is_written_directly_and_numpy_reads_it_back() -> None:
    def body() -> int:
        seeds = seeding.GlobalSeeds()
        if not seeds.direct:
            return 1
        before = np.random.get_state()[1].copy()
        seeds.reseed()
        name, key, pos, has_gauss, _ = np.random.get_state()
        if name != "MT19937" or pos != seeding.MT_WORDS or has_gauss != 0:
            return 2
        if (key == before).all() or not key[0] & 0x80000000:
            return 3
        first = np.random.rand()
        seeds.reseed()
        return 0 if np.random.rand() != first else 4

    assert in_child(body) == 0


def test_every_child_draws_its_own_numbers() -> None:
    def body() -> int:
        draws = _draws_of_children(seeding.GlobalSeeds())
        numpy_draws = {d[0] for d in draws}
        python_draws = {d[1] for d in draws}
        samples = {tuple(d[2]) for d in draws}
        return 0 if len(numpy_draws) == len(python_draws) == len(samples) == 3 else 1

    assert in_child(body) == 0


_REAL_BIT_GENERATOR = np.random.get_bit_generator


class _OtherLayout:
    """A bit generator whose reported state does not match the memory at its address."""

    def __init__(self) -> None:
        self.real = _REAL_BIT_GENERATOR()
        self.ctypes = self.real.ctypes

    @property
    def state(self) -> dict[str, Any]:
        state = self.real.state
        state["state"]["key"] = state["state"]["key"] ^ 1
        return state


def test_when_the_layout_does_not_match_it_reseeds_through_numpy(monkeypatch) -> None:
    def body() -> int:
        monkeypatch.setattr(np.random, "get_bit_generator", _OtherLayout)
        seeds = seeding.GlobalSeeds()
        monkeypatch.undo()
        if seeds.direct:
            return 1
        before = np.random.get_state()[1].copy()
        seeds.reseed()
        if (np.random.get_state()[1] == before).all():
            return 2
        return 0 if len({d[0] for d in _draws_of_children(seeds)}) == 3 else 3

    assert in_child(body) == 0
