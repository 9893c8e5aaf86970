"""The record, kept on a cluster object, of what the collection changed on something it did not create."""
from __future__ import annotations

import json
from typing import Any, Mapping

DOCUMENTATION = r"""
name: ownership_record
short_description: Merge what the collection is about to set on an adopted object into its ownership record
description:
  - The collection writes this record as a JSON annotation on objects it changes but did not create
    (an adopted namespace, a labelled and tainted node), so teardown can undo exactly its own changes
    without being told again what they were.
  - For labels and annotations the record maps each key the collection sets to the value it had
    before the collection first set it (null when it was absent); teardown writes those values
    back (null deletes). A key already in the record keeps its first prior value, so a second run
    records nothing new.
  - For taints the record lists the taints the collection added (identity key and effect). A taint
    that was already on the object before the collection's first run is the owner's and is not
    recorded, so teardown leaves it.
  - The input is the current record (a dict, or the annotation's JSON text, or empty).
options:
  _input:
    description: The current record (dict or JSON text); empty or null when there is none yet.
    type: raw
    required: true
  current:
    description: The object's current C(labels), C(annotations) and C(taints).
    type: dict
    required: true
  desired:
    description: The C(labels), C(annotations) and C(taints) the collection is about to set.
    type: dict
    required: true
"""

EXAMPLES = r"""
node_placement_record: >-
  {{ (node.metadata.annotations | default({})).get('pandasai.io/placement')
     | pandasai.pod_sandbox.ownership_record({'labels': node.metadata.labels, 'taints': node.spec.taints | default([])},
                                             {'labels': node_placement_labels, 'taints': node_placement_taints}) }}
"""

RETURN = r"""
_value:
  description: The merged record, with keys C(labels), C(annotations) (key to prior value or null) and C(taints).
  type: dict
"""


def _taint_id(taint: Mapping[str, Any]) -> tuple[str, str]:
    return str(taint.get("key", "")), str(taint.get("effect", ""))


def _load(record: Any) -> dict[str, Any]:
    if not record:
        return {}
    if isinstance(record, str):
        try:
            record = json.loads(record)
        except ValueError as exc:
            raise ValueError(f"the ownership record is not JSON: {record[:200]!r}") from exc
    if not isinstance(record, Mapping):
        raise TypeError(f"the ownership record must be a mapping, got {type(record).__name__}")
    return dict(record)


def ownership_record(record: Any, current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """Return the record after the collection sets ``desired`` on an object that has ``current``."""
    old = _load(record)
    merged: dict[str, Any] = {}
    for section in ("labels", "annotations"):
        kept = dict(old.get(section) or {})
        now = dict(current.get(section) or {})
        for key in dict(desired.get(section) or {}):
            if key not in kept:
                kept[key] = now.get(key)
        merged[section] = dict(sorted(kept.items()))
    added = [dict(t) for t in old.get("taints") or []]
    present = {_taint_id(t) for t in current.get("taints") or []}
    known = {_taint_id(t) for t in added}
    for taint in desired.get("taints") or []:
        ident = _taint_id(taint)
        if ident not in present and ident not in known:
            added.append({k: taint[k] for k in ("key", "value", "effect") if taint.get(k) is not None})
            known.add(ident)
    merged["taints"] = sorted(added, key=_taint_id)
    return merged


class FilterModule:
    """Ownership records of pandasai.pod_sandbox."""

    def filters(self) -> dict[str, Any]:
        return {"ownership_record": ownership_record}
