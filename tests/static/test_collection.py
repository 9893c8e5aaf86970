"""The collection builds with ansible-galaxy and its tarball carries what users need and none of
the local state (virtualenvs, wheelhouse, caches, rendered output)."""
from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO, VENV_BIN, tool_env

FORBIDDEN_PARTS = {".venv", ".collections", ".cache", ".git", "__pycache__", ".pytest_cache", "wheelhouse",
                   "rendered", ".molecule", ".ansible"}


@pytest.fixture(scope="module")
def tarball(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("galaxy-build")
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-galaxy"), "collection", "build", "--force", "--output-path", str(out), str(REPO)],
        cwd=REPO, env=tool_env(), capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text(encoding="utf-8"))
    path = out / f"{galaxy['namespace']}-{galaxy['name']}-{galaxy['version']}.tar.gz"
    assert path.is_file(), list(out.iterdir())
    return path


def members(tarball: Path) -> list[str]:
    with tarfile.open(tarball) as tar:
        return [m.name for m in tar.getmembers()]


def test_tarball_excludes_local_state(tarball: Path) -> None:
    bad = [name for name in members(tarball)
           if FORBIDDEN_PARTS & set(Path(name).parts) or name.endswith((".pyc", ".tar.gz"))
           or Path(name).parts[0].startswith(".venv")]
    assert not bad, f"local state in the collection tarball: {bad[:20]}"


def test_tarball_carries_roles_playbooks_and_executor(tarball: Path) -> None:
    names = set(members(tarball))
    for required in ("MANIFEST.json", "FILES.json", "README.md", "meta/runtime.yml",
                     "roles/image/tasks/main.yml", "roles/image/files/context_hash.py"):
        assert required in names, f"{required} missing from the tarball"
    roles = sorted(p.name for p in (REPO / "roles").iterdir() if (p / "tasks" / "main.yml").is_file())
    for role in roles:
        assert f"roles/{role}/tasks/main.yml" in names, f"role {role} missing from the tarball"
        assert f"roles/{role}/meta/argument_specs.yml" in names, f"role {role} has no argument specs in the tarball"
    playbooks = sorted(p.name for p in (REPO / "playbooks").glob("*.yml"))
    assert playbooks, "no playbooks"
    for playbook in playbooks:
        assert f"playbooks/{playbook}" in names
    # The image role builds from the collection's executor/ (its default build context).
    assert "executor/Dockerfile" in names
    assert any(n.startswith("executor/src/pod_sandbox/") for n in names)


def test_tarball_size_is_sane(tarball: Path) -> None:
    assert tarball.stat().st_size < 20 * 1024 * 1024, f"{tarball.stat().st_size} bytes: something large slipped in"


def test_one_licence_and_one_ansible_requirement() -> None:
    """galaxy.yml, the executor's pyproject and LICENSE name one licence; the README asks the
    ansible-core that meta/runtime.yml requires."""
    import re
    import tomllib

    galaxy = yaml.safe_load((REPO / "galaxy.yml").read_text(encoding="utf-8"))
    pyproject = tomllib.loads((REPO / "executor" / "pyproject.toml").read_text(encoding="utf-8"))
    assert galaxy["license"] == [pyproject["project"]["license"]] == ["Apache-2.0"]
    assert "Apache License" in (REPO / "LICENSE").read_text(encoding="utf-8")[:200]
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text(encoding="utf-8"))
    wanted = re.fullmatch(r">=(\d+\.\d+)\.\d+", runtime["requires_ansible"])
    assert wanted, runtime["requires_ansible"]
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert f"ansible-core {wanted.group(1)} or newer" in " ".join(readme.split())
