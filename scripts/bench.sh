#!/usr/bin/env bash
# Benchmarks on the local cluster, each printing its numbers and a same-run baseline:
#   bench/bench_converge.py: site.yml converge and no-op re-run vs `kubectl apply` of the same
#                            rendered manifests, and the sandbox pod's time to Ready;
#   executor/bench/*.py:     the executor and the client (when present).
# Brings the cluster up first (site.yml does, through cluster_prep). Extra arguments go to
# bench_converge.py.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg"
status=0
echo "=== bench: site.yml converge / no-op vs kubectl apply, pod time to Ready"
python bench/bench_converge.py "$@" || status=1
for script in executor/bench/bench_executor.py executor/bench/bench_client.py; do
  if [ -f "$script" ]; then
    echo "=== bench: $script"
    python "$script" || status=1
  fi
done
exit "$status"
