"""Compare a manifest with the live object: every field the manifest sets must be on the object
with the same value (quantities compared by value: "1" == "1000m"; a zero value the API server
omits counts as present); fields the API server adds are ignored."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils import parse_quantity


def _quantity(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        return Decimal(parse_quantity(value))
    except (ValueError, InvalidOperation, TypeError):
        return None


def differences(expected: Any, live: Any, path: str = "") -> list[str]:
    """Paths (with both values) where `live` does not carry what `expected` asks for."""
    if isinstance(expected, dict):
        if not isinstance(live, dict):
            return [f"{path or '.'}: expected a mapping, found {live!r}"]
        found: list[str] = []
        for key, value in expected.items():
            if key not in live:
                # The API server omits zero values (omitempty): false, 0, "", empty lists and maps.
                if value is None or value is False or value == 0 or value in ("", {}, []):
                    continue
                found.append(f"{path}.{key}: missing (expected {value!r})")
            else:
                found.extend(differences(value, live[key], f"{path}.{key}"))
        return found
    if isinstance(expected, list):
        if not isinstance(live, list) or len(live) != len(expected):
            return [f"{path}: expected {expected!r}, found {live!r}"]
        found = []
        for index, (want, have) in enumerate(zip(expected, live)):
            found.extend(differences(want, have, f"{path}[{index}]"))
        return found
    if expected == live:
        return []
    want_q, have_q = _quantity(expected), _quantity(live)
    if want_q is not None and have_q is not None and want_q == have_q and isinstance(expected, str):
        return []
    return [f"{path}: expected {expected!r}, found {live!r}"]
