"""Bounds on decoding what a sandbox answers (``pod_sandbox.limits``, ``parquet_guard``, ``wire.loads``).

The end-to-end attack suite is ``tests/client/test_hostile_answers.py``; these check the
mechanisms on their own: every codec's decompression is bounded by the page headers, the page
header reader agrees with pyarrow's own metadata on real files, legitimate answers at the
executor's caps pass the shipped defaults, and a forged number never reaches the metrics.
"""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pod_sandbox import parquet_guard, wire
from pod_sandbox.limits import DEFAULT_LIMITS, MIB, AnswerLimits, LimitExceeded

sys.path.insert(0, str(Path(__file__).parent / "client"))
import hostile_answers as h  # noqa: E402

pq = pytest.importorskip("pyarrow.parquet")

CODECS = ("NONE", "SNAPPY", "GZIP", "BROTLI", "ZSTD", "LZ4")
SMALL = AnswerLimits(max_frame_bytes=4 * MIB)


def frame_value(raw: bytes) -> dict:
    return {"encoding": "parquet+base64", "kind": "dataframe", "data": base64.b64encode(raw).decode()}


@pytest.mark.parametrize("codec", CODECS)
def test_a_page_that_decompresses_past_the_budget_is_refused_in_every_codec(codec):
    bomb = h.page_bomb(8 * MIB, codec)
    with pytest.raises(LimitExceeded) as info:
        parquet_guard.read_frame(bomb, SMALL)
    assert info.value.limit == "max_frame_bytes" and "decompress" in info.value.message
    below = h.page_bomb(1 * MIB, codec)  # the same codec within the budget decodes exactly
    assert parquet_guard.read_frame(below, SMALL)["b"][0] == bytes(1 * MIB)


FRAMES = {
    "numbers": pd.DataFrame({"i": np.arange(50_000), "f": np.linspace(0, 1, 50_000)}),
    "strings": pd.DataFrame({"s": [f"v{i % 97}" for i in range(20_000)], "u": [str(i) for i in range(20_000)]}),
    "nulls_and_dates": pd.DataFrame({"d": pd.date_range("2020", periods=1000, tz="UTC"),
                                     "n": pd.array([None, 1] * 500, dtype="Int64")}),
    "categorical_and_lists": pd.DataFrame({"c": pd.Categorical(["a", "b"] * 500), "l": [[1, 2]] * 1000}),
    "many_row_groups": pd.DataFrame({"x": np.arange(300_000)}),
}


@pytest.mark.parametrize("name", sorted(FRAMES))
@pytest.mark.parametrize("codec", CODECS)
def test_the_page_walk_agrees_with_pyarrows_own_sizes(name, codec):
    buf = io.BytesIO()
    FRAMES[name].to_parquet(buf, engine="pyarrow", compression=None if codec == "NONE" else codec.lower(),
                            row_group_size=100_000, data_page_size=64 * 1024)
    raw = buf.getvalue()
    meta = pq.ParquetFile(io.BytesIO(raw)).metadata
    data = memoryview(raw)
    for g in range(meta.num_row_groups):
        for c in range(meta.num_columns):
            chunk = meta.row_group(g).column(c)
            pos = chunk.dictionary_page_offset if chunk.has_dictionary_page else chunk.data_page_offset
            end = pos + chunk.total_compressed_size
            pages, compressed, uncompressed = 0, 0, 0
            while pos < end:
                page = parquet_guard.read_page_header(data, pos, end)
                pos += page.header_bytes + page.compressed
                compressed += page.header_bytes + page.compressed
                uncompressed += page.header_bytes + page.uncompressed
                pages += 1
            assert (compressed, uncompressed) == (chunk.total_compressed_size, chunk.total_uncompressed_size)
    back = parquet_guard.read_frame(raw, DEFAULT_LIMITS)
    pd.testing.assert_frame_equal(back, pd.read_parquet(io.BytesIO(raw)), check_exact=True)


def test_answers_at_the_executors_result_cap_pass_the_shipped_defaults():
    """A frame up to the executor's max_result_bytes (64 MiB) comes back (the kept difference's example)."""
    frame = pd.DataFrame(np.random.default_rng(1).random((5_000, 1_000)))
    encoded = wire.encode_result({"type": "dataframe", "value": frame})
    body = json.dumps({"result": encoded}).encode()
    assert len(body) < DEFAULT_LIMITS.max_response_bytes
    back = wire.decode_result(wire.loads(body)["result"])["value"]
    pd.testing.assert_frame_equal(back, frame, check_exact=True)


def test_the_owner_can_lower_or_raise_each_limit():
    raw = h.columns_bomb(50)
    assert parquet_guard.read_frame(raw, DEFAULT_LIMITS).shape == (1, 50)
    with pytest.raises(LimitExceeded, match=r"max_columns"):
        parquet_guard.read_frame(raw, AnswerLimits(max_columns=49))
    rows = h.rows_bomb(DEFAULT_LIMITS.max_rows + 1)
    with pytest.raises(LimitExceeded, match="max_rows"):
        parquet_guard.read_frame(rows, DEFAULT_LIMITS)
    with pytest.raises(ValueError, match="max_rows must be a positive number"):
        AnswerLimits(max_rows=0)


def test_text_is_measured_from_the_dictionary_before_it_is_decoded():
    bomb = h.dictionary_bomb(rows=2_000, value_bytes=1 << 20)  # 2 GB of text from a 1 MiB dictionary
    with pytest.raises(LimitExceeded) as info:
        parquet_guard.read_frame(bomb, DEFAULT_LIMITS)
    assert info.value.limit == "max_frame_bytes" and "'s'" in info.value.message
    fine = h.dictionary_bomb(rows=100, value_bytes=1 << 10)
    assert parquet_guard.read_frame(fine, DEFAULT_LIMITS)["s"].str.len().sum() == 100 << 10


