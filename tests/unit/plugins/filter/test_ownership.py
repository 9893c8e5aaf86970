"""ownership_record: what the collection set on an object it did not create, with what was there before."""
from __future__ import annotations

import json

from plugin_loader import load_plugin

ownership_record = load_plugin("filter", "ownership").ownership_record

TAINT = {"key": "pandasai.io/sandbox", "value": "true", "effect": "NoSchedule"}
FOREIGN = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}


def test_first_run_records_prior_values_and_added_taints() -> None:
    current = {"labels": {"team": "a", "pandasai.io/sandbox": "old"}, "taints": [FOREIGN]}
    desired = {"labels": {"pandasai.io/sandbox": "true", "zone": "x"}, "taints": [TAINT, FOREIGN]}
    record = ownership_record(None, current, desired)
    assert record == {"labels": {"pandasai.io/sandbox": "old", "zone": None}, "annotations": {}, "taints": [TAINT]}


def test_a_second_run_records_nothing_new() -> None:
    first = ownership_record("", {"labels": {}, "taints": []}, {"labels": {"a": "1"}, "taints": [TAINT]})
    after = {"labels": {"a": "1"}, "taints": [TAINT]}  # what the first run made
    again = ownership_record(json.dumps(first), after, {"labels": {"a": "1"}, "taints": [TAINT]})
    assert again == first


def test_keys_stay_recorded_when_the_settings_drop_them() -> None:
    first = ownership_record({}, {"labels": {}}, {"labels": {"a": "1", "b": "2"}})
    later = ownership_record(first, {"labels": {"a": "1", "b": "2"}}, {"labels": {"a": "1"}})
    assert later["labels"] == {"a": None, "b": None}


def test_a_taint_already_there_with_another_value_is_the_owners() -> None:
    theirs = dict(TAINT, value="false")
    assert ownership_record(None, {"taints": [theirs]}, {"taints": [TAINT]})["taints"] == []
