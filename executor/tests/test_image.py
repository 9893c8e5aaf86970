"""The built image as a pod runs it: read-only root, no capabilities, tmpfs /tmp and /workspace.

Runs only when SANDBOX_IMAGE names a built image (e.g. the image role's output) and a Docker
engine answers: ``SANDBOX_IMAGE=pandasai-sandbox-pod:<tag> pytest executor/tests/test_image.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from typing import Iterator

import pytest

IMAGE = os.environ.get("SANDBOX_IMAGE", "")
pytestmark = [
    pytest.mark.skipif(not IMAGE, reason="SANDBOX_IMAGE not set"),
    pytest.mark.skipif(shutil.which("docker") is None, reason="no docker CLI"),
    pytest.mark.timeout(300),
]

PROBE = r"""
import http.client, json, sys
c = http.client.HTTPConnection("127.0.0.1", 8080, timeout=60)
def req(method, path, body=None, headers=None):
    c.request(method, path, body, headers or {})
    r = c.getresponse()
    return r.status, r.read()
out = {}
out["ready"] = req("GET", "/ready")[0]
token = "i" * 40
out["claim"] = req("POST", "/v1/claim", json.dumps({"token": token}), {"Content-Type": "application/json"})[0]
h = {"Content-Type": "application/json", "Authorization": "Bearer " + token}
for name, code in [
    ("whoami", "import os\nresult = {'type': 'string', 'value': f'{os.getuid()}:{os.getcwd()}'}"),
    ("socket", "import socket\nsocket.socket()"),
    ("plot", "plt.plot([1, 2])\nplt.savefig('exports/charts/temp_chart_1.png')\n"
             "result = {'type': 'plot', 'value': 'exports/charts/temp_chart_1.png'}"),
    ("kill_pid1", "import os\nos.kill(1, 15)"),
    ("write_root", "open('/opt/venv/x', 'w')"),
]:
    status, body = req("POST", "/v1/execute", json.dumps({"code": code}), h)
    out[name] = json.loads(body)
status, body = req("GET", "/v1/info", None, h)
out["info"] = json.loads(body)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    name = f"pod-sandbox-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "--network", "none", "--read-only", "--cap-drop", "ALL",
         "--security-opt", "no-new-privileges", "--tmpfs", "/tmp:uid=10001,gid=10001,mode=1777",
         "--tmpfs", "/workspace:uid=10001,gid=10001,mode=0700", IMAGE, "--claimable"],
        check=True, capture_output=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            probe = subprocess.run(["docker", "exec", name, "python3", "-c",
                                    "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ready')"],
                                   capture_output=True)
            if probe.returncode == 0:
                break
            time.sleep(0.5)
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def test_image_serves_confined_executions(container: str) -> None:
    out = subprocess.run(["docker", "exec", container, "python3", "-c", PROBE],
                         check=True, capture_output=True, text=True).stdout
    res = json.loads(out)
    assert res["ready"] == 200 and res["claim"] == 200
    uid, cwd = res["whoami"]["result"]["value"].split(":")
    assert uid == "10001" and cwd.startswith("/tmp/sandbox-scratch/")
    assert res["socket"]["status"] == "error" and res["socket"]["error"]["type"] == "PermissionError"
    assert res["plot"]["result"]["value"].startswith("data:image/png;base64,")
    assert res["kill_pid1"]["error"]["type"] == "PermissionError"
    assert res["write_root"]["status"] == "error"
    assert res["info"]["versions"]["pandas"] == "2.2.3"


def test_image_stops_promptly_on_sigterm(container: str) -> None:
    t0 = time.monotonic()
    subprocess.run(["docker", "stop", "-t", "30", container], check=True, capture_output=True)
    assert time.monotonic() - t0 < 5
    code = subprocess.run(["docker", "inspect", "-f", "{{.State.ExitCode}}", container],
                          check=True, capture_output=True, text=True).stdout.strip()
    assert code == "0"
