#!/usr/bin/env bash
# Real-cluster tests on this machine's single-node Kubernetes 1.20 (cluster_prep provider local):
#   1. Molecule scenario `local`: create (brings the cluster up; cold: Debian packages and a Go
#      build of about 7 minutes), converge site.yml, idempotence, check mode, verify, destroy;
#   2. site.yml on inventories/local with a warm pool of 1 (the `make deploy` state, plus the pool);
#   3. tests/integration: faults (API server killed mid-converge, wrong kubeconfig, stopped
#      cluster) and the pods/exec switch;
#   4. the client's cluster tests (pytest -m cluster executor/tests/client), when present.
# With CI=true (or POD_SANDBOX_FRESH_CLUSTER=1) the cluster's state is purged first.
# Every step runs even if an earlier one failed (except when the cluster cannot come up);
# the exit status is non-zero when any failed. The cluster keeps running afterwards.
set -uo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/molecule ] || scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg"
export KUBECONFIG=${POD_SANDBOX_KUBECONFIG:-/var/cache/pandasai-pod-sandbox/kubeconfig}
export K8S_AUTH_KUBECONFIG=$KUBECONFIG SANDBOX_INVENTORY=$PWD/inventories/local
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
if [ "$(id -u)" != 0 ]; then
  echo "test-cluster: the local cluster needs root" >&2
  exit 1
fi

failed=()
step() { # NAME COMMAND...: run one step, report its time and verdict
  local name=$1 start=$SECONDS
  shift
  echo "=== test-cluster: $name"
  if "$@"; then
    echo "=== test-cluster: $name passed ($((SECONDS - start)) s)"
  else
    echo "=== test-cluster: $name FAILED ($((SECONDS - start)) s)"
    failed+=("$name")
  fi
}

# CI (CI=true) or POD_SANDBOX_FRESH_CLUSTER=1: start from an empty cluster. A machine reused from a
# development session may hold that session's objects, node taints and stopped processes.
if [ "${CI:-}" = true ] || [ "${POD_SANDBOX_FRESH_CLUSTER:-0}" = 1 ]; then
  step "fresh cluster state (stop, purge etcd and kubelet state)" \
    ansible-playbook -i inventories/local playbooks/teardown.yml --tags cluster \
      -e pod_sandbox_teardown_cluster=true -e cluster_prep_local_teardown_purge=true
fi
step "molecule local" molecule test -s local
cache=$(dirname "$KUBECONFIG")
if ! "$cache/bin/kubectl" --request-timeout=5s get --raw /readyz >/dev/null 2>&1; then
  echo "=== test-cluster: the local cluster did not come up; skipping the remaining steps"
  exit 1
fi
# With a warm pool of one, so the client's warm-pool tests run against a pool the role made.
step "deploy (site.yml, inventories/local, warm pool of 1)" \
  ansible-playbook -i inventories/local site.yml -e warm_pool_enabled=true -e warm_pool_replicas=1
step "integration (faults, pods/exec switch)" pytest -q -p no:cacheprovider -m cluster tests/integration
if [ -d executor/tests/client ]; then
  step "client cluster tests" pytest -q -p no:cacheprovider -m cluster executor/tests/client
fi

if [ "${#failed[@]}" -gt 0 ]; then
  printf '=== test-cluster: FAILED: %s\n' "${failed[@]}"
  exit 1
fi
echo "=== test-cluster: all steps passed"