@pytest.mark.parametrize("text, limit", [
    ("[" * 100 + "]" * 100, "max_json_depth"),
    ('{"a": ' + "1" * 500 + "}", "max_number_digits"),
    ('{"a": -' + "1" * 500 + "}", "max_number_digits"),
    ('{"a": 1.' + "1" * 500 + "}", "max_number_digits"),
    ('{"a": 1e400}', ""),
    ('{"a": NaN}', ""),
    ('{"a": -Infinity}', ""),
    ("[" + "0," * 3_000 + "0]", "max_json_values"),
])
def test_json_is_bounded_while_it_is_parsed(text, limit):
    with pytest.raises(LimitExceeded) as info:
        wire.loads(text.encode(), AnswerLimits(max_json_values=1_000))
    assert info.value.limit == limit


def test_json_within_the_limits_parses_as_json_does():
    text = json.dumps({"a": [1, 2.5, -3e10, "NaN", None, True, {"b": "x" * 10_000}], "n": 10 ** 300})
    assert wire.loads(text.encode()) == json.loads(text)


def test_a_json_split_cast_to_a_huge_dtype_is_not_made():
    value = {"encoding": "json-split", "kind": "dataframe", "dtypes": {"a": "S1000000000", "b": "U100000000"},
             "data": {"columns": ["a", "b"], "index": [0, 1], "data": [["x", "y"], ["z", "w"]]}}
    frame = wire.decode_dataframe(value)
    assert frame.memory_usage(deep=True).sum() < 10_000
    value["dtypes"] = {"a": "category"}
    assert str(wire.decode_dataframe(value)["a"].dtype) == "category"


@pytest.mark.parametrize("width, height, limit", [
    (0, 10, "max_plot_side"), (40_000, 1, "max_plot_side"), (10_000, 10_000, "max_plot_pixels")])
def test_a_plot_is_bounded_by_its_png_header(width, height, limit):
    uri = wire.PNG_DATA_URI_PREFIX + base64.b64encode(h.png_header(width, height)).decode()
    with pytest.raises(LimitExceeded) as info:
        wire.decode_result({"type": "plot", "value": uri})
    assert info.value.limit == limit
    ok = wire.PNG_DATA_URI_PREFIX + base64.b64encode(h.png_header(640, 480)).decode()
    assert wire.decode_result({"type": "plot", "value": ok})["value"] == ok


@pytest.mark.parametrize("forged", [10 ** 18, -1, 1.5, "1", True, [1]])
def test_a_forged_peak_rss_from_the_child_is_refused_and_never_reaches_the_metrics(forged):
    from pod_sandbox.executor.metrics import Metrics  # noqa: PLC0415
    from pod_sandbox.executor.runner import decide  # noqa: PLC0415

    frame = json.dumps({"status": "ok", "result": {"type": "number", "value": 1}, "error": None,
                        "peak_rss_bytes": forged}).encode()
    status, result, error = decide({"duration_ms": 1.0}, frame, 5.0, 1 << 20)
    assert (status, error["type"]) == ("error", "ResultError") and "peak_rss_bytes" in error["message"]
    metrics = Metrics()
    metrics.observe_execution({"status": status, "duration_ms": 1.0, "peak_rss_bytes": 0})
    text = metrics.render().decode()
    assert "pandasai_executor_child_peak_rss_bytes_count 0.0" in text
    honest = frame.replace(json.dumps(forged).encode(), b"123456") if not isinstance(forged, str) else frame
    if not isinstance(forged, str):
        header: dict = {"duration_ms": 1.0}
        assert decide(header, honest, 5.0, 1 << 20)[0] == "ok" and header["peak_rss_bytes"] == 123456


def test_a_result_frame_nested_past_the_interpreter_is_a_result_error_not_a_crash():
    from pod_sandbox.executor.runner import decide  # noqa: PLC0415

    status, _result, error = decide({}, b"[" * 100_000 + b"]" * 100_000, 5.0, 1 << 20)
    assert (status, error["type"]) == ("error", "ResultError")


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


@pytest.mark.parametrize("codec", [c for c in CODECS if c != "NONE"])
def test_a_page_header_that_understates_its_size_is_refused_by_the_codec_not_overflowed(codec):
    """What makes the page walk a bound: pyarrow decompresses into the declared size and no more.

    (Uncompressed pages are their bytes in the file: bounded by the file.)
    """
    raw = bytearray(h.page_bomb(2 * MIB, codec))
    chunk = pq.ParquetFile(io.BytesIO(bytes(raw))).metadata.row_group(0).column(0)
    start = chunk.data_page_offset
    page = parquet_guard.read_page_header(memoryview(bytes(raw)), start, start + chunk.total_compressed_size)
    declared, lie = _varint(page.uncompressed << 1), _varint((page.uncompressed - 1000) << 1)  # zigzag
    assert len(declared) == len(lie)
    at = bytes(raw).index(declared, start)
    raw[at:at + len(lie)] = lie
    with pytest.raises(Exception, match="(?i)decompress|buffer|corrupt|fail") as info:
        parquet_guard.read_frame(bytes(raw), DEFAULT_LIMITS)
    assert not isinstance(info.value, MemoryError)


@pytest.mark.parametrize("key", ["column_indexes", "columns"])
@pytest.mark.parametrize("dtype", ["S1000000000", "U1000000000", "V1000000000"])
def test_pandas_metadata_naming_a_huge_dtype_is_refused_before_pandas_casts(key, dtype):
    with pytest.raises(LimitExceeded, match="pandas metadata"):
        parquet_guard.read_frame(h.pandas_metadata_dtype(key, dtype, columns=3), DEFAULT_LIMITS)
