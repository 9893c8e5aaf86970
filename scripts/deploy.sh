#!/usr/bin/env bash
# Deploy the PandasAI pod sandbox to the local single-node cluster and say how to reach it:
# site.yml on inventories/local brings the cluster up (first run on a fresh machine: Debian
# packages and a Go build of about 7 minutes; later runs about 30 s or less), builds the
# executor image, applies every step and runs the guide's verification. Extra arguments go to
# ansible-playbook (e.g. --tags template, -e warm_pool_enabled=true).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/ansible-playbook ] || scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg"
if [ "$(id -u)" != 0 ]; then
  echo "deploy: the local cluster (Docker, etcd, kubelet) needs root; run as root or use your own inventory:" >&2
  echo "  ansible-playbook -i <your inventory> site.yml" >&2
  exit 1
fi
cache=${POD_SANDBOX_CACHE_DIR:-/var/cache/pandasai-pod-sandbox}
namespace=${POD_SANDBOX_NAMESPACE:-pandasai-sandbox}
ansible-playbook -i inventories/local site.yml \
  -e "cluster_prep_local_cache_dir=$cache" -e "pod_sandbox_namespace=$namespace" "$@"

cat <<MSG

The PandasAI pod sandbox is deployed on the local cluster (Kubernetes 1.20, node localhost).

  export KUBECONFIG=$cache/kubeconfig
  $cache/bin/kubectl -n $namespace get configmap,resourcequota,pods

A sandbox session from Python (PandasAI 3), with this checkout's venv:

  .venv/bin/python - <<'PY'
  from pod_sandbox.client import KubernetesSandbox
  with KubernetesSandbox(namespace="$namespace", kubeconfig="$cache/kubeconfig") as sandbox:
      print(sandbox.execute("result = {'type': 'number', 'value': 6 * 7}", {}))
  PY

or with an Agent: KubernetesSandbox(...) passed as Agent(df, sandbox=sandbox).
Tear down: make teardown (objects and the cluster's processes; the build cache stays).
MSG
