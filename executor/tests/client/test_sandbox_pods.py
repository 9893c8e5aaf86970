"""KubernetesSandbox's pod path (cold, warm, lost, failed claim) with a fake API and fake executor."""

from __future__ import annotations

import copy
import gc

import pytest
from fakes import FakeKube, pod

from pod_sandbox.client import KubernetesSandbox, SandboxLostError, SandboxStartError
from pod_sandbox.client.datasets import extract_sql_queries, parse
from pod_sandbox.client.kube import WatchEvent
from pod_sandbox.client.template import MANAGED_BY_LABEL, POOL_LABEL, SESSION_LABEL


def template(port: int) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "python-sandbox-",
                     "labels": {"app": "python-sandbox", MANAGED_BY_LABEL: "pandasai-pod-sandbox"}},
        "spec": {"containers": [{"name": "executor", "image": "img",
                                 "ports": [{"name": "api", "containerPort": port}]}]},
    }


class ReadyOnWatch(FakeKube):
    """Every watch reports the newest pod Running and Ready at 127.0.0.1."""

    def watch_pods(self, **kwargs):
        name = kwargs["field_selector"].split("=", 1)[1]
        ready = copy.deepcopy(self.pods[name])
        ready["status"] = pod(name)["status"]
        self.pods[name] = ready
        yield WatchEvent("MODIFIED", ready)


@pytest.fixture
def kube():
    return ReadyOnWatch("ns")


def sandbox_for(kube, fake, **kw) -> KubernetesSandbox:
    port = fake.server.server_address[1]
    return KubernetesSandbox("ns", connection="pod-ip", kube=kube, pod_template=template(port), **kw)


def test_cold_session_creates_claims_runs_and_deletes(kube, fake_executor):
    box = sandbox_for(kube, fake_executor, warm_pool=False)
    box.start()
    name = box.pod_name
    labels = kube.pods[name]["metadata"]["labels"]
    assert labels[SESSION_LABEL] == box.session_id
    assert fake_executor.token is not None
    assert box.execute("result = {'type': 'number', 'value': 7}", {}) == {"type": "number", "value": 7}
    box.stop()
    assert name not in kube.pods and fake_executor.shutdowns == 1
    box.stop()
    assert kube.deleted == [name]


def test_start_after_stop_gets_a_new_pod(kube, fake_executor):
    box = sandbox_for(kube, fake_executor, warm_pool=False)
    box.start()
    first = box.pod_name
    box.stop()
    fake_executor.token = None  # a new pod is a new claimable executor
    box.start()
    assert box.pod_name != first
    box.stop()
    assert kube.pods == {}


def test_warm_pod_is_claimed_instead_of_creating_one(kube, fake_executor):
    warm = pod("python-sandbox-warm1", labels={"app": "python-sandbox", MANAGED_BY_LABEL: "pandasai-pod-sandbox",
                                               POOL_LABEL: "warm"})
    warm["spec"] = template(fake_executor.server.server_address[1])["spec"]
    kube.add_pod(warm)
    with sandbox_for(kube, fake_executor) as box:
        assert box.pod_name == "python-sandbox-warm1"
        assert box.session.warm
        labels = kube.pods["python-sandbox-warm1"]["metadata"]["labels"]
        assert labels[POOL_LABEL] == "claimed" and labels[SESSION_LABEL] == box.session_id
    assert kube.pods == {}


def test_a_starting_warm_pod_is_claimed_before_a_cold_one_is_made(kube, fake_executor):
    labels = {"app": "python-sandbox", MANAGED_BY_LABEL: "pandasai-pod-sandbox", POOL_LABEL: "warm"}
    starting = pod("python-sandbox-warm2", phase="Pending", ready=False, labels=labels)
    starting["spec"] = template(fake_executor.server.server_address[1])["spec"]
    kube.add_pod(starting)
    with sandbox_for(kube, fake_executor) as box:
        assert box.pod_name == "python-sandbox-warm2" and box.session.warm
        assert box.session.timings["warm_starting"] == 1.0
        assert kube.created == 0
    kube.add_pod(starting)
    fake_executor.token = None  # the next pod is a new claimable executor
    with sandbox_for(kube, fake_executor, warm_claim_starting=False) as box:
        assert not box.session.warm and kube.created == 1
    assert list(kube.pods) == ["python-sandbox-warm2"]


def test_empty_pool_falls_back_to_a_cold_pod(kube, fake_executor):
    with sandbox_for(kube, fake_executor) as box:
        assert not box.session.warm
        assert box.pod_name.startswith("python-sandbox-")
    assert kube.pods == {}


def test_a_failed_claim_deletes_the_pod(kube, fake_executor):
    fake_executor.token = "x" * 40  # someone else claimed this executor
    box = sandbox_for(kube, fake_executor, warm_pool=False)
    with pytest.raises(SandboxStartError, match="already claimed"):
        box.start()
    assert kube.pods == {} and len(kube.deleted) == 1
    assert box.session is None


def test_a_pod_deleted_mid_run_raises_lost_and_leaks_nothing(kube, fake_executor):
    box = sandbox_for(kube, fake_executor, warm_pool=False)
    box.start()
    name = box.pod_name

    def vanish(handler) -> bool:
        kube.pods.pop(name)
        handler._body()
        handler.close_connection = True
        handler.connection.close()
        return True

    fake_executor.hooks["POST /v1/execute"] = vanish
    with pytest.raises(SandboxLostError, match=f"{name} is gone \\(deleted\\)"):
        box.execute("result = {'type': 'number', 'value': 1}", {})
    assert box.session is None and not box._started
    assert kube.pods == {}
    assert fake_executor.shutdowns == 0


def test_forgotten_sandbox_is_cleaned_up_by_its_finalizer(kube, fake_executor):
    box = sandbox_for(kube, fake_executor, warm_pool=False)
    box.start()
    name = box.pod_name
    del box
    gc.collect()
    assert name not in kube.pods


def test_sql_extraction_matches_pandasai():
    base = pytest.importorskip("pandasai.sandbox").Sandbox()
    samples = [
        "df = execute_sql_query('SELECT a FROM t')\nresult = {'type': 'dataframe', 'value': df}",
        "q = \"\"\"WITH x AS (SELECT 1) SELECT * FROM x\"\"\"\ndf = execute_sql_query(q)",
        "print('select me')\nexecute_sql_query(f'SELECT {c} FROM t')",
        "x = 1\ny = 'no sql here'",
    ]
    for code in samples:
        expected = list(dict.fromkeys(base._extract_sql_queries_from_code(code)))
        assert extract_sql_queries(parse(code)) == expected


def test_a_broken_warm_pod_is_deleted_and_a_cold_pod_used(kube, fake_executor):
    warm = pod("python-sandbox-warm1", labels={"app": "python-sandbox", MANAGED_BY_LABEL: "pandasai-pod-sandbox",
                                               POOL_LABEL: "warm"})
    warm["spec"] = template(1)["spec"]  # nothing listens on port 1: the warm pod is broken
    kube.add_pod(warm)
    with sandbox_for(kube, fake_executor) as box:
        assert not box.session.warm
        assert box.pod_name != "python-sandbox-warm1"
        assert box.execute("result = {'type': 'number', 'value': 3}", {})["value"] == 3
    assert "python-sandbox-warm1" in kube.deleted
    assert kube.pods == {}
