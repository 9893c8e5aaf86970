"""The docs stay true: figures live in docs/performance.md only, with reproduce commands that
exist; links and named files resolve; the executor README's configuration table is config.py's."""
from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import REPO

PERFORMANCE = REPO / "docs" / "performance.md"
EXECUTOR_README = REPO / "executor" / "README.md"
SKIP_DIRS = {"node_modules", "rendered", "wheelhouse", "__pycache__"}
# Files whose links and named files are checked (the design docs).
DESIGN_DOCS = [
    REPO / "README.md",
    REPO / "DEVELOPERS.md",
    PERFORMANCE,
    REPO / "docs" / "troubleshooting.md",
    EXECUTOR_README,
    REPO / "executor" / "SECURITY.md",
    REPO / "executor" / "src" / "pod_sandbox" / "client" / "README.md",
    *sorted((REPO / "executor" / "docs").glob("*.md")),
    *sorted((REPO / "roles").glob("*/README.md")),
]
# A measured figure: a time or a rate, or a speed-up ratio.
FIGURE = re.compile(r"\d(?:[\d,]*\d)?(?:\.\d+)?\s?(?:ms|us|/s)\b|\d(?:\.\d+)?x (?:faster|the|local)")
PERCENTILE = re.compile(r"\bp(?:50|90|95|99)\b", re.I)


def markdown_files() -> list[Path]:
    files = []
    for path in REPO.rglob("*.md"):
        parts = path.relative_to(REPO).parts
        if any(p.startswith(".") or p in SKIP_DIRS for p in parts[:-1]):
            continue
        files.append(path)
    return sorted(files)


def figure_lines(text: str) -> list[str]:
    """Lines that carry a benchmark figure: a table row with a time or rate, or a percentile
    beside one."""
    found = []
    for line in text.splitlines():
        if not FIGURE.search(line):
            continue
        if line.lstrip().startswith("|") or PERCENTILE.search(line):
            found.append(line.strip())
    return found


def test_figure_detector_finds_tables_and_percentiles() -> None:
    assert figure_lines("| run | 7.77 / 10.88 ms | 235/s |")
    assert figure_lines("query p50 8.00 -> 6.99 ms")
    assert figure_lines("| the same question | 1.4x local |")
    assert figure_lines("| `--timeout` | `SANDBOX_TIMEOUT_S` | `30 s` | default |") == []
    assert figure_lines("a spare idle for 20 ms copies them") == []


def test_figures_live_only_in_performance_md() -> None:
    offenders = {}
    for path in markdown_files():
        if path == PERFORMANCE:
            continue
        lines = figure_lines(path.read_text(encoding="utf-8"))
        if lines:
            offenders[str(path.relative_to(REPO))] = lines[:3]
    assert not offenders, f"benchmark figures outside docs/performance.md (move them there): {offenders}"


def test_readmes_point_to_performance_md() -> None:
    for readme in (REPO / "README.md", EXECUTOR_README):
        assert "docs/performance.md" in readme.read_text(encoding="utf-8"), f"{readme} does not link the figures"


def _commands(text: str) -> list[str]:
    return [c for c in re.findall(r"`([^`\n]+)`", text) if re.search(r"\.py\b|^make ", c)]


def test_every_reproduce_command_names_an_existing_script_and_flags() -> None:
    text = PERFORMANCE.read_text(encoding="utf-8")
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z-]+):", makefile, flags=re.M))
    commands = _commands(text)
    assert any("bench_executor.py" in c for c in commands), "no executor benchmark command"
    for command in commands:
        make = re.match(r"make ([a-z-]+)$", command)
        if make:
            assert make.group(1) in targets, f"`{command}`: no such make target"
            continue
        scripts = re.findall(r"((?:executor/|bench/|tests/)[\w./-]*\.py)", command)
        for script in scripts:
            assert (REPO / script).is_file(), f"`{command}` names {script}, which does not exist"
        if not scripts or not command.split()[0].endswith(("python", "pytest")):
            continue
        source = (REPO / scripts[0]).read_text(encoding="utf-8")
        if command.split()[0].endswith("pytest"):
            for keyword in re.findall(r"-k (\w+)", command):
                assert re.search(rf"def test_\w*{keyword}", source), f"`{command}`: -k {keyword} selects no test"
            continue
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", command):
            assert f'"{flag}"' in source, f"`{command}`: {scripts[0]} has no flag {flag}"


def _slug(heading: str) -> str:
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), flags=re.M)}


