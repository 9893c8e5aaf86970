#!/usr/bin/env bash
# Make the project's tool environment on a fresh machine: .venv (Python 3.11) with Ansible,
# linters, test tools and the executor project; link this checkout as pandasai.pod_sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# One bootstrap at a time (make targets and parallel shells may call it together).
mkdir -p .cache
exec 9>.cache/bootstrap.lock
flock 9
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3

stamp=.venv/.bootstrap-stamp
want=$(cat requirements/*.txt executor/pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: creating .venv with $($python --version)"
  "$python" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  for req in requirements/*.txt; do
    .venv/bin/python -m pip install -q -r "$req"
  done
  if [ -f executor/pyproject.toml ]; then
    .venv/bin/python -m pip install -q -e "executor[server,client,test]"
  fi
  echo "$want" > "$stamp"
else
  echo "bootstrap: .venv is up to date"
fi
# The executor's native helper (installs gcc when missing; nothing to do when up to date).
executor/scripts/build-native.sh

# The collection as Ansible sees it: .collections/ansible_collections/pandasai/pod_sandbox -> here
mkdir -p .collections/ansible_collections/pandasai
ln -sfn "$root" .collections/ansible_collections/pandasai/pod_sandbox
