"""A number result keeps its class across the wire (``number_type``), as local execution has it."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from pod_sandbox import wire

VALUES = [1, 2.5, True, 2**70, np.float64(1.5), np.int64(7), np.int8(-3), np.uint64(2**63),
          np.float32(0.25), np.float16(1.5), np.bool_(False), np.float64("nan"), np.float64("-inf")]


def over_the_wire(value: Any) -> Any:
    encoded = json.loads(json.dumps(wire.encode_result({"type": "number", "value": value})))
    return wire.decode_result(wire.validate_result(encoded))["value"]


@pytest.mark.parametrize("value", VALUES, ids=[f"{type(v).__module__}.{type(v).__name__}" for v in VALUES])
def test_a_number_comes_back_with_its_class(value: Any) -> None:
    back = over_the_wire(value)
    assert type(back) is type(value)
    assert back == value or (np.isnan(back) and np.isnan(value))


def test_a_class_outside_the_set_comes_back_as_json_has_it() -> None:
    class Mine(float):
        pass

    assert type(over_the_wire(Mine(1.5))) is float
    assert "number_type" not in wire.encode_result({"type": "number", "value": np.longdouble(1)})


@pytest.mark.parametrize("bad", [
    {"type": "number", "value": 1, "number_type": "os.system"},
    {"type": "number", "value": 1, "number_type": "numpy.object_"},
    {"type": "string", "value": "1", "number_type": "builtins.int"},
    {"type": "number", "value": 1, "number_type": None},
])
def test_validate_refuses_an_unknown_or_misplaced_number_type(bad: dict[str, Any]) -> None:
    with pytest.raises(wire.WireError, match="number_type"):
        wire.validate_result(bad)


def test_a_response_without_number_type_decodes_as_before() -> None:
    assert type(wire.decode_result({"type": "number", "value": 3})["value"]) is int
