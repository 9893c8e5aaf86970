"""The corpus itself: it covers what the issue lists, each program is what PandasAI would run,
and its fixed facts (versions, the result cap, the README's list of differences) agree with
their sources."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from parity_corpus import KEPT, KEPT_SHOWS, OPEN, OPEN_SHOWS, PROGRAMS, REQUIRED_TAGS, TABLES, by_name
from parity_harness import FixedCodeLLM

EXECUTOR = Path(__file__).resolve().parents[3]
CLIENT_README = EXECUTOR / "src" / "pod_sandbox" / "client" / "README.md"


def test_the_corpus_has_at_least_40_programs_with_unique_names():
    names = [p.name for p in PROGRAMS]
    assert len(names) >= 40
    assert len(set(names)) == len(names)


def test_the_corpus_covers_what_the_issue_lists():
    used = set().union(*(p.tags for p in PROGRAMS))
    assert REQUIRED_TAGS <= used, sorted(REQUIRED_TAGS - used)


def test_every_kept_or_open_difference_is_explained_and_used():
    for program in PROGRAMS:
        assert program.kept <= KEPT.keys(), program.name
        assert program.open <= OPEN.keys(), program.name
        assert not (program.kept and program.open), f"{program.name}: kept or open, not both"
        if program.kept:
            assert program.check is not None, f"{program.name}: a kept difference needs its check"
    assert KEPT.keys() == KEPT_SHOWS.keys() and OPEN.keys() == OPEN_SHOWS.keys()
    used = set().union(*(p.kept | p.open for p in PROGRAMS))
    assert (KEPT.keys() | OPEN.keys()) - used <= {"library-paths"}, "an explanation no program needs"


@pytest.mark.parametrize("program", PROGRAMS, ids=lambda p: p.name)
def test_every_program_is_code_pandasai_accepts(program, frames, tmp_path, monkeypatch):
    """PandasAI's own code generator takes the LLM's answer: extraction, the requirement that
    execute_sql_query is used, the cleaner (SQL table names, chart paths)."""
    from pandasai.agent.state import AgentState  # noqa: PLC0415
    from pandasai.core.code_generation.base import CodeGenerator  # noqa: PLC0415

    monkeypatch.chdir(tmp_path)
    llm = FixedCodeLLM(program.codes)
    state = AgentState()
    state.initialize(frames(program.tables), {"llm": llm, "save_logs": False})
    generator = CodeGenerator(state)
    for code in program.codes + program.before:
        cleaned = generator.validate_and_clean_code(llm._extract_code(FixedCodeLLM([code]).call(None)))
        compile(cleaned, "<string>", "exec")
        if ".png" in code:
            assert "exports/charts/temp_chart_" in cleaned, "PandasAI rewrites the chart path"


def test_the_tables_cover_the_dtypes_users_meet():
    sales = TABLES["sales"]()
    kinds = {str(t) for t in sales.dtypes}
    assert {"Int64", "boolean", "category", "datetime64[ns, UTC]", "datetime64[ns]", "string", "float64"} <= kinds


def test_the_near_cap_frame_is_near_the_executors_result_cap():
    """The 'near the cap' program's answer is 85-100% of the executor's shipped max_result_bytes
    (read from its configuration, not assumed), the 'over' one above it."""
    from pod_sandbox import wire  # noqa: PLC0415
    from pod_sandbox.executor.config import Limits  # noqa: PLC0415

    cap = Limits().max_result_bytes

    def encoded_size(name: str) -> int:
        namespace: dict = {"execute_sql_query": lambda q: TABLES["wide"]()}
        exec(by_name(name).codes[0], namespace)  # noqa: S102 - our own corpus, to size its answer
        return len(json.dumps(wire.encode_result(namespace["result"])))

    assert 0.85 * cap < encoded_size("frame_near_result_cap") < cap
    assert encoded_size("frame_over_result_cap") > cap


def test_the_image_pins_what_the_host_runs():
    """Parity needs the same libraries on both sides: the image's pins equal the versions
    PandasAI runs with here (pandas, numpy, matplotlib, seaborn, pyarrow), and the server extra
    of pyproject.toml pins the same."""
    from importlib.metadata import version  # noqa: PLC0415

    image = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^ \\\n]+)", (EXECUTOR / "requirements-image.txt").read_text(), re.M))
    pyproject = (EXECUTOR / "pyproject.toml").read_text()
    server = pyproject.split("server = [", 1)[1].split("]", 1)[0]
    pinned = dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', server))
    for name in ("pandas", "numpy", "matplotlib", "seaborn", "pyarrow"):
        assert image[name] == pinned[name] == version(name), name


def test_the_client_readme_lists_every_kept_difference():
    text = CLIENT_README.read_text()
    for kind in KEPT:
        assert f"\n| `{kind}` |" in text, f"{kind} is not explained in {CLIENT_README.name}"
    assert f"a corpus of {len(PROGRAMS)} programs" in text


def test_the_client_readme_lists_the_programs_of_each_open_difference():
    """The README's table of open differences names exactly the programs that are strict xfails
    for each kind (or counts them), so neither can change without the other."""
    rows = {}
    for line in CLIENT_README.read_text().splitlines():
        match = re.match(r"^\| `([a-z-]+)` \| (.*?) \|", line)
        if match and match.group(1) in OPEN:
            rows[match.group(1)] = match.group(2)
    assert rows.keys() == OPEN.keys()
    for kind, cell in rows.items():
        names = {p.name for p in PROGRAMS if kind in p.open}
        count = re.search(r"\((\d+)\)$", cell)
        if count:
            assert int(count.group(1)) == len(names), kind
        else:
            assert set(re.findall(r"`([a-z0-9_]+)`", cell)) == names, kind
