"""The idle spare's warm-up: stops for a job, leaves no trace a job could see (unit and over HTTP)."""

from __future__ import annotations

import io
import os
import time
import warnings

import pytest

from pod_sandbox.executor import framing, prewarm
from server_process import start_executor


def _frame():
    import numpy as np
    import pandas as pd

    return pd.DataFrame({"region": ["n", "s", "e", "w"] * 25, "amount": np.arange(100, dtype="float64"),
                         "qty": np.arange(100, dtype="int64")})


def test_an_idle_spare_runs_every_step_and_leaves_no_output_file_or_state(tmp_path, capfd, monkeypatch):
    import matplotlib.pyplot as plt
    import numpy as np

    monkeypatch.chdir(tmp_path)
    frame = _frame()
    before = frame.copy(deep=True)
    filters = list(warnings.filters)
    figures = plt.get_fignums()  # other tests in this process may have left some open
    random_state = np.random.get_state()[1].copy()
    r, w = os.pipe()
    try:
        done = prewarm.warm_until_job(r, {"sales.parquet": frame})
    finally:
        os.close(r)
        os.close(w)
    assert done == len(list(prewarm.steps({"sales.parquet": frame}))) > 10
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert os.listdir(tmp_path) == []
    assert plt.get_fignums() == figures
    assert warnings.filters == filters
    assert (np.random.get_state()[1] == random_state).all()
    assert frame.equals(before) and list(frame.columns) == list(before.columns)


@pytest.mark.parametrize("arrival", ["job", "eof"])
def test_a_waiting_job_or_a_discarded_spare_means_no_warm_up(arrival):
    r, w = os.pipe()
    try:
        if arrival == "job":
            framing.write_frame_fd(w, b'{"code": "x"}')
        else:
            os.close(w)
        assert prewarm.warm_until_job(r, {"a": _frame()}) == 0
        if arrival == "job":
            assert framing.read_frame_fd(r) == b'{"code": "x"}'
        else:
            assert framing.read_frame_fd(r) is None
    finally:
        os.close(r)
        if arrival == "job":
            os.close(w)


def test_a_job_arriving_mid_warm_up_stops_it_after_the_current_step_and_is_read_whole(monkeypatch):
    r, w = os.pipe()
    ran: list[int] = []

    def fake_steps(_datasets):
        for i in range(10):
            def step(i=i):
                ran.append(i)
                if i == 3:  # the fork-server hands the job over while step 3 runs
                    framing.write_frame_fd(w, b'{"code": "result = 1"}')
            yield step

    monkeypatch.setattr(prewarm, "steps", fake_steps)
    try:
        assert prewarm.warm_until_job(r, {}) == 4
        assert ran == [0, 1, 2, 3]
        assert framing.read_frame_fd(r) == b'{"code": "result = 1"}'
    finally:
        os.close(r)
        os.close(w)


def test_a_failing_step_ends_the_warm_up_quietly(monkeypatch, capfd):
    def bad_steps(_datasets):
        yield lambda: None
        yield lambda: 1 / 0
        yield lambda: pytest.fail("ran after a failure")

    monkeypatch.setattr(prewarm, "steps", bad_steps)
    r, w = os.pipe()
    try:
        assert prewarm.warm_until_job(r, {}) == 1
    finally:
        os.close(r)
        os.close(w)
    assert capfd.readouterr() == ("", "")


def test_odd_staged_frames_do_not_break_the_warm_up():
    import pandas as pd

    odd = {
        "dup.csv": pd.DataFrame([[1, 2], [3, 4]], columns=["a", "a"]),
        "empty.csv": pd.DataFrame(),
        "text.csv": pd.DataFrame({"s": ["x", "y"]}),
        "multi.csv": pd.DataFrame({("a", "b"): [1.0, 2.0], ("c", "d"): ["p", "q"]}),
    }
    r, w = os.pipe()
    try:
        prewarm.warm_until_job(r, odd)  # never raises, whatever it managed
    finally:
        os.close(r)
        os.close(w)


