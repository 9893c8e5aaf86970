"""KubernetesSandbox on the real local cluster: PandasAI's Agent path, data, plots, SQL, failures,
the warm-pool race, the reaper and a leak check. Run by scripts/test-cluster.sh (marker cluster)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from pod_sandbox.client import (
    SandboxExecutionError,
    SandboxLostError,
    SandboxStartError,
    SandboxTimeoutError,
)
from pod_sandbox.client.charts import CHART_PATH_RE
from pod_sandbox.client.http import ExecutorHTTP
from pod_sandbox.client.pods import PodLauncher, is_ready
from pod_sandbox.client.pool import DEADLINE_ANNOTATION
from pod_sandbox.client.protocol import ExecutorClient
from pod_sandbox.client.template import (
    CLAIMED_AT_ANNOTATION,
    POOL_LABEL,
    SESSION_LABEL,
    Owner,
    api_port,
    load_template,
    session_pod,
)
from pod_sandbox.client.transport import PortForwardConnector

pytestmark = pytest.mark.cluster

pai = pytest.importorskip("pandasai", reason="PandasAI is not installed (requirements/pandasai.txt)")
from pandasai import Agent  # noqa: E402
from pandasai.llm.base import LLM  # noqa: E402


class StubLLM(LLM):
    """An LLM that always answers with the same code (PandasAI extracts the ```python block)."""

    def __init__(self, code: str) -> None:
        super().__init__()
        self.code = code
        self.calls = 0

    @property
    def type(self) -> str:
        return "stub"

    def call(self, instruction, context=None) -> str:  # noqa: ANN001 - PandasAI's signature
        self.calls += 1
        return "```python\n" + self.code + "\n```"


def sales() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "region": ["north", "south", "north", "east", "south"],
            "units": [3, 4, 5, 7, 1],
            "revenue": [10.5, 20.0, 30.25, 7.0, 2.5],
        }
    )


@pytest.fixture
def datasets_dir(tmp_path, monkeypatch):
    """PandasAI writes datasets under its file manager's base path: point it at tmp_path."""
    monkeypatch.chdir(tmp_path)
    manager = pai.config.get().file_manager
    monkeypatch.setattr(manager, "base_path", str(tmp_path / "datasets"))
    return tmp_path


def test_the_client_identity_is_the_pod_manager_service_account(admin_kube, client_config):
    """The other tests run as ServiceAccount pandasai-sandbox-sa: prove it is not the admin."""
    from kubernetes import client  # noqa: PLC0415
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    if client_config is admin_kube.configuration:
        pytest.skip("ServiceAccount pandasai-sandbox-sa has no token Secret: tests run as admin")
    core = client.CoreV1Api(client.ApiClient(client_config))
    with pytest.raises(ApiException) as info:
        core.list_namespaced_secret(admin_kube.namespace)
    assert info.value.status == 403


def test_agent_on_a_csv_dataset(make_sandbox, datasets_dir):
    path = datasets_dir / "sales.csv"
    sales().to_csv(path, index=False)
    df = pai.read_csv(str(path))
    code = (
        f"df = execute_sql_query('SELECT region, SUM(units) AS units FROM {df.schema.name} "
        "GROUP BY region ORDER BY region')\n"
        "result = {'type': 'dataframe', 'value': df}"
    )
    box = make_sandbox()
    agent = Agent([df], config={"llm": StubLLM(code), "max_retries": 0}, sandbox=box)
    answer = agent.chat("units per region")
    assert type(answer).__name__ == "DataFrameResponse"
    assert answer.value.to_dict("list") == {"region": ["east", "north", "south"], "units": [7, 8, 5]}
    assert box.pod_name and box.session.kube is not None


def test_agent_on_a_parquet_dataset_with_a_plot(make_sandbox, datasets_dir):
    pai.create("acme/sales", pai.DataFrame(sales()), description="sales by region")
    df = pai.load("acme/sales")
    assert (datasets_dir / "datasets" / "acme" / "sales" / "data.parquet").is_file()
    code = (
        "import matplotlib.pyplot as plt\n"
        f"df = execute_sql_query('SELECT region, SUM(revenue) AS revenue FROM {df.schema.name} GROUP BY region')\n"
        "df.plot.bar(x='region', y='revenue')\n"
        "plt.savefig('revenue.png')\n"
        "result = {'type': 'plot', 'value': 'revenue.png'}"
    )
    with make_sandbox() as box:
        agent = Agent(df, config={"llm": StubLLM(code), "max_retries": 0}, sandbox=box)
        answer = agent.chat("plot revenue per region")
        assert type(answer).__name__ == "ChartResponse"
        # PandasAI rewrote the .png literal to its exports/charts/temp_chart_<uuid>.png path; the
        # client wrote the pod's PNG there and answers that path, as local execution does
        assert CHART_PATH_RE.match(answer.value) and answer.value in agent.last_code_executed
        png = (datasets_dir / answer.value).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 1000


def test_agent_retries_with_the_in_pod_traceback(make_sandbox, datasets_dir):
    df = pai.DataFrame(sales())
    bad = f"df = execute_sql_query('SELECT * FROM {df.schema.name}')\nresult = {{'type': 'number', 'value': df['nope'].sum()}}"
    llm = StubLLM(bad)
    box = make_sandbox()
    agent = Agent(df, config={"llm": llm, "max_retries": 1}, sandbox=box)
    # the sandbox raised PandasAI's CodeExecutionError: it asked the LLM again with the
    # traceback, then answered its ErrorResponse, as with local execution
    answer = agent.chat("sum of nope")
    assert type(answer).__name__ == "ErrorResponse"
    assert re.search("(?s)<string>\", line 2.*KeyError: 'nope'", answer.error), answer.error
    assert llm.calls == 2


def test_dynamic_sql_runs_on_the_host(make_sandbox):
    calls: list[str] = []

    def execute_sql_query(query: str) -> pd.DataFrame:
        calls.append(query)
        return sales()

    code = (
        "table = 'sales'\n"
        "df = execute_sql_query(f'SELECT * FROM {table}')\n"
        "result = {'type': 'number', 'value': int(df['units'].sum())}"
    )
    with make_sandbox() as box:
        assert box.execute(code, {"execute_sql_query": execute_sql_query, "pd": pd, "np": np}) == {
            "type": "number",
            "value": 20,
        }
    assert calls == ["SELECT * FROM sales"]


def test_timeout_then_the_session_still_works(make_sandbox):
    with make_sandbox(timeout_s=2.0) as box:
        t0 = time.monotonic()
        with pytest.raises(SandboxTimeoutError):
            box.execute("import time\ntime.sleep(60)", {})
        assert time.monotonic() - t0 < 20
        assert box.execute("result = {'type': 'number', 'value': 5}", {})["value"] == 5


def test_errors_carry_the_traceback(make_sandbox):
    with make_sandbox() as box, pytest.raises(SandboxExecutionError, match="ZeroDivisionError") as info:
        box.execute("x = 1 / 0", {})
    assert re.search("(?s)line 1.*ZeroDivisionError", info.value.traceback)


SCRATCH_PROBE = """
import os
fields = [line.split() for line in open('/proc/self/mountinfo')]
mounts = {f[4]: f[f.index('-') + 1] for f in fields}
cwd = os.getcwd()
parent = os.path.dirname(cwd)
result = {'type': 'string', 'value': f'{parent} {mounts.get(parent)} {os.nice(0)}'}
"""


def test_executions_work_in_a_tmpfs_scratch_at_a_lower_cpu_priority(make_sandbox):
    """The pod template's scratch emptyDir is tmpfs (medium Memory) and is the executor's
    --scratch-root; user code runs below the server's CPU priority and cannot raise it."""
    with make_sandbox() as box:
        parent, fstype, nice = box.execute(SCRATCH_PROBE, {})["value"].split()
        assert parent == "/tmp/sandbox-scratch" and fstype == "tmpfs"
        assert int(nice) >= 5
        with pytest.raises(SandboxExecutionError, match="PermissionError"):
            box.execute("import os\nos.nice(-5)", {})


def test_a_full_scratch_fails_that_execution_only(make_sandbox):
    """Filling the tmpfs scratch (sizeLimit 128Mi) ends in ENOSPC for that execution, not in an
    OOM kill of the server, and the next execution gets a fresh, empty scratch directory."""
    fill = ("with open('fill.bin', 'wb') as f:\n"
            "    for _ in range(200):\n"
            "        f.write(b'x' * (1 << 20))\n")
    with make_sandbox() as box:
        with pytest.raises(SandboxExecutionError, match="No space left on device"):
            box.execute(fill, {})
        listing = box.execute("import os\nresult = {'type': 'string', 'value': repr(sorted(os.listdir('.')))}", {})
        assert "fill.bin" not in listing["value"]
        assert box.execute("result = {'type': 'number', 'value': 7}", {})["value"] == 7


# Page faults taken by this child before user code starts: its set-up's (~700) plus, when the
# spare was idle, the copies the prefault probe's ranges made (~1,400 more).
FAULTS_SO_FAR = ("import resource\n"
                 "result = {'type': 'number', 'value': resource.getrusage(resource.RUSAGE_SELF).ru_minflt}")


def test_idle_spares_in_a_pod_copy_their_pages_before_the_job(make_sandbox):
    """In a real pod (non-root, restricted, read-only root) the zygote's probe can read its own
    pagemap and idle spares populate what it learned: user code finds the copies already made."""
    with make_sandbox() as box:
        counts = []
        for _ in range(3):
            time.sleep(1.0)  # idle: the probe has reported and the next spare has populated
            counts.append(box.execute(FAULTS_SO_FAR, {})["value"])
        assert sorted(counts)[1] > 1400, counts


def test_in_a_pod_children_share_the_warm_stack_from_the_sealed_memfd(make_sandbox):
    """Under the restricted profile (non-root, RuntimeDefault seccomp, read-only root) the
    fork-server could move the warm stack onto its memfd: user code finds it mapped, and the
    mapping's file cannot be opened from there."""
    code = ("import os\nmaps = [l.split()[0] for l in open('/proc/self/maps') if 'pod-sandbox-zygote-heap' in l]\n"
            "name = '-'.join(f'{int(a, 16):x}' for a in maps[0].split('-'))\n"
            "try:\n    os.open(f'/proc/self/map_files/{name}', os.O_RDWR)\n    opened = 'opened'\n"
            "except OSError as exc:\n    opened = type(exc).__name__\n"
            "result = {'type': 'string', 'value': f'{len(maps)} {opened}'}")
    with make_sandbox() as box:
        mappings, opened = box.execute(code, {})["value"].split()
    assert int(mappings) >= 10 and opened == "PermissionError", (mappings, opened)


def test_cold_pod_is_labelled_single_use_and_has_no_token(make_sandbox, admin_kube):
    box = make_sandbox()
    box.start()
    pod = admin_kube.get_pod(box.pod_name)
    labels = pod["metadata"]["labels"]
    assert labels[SESSION_LABEL] == box.session_id
    assert labels["app.kubernetes.io/managed-by"] == "pandasai-pod-sandbox"
    assert pod["spec"]["activeDeadlineSeconds"] > 0
    spec_text = json.dumps(pod["spec"])
    assert box.session.http.token not in spec_text
    # a second client cannot take over the pod: the claim was spent
    other = ExecutorClient(ExecutorHTTP(PortForwardConnector(admin_kube, box.pod_name, api_port(pod))))
    with pytest.raises(SandboxStartError, match="already claimed"):
        other.claim("x" * 43)
    other.http.close()
    name = box.pod_name
    box.stop()
    assert _gone(admin_kube, name)


def test_pod_deleted_mid_run_raises_cleanly_and_leaks_nothing(make_sandbox, admin_kube):
    box = make_sandbox()
    box.start()
    name = box.pod_name
    timer = threading.Timer(1.5, lambda: admin_kube.delete_pod(name, grace_period_seconds=0))
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(SandboxLostError, match=name):
            box.execute("import time\ntime.sleep(25)\nresult = {'type': 'number', 'value': 1}", {})
    finally:
        timer.cancel()
    assert time.monotonic() - t0 < 15
    assert box.session is None
    assert _gone(admin_kube, name)
    # the next execute starts a fresh pod (PandasAI's retry path)
    assert box.execute("result = {'type': 'number', 'value': 2}", {})["value"] == 2
    assert box.pod_name != name


def _gone(kube, name: str, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kube.get_pod(name)
        except Exception:  # noqa: BLE001 - 404
            return True
        time.sleep(0.2)
    return False


def _warm_pod(kube, tag: str) -> dict:
    """A Ready warm pod made from the published template, as the warm_pool role makes them."""
    template = load_template(None, kube)
    manifest = session_pod(template, kube.namespace, "unused", Owner.current())
    labels = manifest["metadata"]["labels"]
    labels.pop(SESSION_LABEL)
    labels[POOL_LABEL] = "warm"
    labels["pandasai.io/test"] = tag
    notes = manifest["metadata"]["annotations"]
    notes.pop(CLAIMED_AT_ANNOTATION)
    notes[DEADLINE_ANNOTATION] = str(manifest["spec"].pop("activeDeadlineSeconds", 600))
    launcher = PodLauncher(kube)
    return launcher.wait_ready(launcher.create(manifest), 120)


def test_two_clients_racing_for_one_warm_pod(make_sandbox, admin_kube):
    warm = _warm_pod(admin_kube, "race")
    name = warm["metadata"]["name"]
    # the selector keeps a deployed warm pool out of the race: only the pod made here is free
    boxes = [make_sandbox(warm_pool=True, warm_selector="pandasai.io/test=race") for _ in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(box):
        try:
            barrier.wait()
            box.start()
            assert box.execute("result = {'type': 'string', 'value': 'hi'}", {})["value"] == "hi"
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in boxes]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
    finally:
        if admin_kube.list_pods(label_selector=f"{POOL_LABEL}=warm,pandasai.io/test=race")["items"]:
            admin_kube.delete_pod(name)  # nobody claimed it: do not leave it behind
    assert not errors, errors
    pods = [b.pod_name for b in boxes]
    assert len(set(pods)) == 2, pods
    warm_flags = sorted(b.session.warm for b in boxes)
    assert warm_flags == [False, True], "exactly one client got the warm pod, the other a cold one"
    winner = next(b for b in boxes if b.session.warm)
    assert winner.pod_name == name
    claimed = admin_kube.get_pod(name)
    assert claimed["metadata"]["labels"][POOL_LABEL] == "claimed"
    assert claimed["metadata"]["labels"][SESSION_LABEL] == winner.session_id
    assert claimed["spec"]["activeDeadlineSeconds"] > 0
    for b in boxes:
        b.stop()
    for p in pods:
        assert _gone(admin_kube, p)


def test_warm_pool_replicaset_replaces_a_claimed_pod(make_sandbox, admin_kube):
    from kubernetes import client  # noqa: PLC0415

    apps = client.AppsV1Api(client.ApiClient(admin_kube.configuration))
    sets = apps.list_namespaced_replica_set(
        admin_kube.namespace, label_selector="app.kubernetes.io/component=warm-pool"
    ).items
    sets = [s for s in sets if (s.spec.replicas or 0) > 0]
    if not sets:
        pytest.skip("no warm pool deployed (warm_pool_enabled: true, warm_pool_replicas > 0)")
    rs = sets[0]
    selector = ",".join(f"{k}={v}" for k, v in rs.spec.selector.match_labels.items())
    deadline = time.monotonic() + 120
    while len([p for p in admin_kube.list_pods(label_selector=selector)["items"] if is_ready(p)]) < 1:
        assert time.monotonic() < deadline, "warm pool has no Ready pod"
        time.sleep(1)
    with make_sandbox(warm_pool=True) as box:
        assert box.session.warm
        claimed = admin_kube.get_pod(box.pod_name)
        # the ReplicaSet released the claimed pod (no owner) and keeps its replica count
        deadline = time.monotonic() + 60
        while True:
            claimed = admin_kube.get_pod(box.pod_name)
            members = admin_kube.list_pods(label_selector=selector)["items"]
            if not claimed["metadata"].get("ownerReferences") and len(members) >= rs.spec.replicas:
                break
            assert time.monotonic() < deadline, "ReplicaSet did not release the pod or replace it"
            time.sleep(0.5)
        assert box.pod_name not in [m["metadata"]["name"] for m in members]


def test_reaper_cli_deletes_leaked_and_finished_pods(admin_kube, session_ids, kubeconfig_path):
    template = load_template(None, admin_kube)
    launcher = PodLauncher(admin_kube)
    leaked = session_pod(template, admin_kube.namespace, "reapertest", Owner.current())
    old = (datetime.now(timezone.utc) - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    leaked["metadata"]["annotations"][CLAIMED_AT_ANNOTATION] = old
    fresh = session_pod(template, admin_kube.namespace, "reaperfresh", Owner.current())
    session_ids.update({"reapertest", "reaperfresh"})
    base = [sys.executable, "-m", "pod_sandbox.client.reaper", "--namespace", admin_kube.namespace,
            "--kubeconfig", kubeconfig_path, "--ttl", "3600"]
    leaked_pod = launcher.create(leaked)
    fresh_pod: dict | None = None
    try:
        fresh_pod = launcher.create(fresh)
        dry = subprocess.run(base + ["--dry-run"], capture_output=True, text=True, timeout=60)
        assert dry.returncode == 0, dry.stderr
        assert leaked_pod["metadata"]["name"] in dry.stdout and "would delete" in dry.stdout
        assert fresh_pod["metadata"]["name"] not in dry.stdout
        admin_kube.get_pod(leaked_pod["metadata"]["name"])  # still there after a dry run
        real = subprocess.run(base, capture_output=True, text=True, timeout=60)
        assert real.returncode == 0, real.stderr
        assert _gone(admin_kube, leaked_pod["metadata"]["name"])
        admin_kube.get_pod(fresh_pod["metadata"]["name"])  # younger than the TTL: kept
    finally:
        admin_kube.delete_pod(leaked_pod["metadata"]["name"])
        if fresh_pod is not None:
            admin_kube.delete_pod(fresh_pod["metadata"]["name"])


def test_check_cli_against_the_cluster(admin_kube, kubeconfig_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pod_sandbox.client", "check", "--namespace", admin_kube.namespace,
         "--kubeconfig", kubeconfig_path, "--no-warm-pool"],
        capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["result"] == {"type": "number", "value": 42}
    assert _gone(admin_kube, report["pod"])


def test_a_forgotten_session_is_deleted_at_interpreter_exit(admin_kube, session_ids, kubeconfig_path):
    script = (
        "from pod_sandbox.client import KubernetesSandbox\n"
        f"box = KubernetesSandbox({admin_kube.namespace!r}, kubeconfig={kubeconfig_path!r}, warm_pool=False)\n"
        "box.start()\n"
        "print(box.pod_name, box.session_id, flush=True)\n"
        "# no stop(): the atexit finalizer must delete the pod\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    name, session_id = proc.stdout.split()
    session_ids.add(session_id)
    assert _gone(admin_kube, name, timeout=10)


def test_zz_no_sandbox_pod_of_these_tests_is_left(admin_kube, session_ids):
    """Leak check (runs last in this module): no pod carries a session label of these tests."""
    time.sleep(1)
    leftovers = []
    for pod in admin_kube.list_pods(label_selector=SESSION_LABEL)["items"]:
        if pod["metadata"]["labels"][SESSION_LABEL] in session_ids and not pod["metadata"].get("deletionTimestamp"):
            leftovers.append(pod["metadata"]["name"])
    for pod in admin_kube.list_pods(label_selector="pandasai.io/test")["items"]:
        leftovers.append(pod["metadata"]["name"])
    assert leftovers == [], f"leaked sandbox pods: {leftovers}"
