"""Unit tests of the shared wire format (no server)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pod_sandbox import wire

LIMITS = dict(max_code_bytes=100, max_timeout_s=60, default_timeout_s=30, max_output_bytes=1000)


def test_wire_imports_without_server_dependencies():
    code = ("import sys\nimport pod_sandbox.wire\n"
            "bad = [m for m in ('bottle', 'waitress', 'pyseccomp', 'pandas', 'pyarrow', 'prometheus_client') "
            "if m in sys.modules]\nassert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", ["a.csv", "Sales_2024.parquet", "x", "0-1.b"])
def test_good_file_names(name):
    assert wire.validate_file_name(name) == name


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "../etc/passwd", "a\\b", "a b",
                                  "-rf", "x" * 129, "a\x00b", "é.csv", 5, None])
def test_bad_file_names(name):
    with pytest.raises(wire.WireError) as exc:
        wire.validate_file_name(name)
    assert exc.value.field == "name"


def test_parse_execute_request_defaults_and_limits():
    req = wire.parse_execute_request({"code": "x=1"}, **LIMITS)
    assert req.timeout_s == 30 and req.max_output_bytes == 1000 and req.datasets == {}
    with pytest.raises(wire.WireError) as exc:
        wire.parse_execute_request({"code": "x" * 101}, **LIMITS)
    assert exc.value.http_status == 413 and exc.value.field == "code"
    for body, field_name in [({"code": "", "timeout_s": True}, "timeout_s"),
                             ({"code": "", "timeout_s": float("inf")}, "timeout_s"),
                             ({"code": "", "timeout_s": 0}, "timeout_s"),
                             ({"code": "", "max_output_bytes": 1.5}, "max_output_bytes"),
                             ({"code": "", "request_id": "r" * 129}, "request_id"),
                             ({"code": "\udcff"}, "code"),
                             ({"code": "", "datasets": []}, "datasets")]:
        with pytest.raises(wire.WireError) as exc:
            wire.parse_execute_request(body, **LIMITS)
        assert exc.value.field == field_name
    assert wire.ExecuteRequest("c", 1.0, 5, {"q": "a.csv"}, "id").to_json()["datasets"] == {"q": "a.csv"}


def test_numbers():
    assert wire.encode_result({"type": "number", "value": np.int64(3)}) == {"type": "number", "value": 3,
                                                                          "number_type": "numpy.int64"}
    assert wire.encode_result({"type": "number", "value": np.float32(0.5)})["value"] == 0.5
    for value, text in [(math.nan, "NaN"), (math.inf, "Infinity"), (-math.inf, "-Infinity")]:
        enc = wire.encode_result({"type": "number", "value": value})
        assert enc["value"] == text
        dec = wire.decode_result(enc)["value"]
        assert (math.isnan(dec) if text == "NaN" else dec == value)
    with pytest.raises(wire.ResultError):
        wire.encode_result({"type": "number", "value": "seven"})


def test_result_shape_errors():
    assert wire.encode_result(None) == {"type": "none", "value": None}
    for bad in [5, {"type": "number"}, {"type": "list", "value": [1]}, {"type": "string", "value": 1}]:
        with pytest.raises(wire.ResultError):
            wire.encode_result(bad)
    with pytest.raises(wire.WireError):
        wire.validate_result({"type": "plot", "value": "/tmp/x.png"})


def test_dataframe_fallback_to_json_split_for_mixed_objects():
    df = pd.DataFrame({"mixed": [1, "a", 2.5], "n": [1, 2, 3]})
    enc = wire.encode_result({"type": "dataframe", "value": df})["value"]
    assert enc["encoding"] == "json-split"
    out = wire.decode_dataframe(enc)
    assert list(out["n"]) == [1, 2, 3] and str(out["n"].dtype) == "int64"
    assert list(out["mixed"]) == [1, "a", 2.5]


def test_dict_value_becomes_dataframe():
    enc = wire.encode_result({"type": "dataframe", "value": {"a": [1, 2]}})
    assert list(wire.decode_result(enc)["value"]["a"]) == [1, 2]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-2**62, 2**62), st.floats(allow_nan=True), st.text(max_size=8)),
                min_size=0, max_size=30))
def test_dataframe_roundtrip_property(rows):
    df = pd.DataFrame(rows, columns=["i", "f", "s"])
    if not rows:
        df = df.astype({"i": "int64", "f": "float64", "s": "object"})
    enc = wire.encode_result({"type": "dataframe", "value": df})
    back = wire.decode_result(enc)["value"]
    pd.testing.assert_frame_equal(back, df, check_dtype=bool(rows))


def test_validate_execute_response():
    good = {"status": "ok", "result": {"type": "none", "value": None}, "stdout": "", "stderr": "",
            "stdout_truncated": False, "stderr_truncated": False, "error": None, "duration_ms": 1.0,
            "peak_rss_bytes": 1}
    assert wire.validate_execute_response(good) is good
    with pytest.raises(wire.WireError) as exc:
        wire.validate_execute_response({**good, "status": "timeout"})
    assert exc.value.field == "error"