# Code that reports everything a warm-up could have left behind: names in its namespace, files
# in its working directory, figures, warnings filters, its own output streams so far.
PROBE = """
import os, sys, warnings
names = sorted(k for k in globals() if k != '__builtins__')
files = sorted(os.path.relpath(os.path.join(d, f), '.') for d, _dirs, fs in os.walk('.') for f in fs + _dirs)
result = {'type': 'string', 'value': repr({
    'names': names, 'files': files, 'figures': plt.get_fignums(),
    'filters': len(warnings.filters), 'mean': float(execute_sql_query('SELECT 1')['amount'].mean()),
})}
"""


def _probe(proc) -> dict:
    buf = io.BytesIO()
    _frame().to_parquet(buf)
    r = proc.request("PUT", "/v1/files/sales.parquet", buf.getvalue(), {"Content-Type": "application/octet-stream"})
    assert r.status == 201, r.body
    datasets = {"SELECT 1": "sales.parquet"}
    proc.run("result = {'type': 'number', 'value': 1}", datasets=datasets)  # loads the cache
    time.sleep(1.5)  # the new generation's spares are forked and have finished warming
    body = proc.run(PROBE, datasets=datasets)
    assert body["status"] == "ok", body
    return body


def test_over_http_a_warmed_spare_runs_a_job_exactly_like_a_cold_one():
    # Prefault off in both: its copies would be among the idle spares' faults too.
    warm = start_executor("--slots", "2", "--prewarm", "on", "--prefault", "off")
    cold = start_executor("--slots", "2", "--prewarm", "off", "--prefault", "off")
    try:
        got_warm, got_cold = _probe(warm), _probe(cold)
        time.sleep(1.5)
        # The warm-up did run (its copy-on-write faults are in the idle spares), not only the job.
        warm_faults, cold_faults = warm.spare_minor_faults(), cold.spare_minor_faults()
        assert warm_faults and cold_faults
        assert min(warm_faults) > max(cold_faults) + 500, (warm_faults, cold_faults)
        for key in ("result", "stdout", "stderr", "error", "status"):
            assert got_warm[key] == got_cold[key], key
        assert got_warm["stdout"] == got_warm["stderr"] == ""
        assert "exports" in got_warm["result"]["value"]  # the probe did see the scratch dir
    finally:
        warm.stop()
        cold.stop()


def test_over_http_jobs_arriving_while_spares_warm_are_all_served():
    proc = start_executor("--slots", "2", "--spares", "2", "--prewarm", "on")
    try:
        buf = io.BytesIO()
        _frame().to_parquet(buf)
        assert proc.request("PUT", "/v1/files/sales.parquet", buf.getvalue(),
                            {"Content-Type": "application/octet-stream"}).status == 201
        datasets = {"SELECT 1": "sales.parquet"}
        expected = float(_frame()["amount"].mean())
        for i in range(40):  # back to back: each job lands on a spare forked moments before
            body = proc.run("result = {'type': 'number', 'value': float(execute_sql_query('SELECT 1')['amount'].mean())}",
                            datasets=datasets)
            assert body["status"] == "ok" and body["result"]["value"] == expected, body
            if i % 10 == 9:
                time.sleep(0.002 * i)  # and some after a short idle gap, mid-warm-up
        assert proc.leftovers() == []
    finally:
        proc.stop()


def test_config_prewarm_flag_and_environment():
    from pod_sandbox.executor.config import load_config

    assert load_config([], {}).prewarm is False  # opt-in: see executor/README.md for why
    assert load_config(["--prewarm", "on"], {}).prewarm is True
    assert load_config(["--prewarm", "off"], {"SANDBOX_PREWARM": "1"}).prewarm is False
    assert load_config([], {"SANDBOX_PREWARM": "yes"}).prewarm is True
    with pytest.raises(SystemExit, match="prewarm"):
        load_config([], {"SANDBOX_PREWARM": "maybe"})
