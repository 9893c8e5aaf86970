#!/usr/bin/env bash
# Remove everything deploy.sh made: the sandbox objects (playbooks/teardown.yml), then the local
# cluster's processes (stopped by PID file; kubelet's containers removed and its mounts
# unmounted). The build cache in /var/cache/pandasai-pod-sandbox stays, so the next deploy is
# fast. POD_SANDBOX_PURGE=1 also deletes etcd's data and kubelet's directory.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/ansible-playbook ] || scripts/bootstrap.sh
export PATH="$PWD/.venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/ansible.cfg"
cache=${POD_SANDBOX_CACHE_DIR:-/var/cache/pandasai-pod-sandbox}
purge=false
[ "${POD_SANDBOX_PURGE:-0}" = 1 ] && purge=true
if [ -s "$cache/run/kube-apiserver.pid" ] && kill -0 "$(cat "$cache/run/kube-apiserver.pid")" 2>/dev/null; then
  ansible-playbook -i inventories/local playbooks/teardown.yml -e "cluster_prep_local_cache_dir=$cache" \
    -e pod_sandbox_teardown_cluster=true -e "cluster_prep_local_teardown_purge=$purge" "$@"
else
  echo "teardown: the local API server is not running; stopping whatever processes are left"
  ansible-playbook -i inventories/local playbooks/teardown.yml --tags cluster -e "cluster_prep_local_cache_dir=$cache" \
    -e pod_sandbox_teardown_cluster=true -e "cluster_prep_local_teardown_purge=$purge" "$@"
fi
