"""The top-level README stays true: its step table names every role site.yml runs with its tag,
and the files and commands it points to exist."""
from __future__ import annotations

import re

import yaml

from conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def test_step_table_matches_site_yml() -> None:
    plays = yaml.safe_load((REPO / "playbooks" / "site.yml").read_text(encoding="utf-8"))
    rows = set(re.findall(r"^\|[^|]*\| `([a-z_]+)` \| `([a-z]+)` \|$", README, flags=re.M))
    for play in plays:
        for entry in play.get("roles") or []:
            role = entry["role"].rsplit(".", 1)[-1]
            tags = entry.get("tags") or []
            assert any((role, tag) in rows for tag in tags), f"README step table lacks role {role} with tag {tags}"


def test_referenced_paths_exist() -> None:
    paths = set(re.findall(r"`((?:roles|playbooks|inventories|executor|scripts|tests|molecule)/[A-Za-z0-9_./-]+)`", README))
    paths |= {"Makefile", ".ci/run", "site.yml", "scripts/bootstrap.sh"}
    missing = sorted(p for p in paths if "<" not in p and not (REPO / p.rstrip("/")).exists())
    assert not missing, f"README points to paths that do not exist: {missing}"


def test_make_targets_exist() -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z-]+):", makefile, flags=re.M))
    mentioned = set(re.findall(r"`make ([a-z-]+)`", README))
    assert {"deploy", "test"} <= mentioned
    assert mentioned <= targets, f"README mentions make targets the Makefile lacks: {sorted(mentioned - targets)}"


def test_make_targets_scripts_exist() -> None:
    """Each make target the README mentions runs a script that exists."""
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    for target in set(re.findall(r"`make ([a-z-]+)`", README)):
        recipe = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)*)", makefile, flags=re.M)
        assert recipe, f"no recipe for make {target}"
        for script in re.findall(r"(scripts/[A-Za-z0-9_.-]+)", recipe.group(1)):
            assert (REPO / script).is_file(), f"make {target} runs {script}, which does not exist"


def test_playbook_commands_name_existing_playbooks() -> None:
    """Every `ansible-playbook X` in the README and the troubleshooting guide runs a playbook that
    exists, and every option it passes is one ansible-playbook has."""
    docs = README + (REPO / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    commands = re.findall(r"ansible-playbook ([^`\n]+)", docs)
    assert any(c.startswith("site.yml") for c in commands)
    for command in commands:
        playbook = command.split()[0]
        assert (REPO / playbook).is_file(), f"`ansible-playbook {command}`: {playbook} does not exist"
        for option in re.findall(r"(?<![\w-])(--[a-z-]+|-[a-z])\b", command):
            assert option in {"-i", "-e", "--tags", "--check", "--diff", "--limit"}, f"`ansible-playbook {command}`: unexpected option {option}"
