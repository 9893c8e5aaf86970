"""Benchmark of site.yml on the local cluster, printed from one run (same machine, same load):

  * converge:  site.yml on a running cluster with the image present, after teardown.yml removed
               the deployment (the objects; image and cluster stay);
  * no-op:     site.yml again at once (must report changed=0);
  * baseline:  `kubectl apply -f` of render.yml's manifests for the same inventory and image
               (after the same teardown), then the same apply again (no-op baseline);
  * ratios:    converge / kubectl apply and no-op / kubectl no-op apply;
  * pod Ready: create -> Ready of sandbox pods made from the published template (image present).

Targets: no-op re-run <= 20 s with changed=0; converge <= 40 s.
The benchmark deploys into its own namespace (default pandasai-sandbox-bench) and removes it at
the end, so it never disturbs a deployment made with `make deploy`.

    .venv/bin/python bench/bench_converge.py [--namespace NS] [--pods 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("POD_SANDBOX_CACHE_DIR", "/var/cache/pandasai-pod-sandbox"))
RECAP = re.compile(r"ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")
TARGET_NOOP_S = 20.0
TARGET_CONVERGE_S = 40.0


@dataclass
class Timed:
    """A timed command: wall seconds, exit code, output, and the Ansible recap's changed count."""

    seconds: float
    rc: int
    output: str

    @property
    def changed_tasks(self) -> list[str]:
        """Names of the tasks that reported a change (Ansible's default output)."""
        names, current = [], ""
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                current = line[6:].split("]", 1)[0]
            elif line.startswith("changed:") and current not in names:
                names.append(current)
        return names

    @property
    def changed(self) -> int | None:
        found = RECAP.findall(self.output)
        return sum(int(row[1]) for row in found) if found else None


class Bench:
    """Runs playbooks and kubectl against the local inventory in the benchmark's namespace."""

    def __init__(self, inventory: str, namespace: str, kubeconfig: str, kubectl: str) -> None:
        self.inventory = inventory
        self.namespace = namespace
        self.kubeconfig = kubeconfig
        self.kubectl = kubectl
        self.env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0",
                        ANSIBLE_NOCOLOR="1", KUBECONFIG=kubeconfig)

    def run(self, command: list[str], check: bool = True) -> Timed:
        started = time.monotonic()
        done = subprocess.run(command, cwd=ROOT, env=self.env, capture_output=True, text=True)
        timed = Timed(time.monotonic() - started, done.returncode, done.stdout + done.stderr)
        if check and timed.rc != 0:
            sys.exit(f"bench: {' '.join(command[:4])} ... failed (rc {timed.rc}):\n{timed.output[-4000:]}")
        return timed

    def playbook(self, playbook: str, *extra: str) -> Timed:
        ansible = str(Path(sys.executable).parent / "ansible-playbook")
        return self.run([ansible, "-i", self.inventory, "-e", f"pod_sandbox_namespace={self.namespace}", playbook, *extra])

    def inventory_vars(self) -> dict[str, Any]:
        ansible = str(Path(sys.executable).parent / "ansible-inventory")
        done = subprocess.run([ansible, "-i", self.inventory, "--host", "localhost"], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, check=True)
        return json.loads(done.stdout)


def applied_manifests(rendered: Path, inventory_vars: dict[str, Any]) -> list[Path]:
    """The rendered files site.yml applies with this inventory (not the bare pod, not the
    monitors without their operator, optional parts only when on)."""
    def on(name: str) -> bool:
        return str(inventory_vars.get(name, False)).lower() in ("true", "1", "yes")

    files = []
    for path in sorted(rendered.glob("*.yaml")):
        stem = path.stem
        if stem.startswith("51-") or stem.startswith("41-"):
            continue
        if stem.startswith("40-") and not on("pod_sandbox_monitoring_enabled"):
            continue
        if stem.startswith("60-") and not on("warm_pool_enabled"):
            continue
        files.append(path)
    return files


