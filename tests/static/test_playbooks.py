"""Every playbook passes `ansible-playbook --syntax-check`."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, VENV_BIN, tool_env



def is_playbook(path: Path) -> bool:
    """A YAML file whose top level is a list of plays (hosts:) or playbook imports."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return True  # let the syntax check report it
    return isinstance(data, list) and bool(data) and all(
        isinstance(play, dict) and ("hosts" in play or "ansible.builtin.import_playbook" in play
                                    or "import_playbook" in play)
        for play in data)


PLAYBOOKS = sorted({
    *(REPO / "playbooks").glob("*.yml"), REPO / "site.yml",
    *(p for p in (REPO / "molecule").glob("*/*.yml") if p.name != "molecule.yml" and is_playbook(p)),
    *(Path(__file__).parent / "playbooks").glob("*.yml"),
})
EXPECTED = {"site.yml", "verify.yml", "teardown.yml", "render.yml"}


def test_the_documented_playbooks_exist() -> None:
    names = {p.name for p in (REPO / "playbooks").glob("*.yml")}
    assert EXPECTED <= names, f"missing playbooks: {sorted(EXPECTED - names)}"
    assert (REPO / "site.yml").is_file()


@pytest.mark.parametrize("playbook", PLAYBOOKS, ids=[str(p.relative_to(REPO)) for p in PLAYBOOKS])
def test_syntax_check(playbook: Path) -> None:
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "--syntax-check", str(playbook)],
        cwd=REPO, env=tool_env(), capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
