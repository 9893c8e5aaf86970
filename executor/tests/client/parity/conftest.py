"""Fixtures of the differential suite: the corpus's tables as PandasAI frames, working directories."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).parent))

pai = pytest.importorskip("pandasai", reason="PandasAI is not installed (requirements/pandasai.txt)")

from parity_corpus import TABLES  # noqa: E402


@pytest.fixture(scope="module")
def parity_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A directory of the module's own: every run's working directory is made in it."""
    manager = pai.config.get().file_manager
    saved = manager.base_path
    try:
        yield tmp_path_factory.mktemp("parity")
    finally:
        manager.base_path = saved  # frames() points it at each run's own folder


@pytest.fixture(scope="module")
def frames(parity_root: Path) -> Callable[[tuple[str, ...]], list[Any]]:
    """Fresh PandasAI DataFrames for a program's tables; ``disk:<name>`` is a dataset made with
    ``pai.create`` in the run's working directory (Parquet on disk, queried through PandasAI's
    loader), the others are in memory (registered in DuckDB by the Agent), named as
    ``pai.read_csv`` names them. Called with the run's working directory as the current one."""
    from pandasai.helpers.path import find_project_root  # noqa: PLC0415

    def make(names: tuple[str, ...]) -> list[Any]:
        out = []
        for name in names:
            if name.startswith("disk:"):
                table = name.split(":", 1)[1]
                path = f"parity-corpus/{table}"
                # pai.create writes under the file manager's base path, pai.load reads under the
                # project root of the working directory: make them the same folder
                pai.config.get().file_manager.base_path = os.path.join(find_project_root(), "datasets")
                pai.create(path, pai.DataFrame(TABLES[table]()), description=f"the {table} table")
                out.append(pai.load(path))
            else:
                out.append(pai.DataFrame(TABLES[name](), _table_name=name))
        return out

    return make
