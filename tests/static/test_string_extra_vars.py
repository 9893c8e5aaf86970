"""`-e name=value` hands roles strings: every int and bool setting must act on its value, not on
the string. (`-e rbac_allow_exec=false` once rendered a pods/exec grant: "false" is truthy.)

render.yml runs twice: with the all-features settings as JSON, and with the same settings plus every
int/bool option of every role at its spec default, all given as `-e name=value` strings. The two
renders must be identical, file by file.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import RENDER_VARIANTS, REPO, VENV_BIN, rendered_variant, tool_env


def set_by_render_playbook() -> set[str]:
    """Variables render.yml sets itself (e.g. warm_pool_enabled: true, to render every optional part)."""
    keys: set[str] = set()
    for play in yaml.safe_load((REPO / "playbooks" / "render.yml").read_text()):
        for task in play.get("tasks") or []:
            keys |= set((task.get("vars") or {}).keys())
    return keys


def scalar_defaults() -> dict[str, str]:
    """Every int/bool role option with a literal default, as the string `-e name=value` would pass
    (except those render.yml sets: an extra var would override them)."""
    found: dict[str, str] = {}
    skip = set_by_render_playbook()
    for spec_file in sorted((REPO / "roles").glob("*/meta/argument_specs.yml")):
        for entry in yaml.safe_load(spec_file.read_text())["argument_specs"].values():
            for name, option in (entry.get("options") or {}).items():
                default = option.get("default")
                if name in skip:
                    continue
                if option.get("type") == "bool" and isinstance(default, bool):
                    found[name] = "true" if default else "false"
                elif option.get("type") == "int" and isinstance(default, int) and not isinstance(default, bool):
                    found[name] = str(default)
    return found


def as_key_value(settings: dict[str, Any]) -> list[str]:
    """`-e` arguments of the key=value form (strings); lists and dicts have no such form, so JSON."""
    args: list[str] = []
    for name, value in settings.items():
        if isinstance(value, bool):
            args += ["-e", f"{name}={'true' if value else 'false'}"]
        elif isinstance(value, (int, str)):
            args += ["-e", f"{name}={value}"]
        else:
            args += ["-e", json.dumps({name: value})]
    return args


def test_every_scalar_option_is_covered() -> None:
    defaults = scalar_defaults()
    # A sanity floor, so the comparison below cannot pass by checking nothing.
    assert {"rbac_allow_exec", "rbac_allow_pod_logs", "warm_pool_replicas", "pod_template_port"} <= defaults.keys()


def test_string_extra_vars_render_what_typed_ones_do(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    typed_dir, _ = rendered_variant("all-features", tmp_path_factory)
    settings = {**scalar_defaults(), **RENDER_VARIANTS["all-features"]}
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "playbooks/render.yml", "-e", f"render_dir={tmp_path}", *as_key_value(settings)],
        cwd=REPO, env=tool_env(), capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, f"render.yml with string extra vars failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
    typed = {p.relative_to(typed_dir): p.read_text() for p in sorted(typed_dir.rglob("*")) if p.is_file()}
    strings = {p.relative_to(tmp_path): p.read_text() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert typed.keys() == strings.keys()
    for name in typed:
        assert yaml.safe_load_all(typed[name]) and list(yaml.safe_load_all(typed[name])) == list(yaml.safe_load_all(strings[name])), \
            f"{name} differs when the settings come as strings"
