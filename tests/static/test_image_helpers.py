"""The image role's helper scripts: the content hash of a build context and the apt-source mirror."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from conftest import REPO

FILES = REPO / "roles" / "image" / "files"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, FILES / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


context_hash = load("context_hash")
debian_mirror = load("debian_mirror")


def make_context(root: Path) -> Path:
    ctx = root / "ctx"
    (ctx / "src" / "pkg" / "__pycache__").mkdir(parents=True)
    (ctx / "Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY src /src\n")
    (ctx / "src" / "pkg" / "mod.py").write_text("x = 1\n")
    (ctx / "src" / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0cache")
    (ctx / "README.md").write_text("docs\n")
    (ctx / "tests").mkdir()
    (ctx / "tests" / "test_x.py").write_text("def test(): pass\n")
    return ctx


def hash_of(ctx: Path, *inputs: str) -> str:
    rules = context_hash.read_patterns(ctx, [])
    files = context_hash.context_files(ctx, rules)
    return context_hash.digest(ctx, files, ctx / "Dockerfile", list(inputs))


def test_hash_changes_with_source_and_inputs(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    base = hash_of(ctx, "base-image-id=sha256:1")
    assert hash_of(ctx, "base-image-id=sha256:1") == base
    assert hash_of(ctx, "base-image-id=sha256:2") != base
    (ctx / "src" / "pkg" / "mod.py").write_text("x = 2\n")
    assert hash_of(ctx, "base-image-id=sha256:1") != base


def test_hash_ignores_caches_and_dockerignored_files(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    (ctx / ".dockerignore").write_text("tests\n*.md\n**/__pycache__\n")
    before = hash_of(ctx)
    (ctx / "src" / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0other")
    (ctx / "tests" / "test_x.py").write_text("changed\n")
    (ctx / "README.md").write_text("changed\n")
    assert hash_of(ctx) == before
    # '*.md' matches at the top level only, as in Docker: a nested .md is still sent.
    (ctx / "src" / "notes.md").write_text("sent\n")
    assert hash_of(ctx) != before


def test_hash_sees_executable_bit(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    before = hash_of(ctx)
    (ctx / "src" / "pkg" / "mod.py").chmod(0o755)
    assert hash_of(ctx) != before


def test_negated_pattern_reincludes(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    (ctx / ".dockerignore").write_text("**/*.md\n!README.md\n**/__pycache__\n")
    files = context_hash.context_files(ctx, context_hash.read_patterns(ctx, []))
    assert "README.md" in files
    assert "src/pkg/mod.py" in files
    assert not any("__pycache__" in f for f in files)


def test_without_dockerignore_everything_counts(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    before = hash_of(ctx)
    (ctx / "src" / "pkg" / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0other")
    assert hash_of(ctx) != before, "a file Docker would send must change the tag"


def test_cli_reports_bad_context(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(FILES / "context_hash.py"), str(tmp_path / "missing")],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "is not a directory" in json.loads(proc.stdout)["error"]


def test_mirror_from_deb822_and_one_line_sources(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Types: deb\nURIs: http://security.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert debian_mirror.find_mirror("bookworm", apt) == "http://mirror.example/debian"
    assert debian_mirror.find_mirror("trixie", apt) is None
    (apt / "sources.list").write_text("# comment\ndeb [arch=amd64] http://one.example/debian trixie main\n")
    assert debian_mirror.find_mirror("trixie", apt) == "http://one.example/debian"