@pytest.mark.parametrize("doc", DESIGN_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(target)
    assert not broken, f"{doc.relative_to(REPO)}: links that do not resolve: {broken}"


def _named_files(text: str) -> set[str]:
    names = set()
    for token in re.findall(r"`([^`\s]+)`", text):
        if re.search(r"[<>*${}:]|^/|^\.", token) or token.startswith(("http", "-")):
            continue
        if re.fullmatch(r"[\w./-]+\.(?:py|c|md|json|sh|txt|yml|yaml|j2)", token) or (
                "/" in token and re.fullmatch(r"(?:executor|docs|roles|playbooks|tests|bench|scripts)/[\w./-]+", token)):
            names.add(token)
    return names


@pytest.mark.parametrize("doc", [PERFORMANCE, EXECUTOR_README, *sorted((REPO / "executor" / "docs").glob("*.md"))],
                         ids=lambda p: str(p.relative_to(REPO)))
def test_named_files_exist(doc: Path) -> None:
    """Every file a design doc names in backticks exists (paths relative to the doc, the repository
    or the executor project; a bare file name anywhere in the executor's sources, tests or benchmarks)."""
    executor = REPO / "executor"
    bases = [doc.parent, REPO, executor]
    bare = {p.name for top in ("src", "tests", "bench", "scripts") for p in (executor / top).rglob("*")}
    missing = []
    for name in sorted(_named_files(doc.read_text(encoding="utf-8"))):
        if "/" not in name and name in bare:
            continue
        if not any((b / name).exists() for b in bases):
            missing.append(name)
    assert not missing, f"{doc.relative_to(REPO)} names files that do not exist: {missing}"


# --- the executor README's configuration table against config.py ---------------------------

MIB = 1024 * 1024
# Defaults that depend on the machine or on another setting: the table says how.
DERIVED = {"--slots": "CPU count, at least 2", "--threads": "slots + 4", "--scratch-root": "`$TMPDIR/sandbox-scratch`"}


def _config_module() -> Any:
    sys.path.insert(0, str(REPO / "executor" / "src"))
    try:
        from pod_sandbox.executor import config
    finally:
        sys.path.pop(0)
    return config


def _flag_table() -> dict[str, tuple[str, str]]:
    text = EXECUTOR_README.read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(--[a-z-]+)` \| `(SANDBOX_[A-Z_]+)` \| ([^|]+) \|", section, flags=re.M)
    assert rows, "executor/README.md has no configuration table"
    return {flag: (env, default.strip()) for flag, env, default in rows}


def _flat(config: Any) -> dict[str, Any]:
    out = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            out.update({f"{field.name}.{k}": v for k, v in _flat(value).items()})
        else:
            out[field.name] = value
    return out


def _set_by(config: Any, argv: list[str], environ: dict[str, str]) -> dict[str, Any] | None:
    try:
        return _flat(config.load_config(argv, environ=environ))
    except SystemExit:
        return None


def _format(flag: str, value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if flag.endswith("-mb"):
        return f"`{value // MIB}`"
    if flag.endswith("-bytes") and isinstance(value, int) and value % MIB == 0:
        return f"`{value // MIB} MiB`"
    if isinstance(value, float):
        return f"`{value:g} s`"
    return f"`{value}`"


def test_executor_config_table_is_config_py() -> None:
    config = _config_module()
    parser_flags = {o for a in config.build_parser()._actions for o in a.option_strings if o.startswith("--")} - {"--help"}
    table = _flag_table()
    assert set(table) == parser_flags, (
        f"executor/README.md's configuration table and config.py differ: only in the table "
        f"{sorted(set(table) - parser_flags)}, only in config.py {sorted(parser_flags - set(table))}")
    default = _flat(config.load_config([], environ={}))
    for flag, (env, cell) in table.items():
        action = next(a for a in config.build_parser()._actions if flag in a.option_strings)
        if action.nargs == 0:
            trials = [([flag], {env: "1"})]
        elif action.choices:
            trials = [([flag, c], {env: c}) for c in action.choices]
        elif action.type in (int, float):
            trials = [([flag, v], {env: v}) for v in ("17", "31", "301", "100000")]
        else:
            trials = [([flag, "/nonexistent/h19d/x"], {env: "/nonexistent/h19d/x"})]
        changed = None
        for argv, environ in trials:
            by_flag, by_env = _set_by(config, argv, {}), _set_by(config, [], environ)
            if by_flag is None or by_flag == default:
                continue
            assert by_env == by_flag, f"{flag} and {env} do not set the same thing (is the variable {env}?)"
            changed = [k for k in default if by_flag[k] != default[k]]
            break
        assert changed, f"{flag}: no value changed the configuration"
        if flag in DERIVED:
            assert cell == DERIVED[flag], f"{flag}: the table's default should read {DERIVED[flag]!r}"
            continue
        key = min(changed, key=len)
        assert cell == _format(flag, default[key]), (
            f"{flag}: executor/README.md says default {cell}, config.py has {_format(flag, default[key])}")


# --- docs/troubleshooting.md and the diagnose rules ----------------------------------------

def test_every_diagnose_rule_has_its_troubleshooting_entry() -> None:
    rules = set(re.findall(r'finding\(\s*"([a-z-]+)"', (REPO / "plugins" / "module_utils" / "diagnosis.py").read_text(encoding="utf-8")))
    assert rules, "no finding ids found in diagnosis.py"
    text = (REPO / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    documented = {i for group in re.findall(r"\[(`[a-z-]+`(?:,\s+`[a-z-]+`)*)\]", text) for i in re.findall(r"`([a-z-]+)`", group)}
    assert rules - documented == set(), f"diagnose rules without an entry in docs/troubleshooting.md: {sorted(rules - documented)}"
    assert documented - rules == set(), f"docs/troubleshooting.md names rules diagnosis.py lacks: {sorted(documented - rules)}"
