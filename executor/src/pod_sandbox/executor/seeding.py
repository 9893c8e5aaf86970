"""New seeds for the global random generators before each fork: every execution draws its own numbers.

``fork()`` copies the generators' state, so without a reseed every execution would draw the same
"random" numbers from ``np.random.rand``, ``DataFrame.sample`` and friends (numpy never reseeds
after a fork) and from ``random`` (which reseeds in ``os.fork()``'s after-fork hooks, and those
:mod:`.fastfork` skips). The zygote reseeds both right before each fork, where the generators'
pages are already its own: a spare doing it would pay ~0.2-0.7 ms of first writes to shared pages.
"""

from __future__ import annotations

import ctypes
import os
import random

#: MT19937's state: 624 32-bit words, then the position of the next word (a C int).
MT_WORDS = 624
KEY_BYTES = MT_WORDS * 4


class GlobalSeeds:
    """Reseeds numpy's global ``RandomState`` and Python's ``random``, see :meth:`reseed`.

    For numpy it writes 624 words from ``os.urandom`` straight into the global generator's
    MT19937 state, at the address numpy publishes for it (``MT19937.ctypes.state_address``), and
    puts the position at the end, so the next draw regenerates the whole state from them: what
    assigning ``MT19937.state`` does. ``np.random.seed(array)`` does the same through numpy's
    legacy seeding code, which writes to ~100 more of the pages the zygote shares with its
    children after each fork: 0.35 against 0.08 ms of CPU per fork (a warm parent forking 300
    times). The layout is checked once, here, against what numpy's ``.state`` reports; on any
    mismatch (another numpy) :meth:`reseed` calls ``np.random.seed`` instead.
    """

    def __init__(self) -> None:
        import numpy as np  # noqa: PLC0415 - preloaded by the fork-server

        self._np = np
        #: numpy's MT19937 state in place: its key, the key's first word, the position
        self._state: tuple[ctypes.Array[ctypes.c_uint32], ctypes.c_uint32, ctypes.c_int] | None = None
        bit_generator = np.random.get_bit_generator()
        state = bit_generator.state
        if state.get("bit_generator") != "MT19937":
            return
        address = bit_generator.ctypes.state_address
        key = (ctypes.c_uint32 * MT_WORDS).from_address(address)
        pos = ctypes.c_int.from_address(address + KEY_BYTES)
        # Read only: the memory must hold exactly what numpy says the state is.
        if bytes(key) != state["state"]["key"].astype("<u4").tobytes() or pos.value != state["state"]["pos"]:
            return
        self._state = (key, ctypes.c_uint32.from_address(address), pos)

    @property
    def direct(self) -> bool:
        """True when numpy's state is written directly (the layout matched)."""
        return self._state is not None

    def reseed(self) -> None:
        """New seeds for numpy's global generator and Python's ``random``."""
        if self._state is not None:
            key, first, pos = self._state
            ctypes.memmove(key, os.urandom(KEY_BYTES), KEY_BYTES)
            first.value |= 0x80000000  # as MT's init_by_array: the state is never all zero
            pos.value = MT_WORDS
        else:
            self._np.random.seed(self._np.frombuffer(os.urandom(16), dtype=self._np.uint32))
        random.seed()
