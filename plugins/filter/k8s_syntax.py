"""Filters that check Kubernetes label and annotation syntax before any cluster call."""
from __future__ import annotations

import re
from typing import Any, Mapping

DOCUMENTATION = r"""
name: label_problems
short_description: List the label and annotation entries that Kubernetes would refuse
description:
  - Takes a mapping of variable name to label dict, and optionally a mapping of variable name to
    annotation dict, and returns one text per bad entry, naming the variable and the key
    (C(var['key']=value) for labels, C(var['key']) for annotations). An empty list means all good.
  - Keys are qualified names (optional DNS-1123 subdomain prefix and C(/), then a name of at most
    63 characters); label values are at most 63 characters of C([A-Za-z0-9_.-]), starting and
    ending with an alphanumeric, or empty.
options:
  _input:
    description: Variable name to label dict.
    type: dict
    required: true
  annotations:
    description: Variable name to annotation dict (only the keys are checked).
    type: dict
    default: {}
"""

EXAMPLES = r"""
namespace_bad_labels: >-
  {{ {'namespace_labels': namespace_labels}
     | pandasai.pod_sandbox.label_problems({'namespace_annotations': namespace_annotations}) }}
"""

RETURN = r"""
_value:
  description: One text per refused entry, naming its variable and key.
  type: list
  elements: str
"""

_PREFIX = r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?"
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
KEY_RE = re.compile(rf"^({_PREFIX}/)?{_NAME}$")
VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$")
PREFIX_MAX = 253


def _key_ok(key: Any) -> bool:
    text = str(key)
    prefix, _, _name = text.rpartition("/")
    return bool(KEY_RE.match(text)) and len(prefix) <= PREFIX_MAX


def _mapping(variable: str, value: Any) -> Mapping[Any, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"{variable} must be a mapping of keys to values, got {type(value).__name__}")
    return value


def label_problems(labels_by_var: Mapping[str, Any], annotations: Mapping[str, Any] | None = None) -> list[str]:
    """Return one text per bad label (key or value) or annotation key, naming its variable."""
    problems: list[str] = []
    for variable, labels in _mapping("the filter input", labels_by_var).items():
        for key, value in _mapping(variable, labels).items():
            if not _key_ok(key) or not VALUE_RE.match("" if value is None else str(value)):
                problems.append(f"{variable}['{key}']={value}")
    for variable, entries in _mapping("annotations", annotations or {}).items():
        for key in _mapping(variable, entries):
            if not _key_ok(key):
                problems.append(f"{variable}['{key}']")
    return problems


class FilterModule:
    """Kubernetes syntax filters of pandasai.pod_sandbox."""

    def filters(self) -> dict[str, Any]:
        return {"label_problems": label_problems}
