"""The zygote's dataset loading never trusts the data directory (user code writes it): what it
cannot open safely it skips at once; what it reads it parses first in a confined, deadlined
vetting process, so a file that expands, hangs or crashes the parser costs the zygote nothing."""

from __future__ import annotations

import resource
import time

import pytest

from pod_sandbox.executor import datacache
from test_workspace_files import PLANTS

MIB = 1024 * 1024


def write_parquet_bomb(path: str, row_groups: int = 250) -> None:
    """A ~60 KB Parquet file of ``row_groups`` million int64 zeros (2 GB once read)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"a": pa.array(np.zeros(1_000_000, dtype=np.int64))})
    with pq.ParquetWriter(path, table.schema, compression="zstd") as writer:
        for _ in range(row_groups):
            writer.write_table(table, row_group_size=1_000_000)


@pytest.fixture(scope="session")
def parquet_bomb(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("bomb") / "bomb.parquet")
    write_parquet_bomb(path)
    return path


def _cache(tmp_path, **vet: float) -> datacache.DatasetCache:
    limits = datacache.VetLimits(memory_bytes=int(vet.get("memory_bytes", 512 * MIB)), max_processes=4096,
                                 timeout_s=vet.get("timeout_s", datacache.VET_TIMEOUT_S))
    return datacache.DatasetCache(str(tmp_path), budget_bytes=1024 * MIB, vet_limits=limits)


@pytest.mark.parametrize("kind", sorted(PLANTS))
def test_non_regular_names_are_skipped_at_once(tmp_path, kind) -> None:
    PLANTS[kind](str(tmp_path), "x.csv")
    cache = _cache(tmp_path)
    cache.budget_bytes = 128 * 1024  # a quarter of it is below the oversized file
    t0 = time.monotonic()
    checked = cache.refresh(["x.csv"])
    assert time.monotonic() - t0 < 2
    assert "x.csv" not in cache.view and cache.generation == 0
    if kind not in ("oversized_sparse_file", "hard_link"):
        assert checked["x.csv"] is None  # not a regular file: nothing to compare, nothing to load


def test_a_small_parquet_file_that_expands_to_250m_rows_is_not_loaded(tmp_path, parquet_bomb) -> None:
    with open(parquet_bomb, "rb") as src, open(tmp_path / "d.parquet", "wb") as dst:
        dst.write(src.read())
    cache = _cache(tmp_path)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    verdict = datacache.vet("d.parquet", (tmp_path / "d.parquet").read_bytes(), cache.vet_limits)
    checked = cache.refresh(["d.parquet"])
    assert isinstance(verdict, str), verdict
    assert "d.parquet" not in cache.view and checked["d.parquet"] is not None
    # This process parsed nothing: its peak RSS grew by the file, not by the 2 GB it expands to.
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) * 1024 < 64 * MIB


def test_a_parse_past_the_deadline_is_killed_and_the_file_left_uncached(tmp_path) -> None:
    (tmp_path / "slow.csv").write_text("a,b,c\n" + "1,2.5,xyz\n" * 2_000_000)
    cache = _cache(tmp_path, timeout_s=0.2)
    t0 = time.monotonic()
    cache.refresh(["slow.csv"])
    took = time.monotonic() - t0
    assert "slow.csv" not in cache.view
    assert took < 3, took


def test_a_file_that_parses_within_the_limits_is_cached_from_the_bytes_vetted(tmp_path) -> None:
    (tmp_path / "a.csv").write_text("x\n1\n2\n")
    cache = _cache(tmp_path)
    assert datacache.vet("a.csv", b"x\n1\n2\n", cache.vet_limits) > 0
    cache.refresh(["a.csv"])
    assert int(cache.view["a.csv"]["x"].sum()) == 3


def test_a_parser_that_dies_is_reported_not_raised() -> None:
    verdict = datacache.vet("a.parquet", b"PAR1" + b"\xff" * 64 + b"PAR1",
                            datacache.VetLimits(memory_bytes=512 * MIB, max_processes=4096))
    assert isinstance(verdict, str) and verdict
