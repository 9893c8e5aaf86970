"""The label/annotation syntax filter accepts what Kubernetes accepts and names each refused entry."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[4] / "plugins" / "filter" / "k8s_syntax.py"
_SPEC = importlib.util.spec_from_file_location("k8s_syntax", _PATH)
assert _SPEC and _SPEC.loader
k8s_syntax = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(k8s_syntax)
label_problems = k8s_syntax.label_problems


@pytest.mark.parametrize("key", ["app", "app.kubernetes.io/name", "pandasai.io/pool", "a", "A_b.c-d", "x" * 63])
def test_good_keys_pass(key: str) -> None:
    assert label_problems({"v": {key: "ok"}}) == []


@pytest.mark.parametrize("key", ["", "-app", "app-", "x" * 64, "Bad_Prefix.io/name", "a/b/c", "pre/", "sp ace"])
def test_bad_keys_are_named(key: str) -> None:
    assert label_problems({"my_labels": {key: "v"}}) == [f"my_labels['{key}']=v"]


@pytest.mark.parametrize("value", ["", "true", "v1.2_3-x", "9" * 63, None, 10])
def test_good_values_pass(value: object) -> None:
    assert label_problems({"v": {"k": value}}) == []


@pytest.mark.parametrize("value", ["-x", "x-", "a b", "x" * 64, "ü"])
def test_bad_values_are_named(value: str) -> None:
    assert label_problems({"pod_labels": {"k": value}}) == [f"pod_labels['k']={value}"]


def test_annotations_check_keys_only() -> None:
    annotations = {"notes": {"example.com/any": "a value with spaces / and more than 63 chars " * 3, "bad key": "x"}}
    assert label_problems({}, annotations) == ["notes['bad key']"]


def test_prefix_longer_than_253_is_refused() -> None:
    key = ("a" * 60 + ".") * 5 + "io/name"
    assert label_problems({"v": {key: "x"}}) == [f"v['{key}']=x"]


def test_every_variable_is_reported() -> None:
    assert label_problems({"a": {"ok": "1", "-no": "1"}, "b": {"k": "-"}}, {"c": {"/": ""}}) == [
        "a['-no']=1", "b['k']=-", "c['/']"]


def test_not_a_mapping_names_the_variable() -> None:
    with pytest.raises(TypeError, match="pod_labels must be a mapping"):
        label_problems({"pod_labels": ["app=x"]})