def pod_ready_seconds(core: client.CoreV1Api, namespace: str, runs: int) -> list[float]:
    """Create -> Ready of `runs` pods from the published template, one after the other."""
    template = core.read_namespaced_config_map("pandasai-sandbox-pod-template", namespace)
    manifest = yaml.safe_load(template.data["pod.yaml"])
    times = []
    for _ in range(runs):
        started = time.monotonic()
        name = core.create_namespaced_pod(namespace, manifest).metadata.name
        try:
            while True:
                pod = core.read_namespaced_pod(name, namespace)
                if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
                    times.append(time.monotonic() - started)
                    break
                if time.monotonic() - started > 120:
                    sys.exit(f"bench: pod {name} not Ready within 120 s")
                time.sleep(0.05)
        finally:
            core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inventory", default=str(ROOT / "inventories" / "local"))
    parser.add_argument("--namespace", default="pandasai-sandbox-bench")
    parser.add_argument("--kubeconfig", default=str(CACHE / "kubeconfig"))
    parser.add_argument("--kubectl", default=str(CACHE / "bin" / "kubectl"), help="kubectl built from the same source")
    parser.add_argument("--pods", type=int, default=5, help="sandbox pods timed to Ready [5]")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args()

    bench = Bench(args.inventory, args.namespace, args.kubeconfig, args.kubectl)
    inventory_vars = bench.inventory_vars()
    print("bench: warm-up site.yml (cluster up, image present) ...", file=sys.stderr)
    bench.playbook("site.yml")
    bench.playbook("playbooks/teardown.yml")
    print("bench: converge and no-op ...", file=sys.stderr)
    converge = bench.playbook("site.yml")
    noop = bench.playbook("site.yml")

    api = config.new_client_from_config(config_file=args.kubeconfig)
    core = client.CoreV1Api(api)
    print("bench: pod time to Ready ...", file=sys.stderr)
    ready = pod_ready_seconds(core, args.namespace, args.pods)
    image = core.read_namespaced_config_map("pandasai-sandbox-pod-template", args.namespace).metadata.annotations["pandasai.io/image"]

    print("bench: kubectl apply baseline ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="bench-rendered-") as tmp:
        bench.playbook("playbooks/render.yml", "-e", f"render_dir={tmp}", "-e", f"pod_sandbox_image_ref={image}")
        files = applied_manifests(Path(tmp), inventory_vars)
        bench.playbook("playbooks/teardown.yml")
        apply_args = [args.kubectl, "--kubeconfig", args.kubeconfig, "apply"] + [arg for f in files for arg in ("-f", str(f))]
        kubectl_apply = bench.run(apply_args)
        kubectl_noop = bench.run(apply_args)
        kinds = sorted({doc["kind"] for f in files for doc in yaml.safe_load_all(f.read_text()) if doc})
    bench.playbook("playbooks/teardown.yml")
    api.close()

    result = {
        "converge_s": round(converge.seconds, 2),
        "converge_changed": converge.changed,
        "noop_s": round(noop.seconds, 2),
        "noop_changed": noop.changed,
        "kubectl_apply_s": round(kubectl_apply.seconds, 2),
        "kubectl_noop_apply_s": round(kubectl_noop.seconds, 2),
        "converge_over_kubectl_apply": round(converge.seconds / kubectl_apply.seconds, 1),
        "noop_over_kubectl_noop_apply": round(noop.seconds / kubectl_noop.seconds, 1),
        "pod_ready_median_s": round(statistics.median(ready), 2),
        "pod_ready_s": [round(t, 2) for t in ready],
        "baseline_kinds": kinds,
        "noop_changed_tasks": noop.changed_tasks,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "targets": {"noop_s": TARGET_NOOP_S, "converge_s": TARGET_CONVERGE_S},
        "met": {"noop": noop.seconds <= TARGET_NOOP_S and noop.changed == 0, "converge": converge.seconds <= TARGET_CONVERGE_S},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{'measure':42} {'seconds':>8}  notes")
        print(f"{'site.yml converge (image present)':42} {converge.seconds:8.2f}  changed={converge.changed}, target <= {TARGET_CONVERGE_S:.0f} s")
        print(f"{'site.yml no-op re-run':42} {noop.seconds:8.2f}  changed={noop.changed}, target <= {TARGET_NOOP_S:.0f} s with changed=0")
        print(f"{'kubectl apply (same rendered manifests)':42} {kubectl_apply.seconds:8.2f}  {len(files)} files: {', '.join(kinds)}")
        print(f"{'kubectl apply again (no-op)':42} {kubectl_noop.seconds:8.2f}")
        print(f"{'ratio converge / kubectl apply':42} {result['converge_over_kubectl_apply']:8.1f}x")
        print(f"{'ratio no-op / kubectl no-op apply':42} {result['noop_over_kubectl_noop_apply']:8.1f}x")
        print(f"{'sandbox pod create -> Ready (median)':42} {statistics.median(ready):8.2f}  runs: {', '.join(f'{t:.2f}' for t in ready)}")
        print(f"targets met: no-op {result['met']['noop']}, converge {result['met']['converge']}")
        if noop.changed:
            print("no-op run changed: " + "; ".join(noop.changed_tasks))
        print(f"load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs); compare ratios, not seconds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
