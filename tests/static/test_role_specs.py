"""Each role documents and validates what it takes: argument specs mirror defaults/main.yml."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import REPO

ROLES = sorted(p for p in (REPO / "roles").iterdir() if (p / "tasks" / "main.yml").is_file())


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_role_has_specs_readme_and_purpose(role: Path) -> None:
    assert (role / "meta" / "argument_specs.yml").is_file(), f"{role.name}: no meta/argument_specs.yml"
    assert "main" in load(role / "meta" / "argument_specs.yml")["argument_specs"], f"{role.name}: no main entry point"
    assert (role / "README.md").is_file(), f"{role.name}: no README.md"


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_every_default_is_in_the_argument_spec(role: Path) -> None:
    defaults_file = role / "defaults" / "main.yml"
    if not defaults_file.is_file():
        pytest.skip(f"{role.name} has no defaults")
    defaults = load(defaults_file)
    options = load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"].get("options") or {}
    public = {k for k in defaults if "__" not in k}
    missing = sorted(public - set(options))
    assert not missing, f"{role.name}: defaults not in argument_specs main: {missing}"
    prefix = role.name + "_"
    unprefixed = sorted(k for k in public if not k.startswith(prefix))
    assert not unprefixed, f"{role.name}: variables without the role prefix {prefix!r}: {unprefixed}"


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_spec_defaults_match_role_defaults(role: Path) -> None:
    defaults_file = role / "defaults" / "main.yml"
    if not defaults_file.is_file():
        pytest.skip(f"{role.name} has no defaults")
    defaults = load(defaults_file)
    options = load(role / "meta" / "argument_specs.yml")["argument_specs"]["main"].get("options") or {}
    drift = []
    for name, spec in options.items():
        if "default" not in spec or name not in defaults:
            continue
        value = defaults[name]
        if isinstance(value, str) and "{{" in value or isinstance(spec["default"], str) and "{{" in spec["default"]:
            continue  # templated defaults are documented in prose
        if spec["default"] != value:
            drift.append(f"{name}: spec says {spec['default']!r}, defaults/main.yml says {value!r}")
    assert not drift, f"{role.name}: " + "; ".join(drift)


@pytest.mark.parametrize("role", ROLES, ids=[r.name for r in ROLES])
def test_production_sample_lists_every_setting(role: Path) -> None:
    """inventories/production-sample documents every role default (commented out at its default)."""
    defaults_file = role / "defaults" / "main.yml"
    if not defaults_file.is_file():
        pytest.skip(f"{role.name} has no defaults")
    sample_dir = REPO / "inventories" / "production-sample"
    sample = "\n".join(p.read_text(encoding="utf-8") for p in sorted(sample_dir.rglob("*.yml")))
    listed = {line.lstrip("# ").split(":", 1)[0] for line in sample.splitlines() if ":" in line}
    missing = sorted(set(load(defaults_file)) - listed)
    assert not missing, f"{role.name}: settings missing from inventories/production-sample: {missing}"
