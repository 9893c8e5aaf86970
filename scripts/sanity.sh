#!/usr/bin/env bash
# ansible-test sanity on this checkout (working tree, tracked and new files), offline.
# ansible-test needs the tree at ansible_collections/<namespace>/<name> and the collections it
# refers to beside it (kubernetes.core's doc fragments); it keeps its venvs and caches in
# $HOME/.ansible/test, here .cache/ansible-test-home. The copy is made outside any git work tree
# (inside one, ansible-test would list targets with git and find none).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
[ -x .venv/bin/ansible-test ] || scripts/bootstrap.sh
export PATH="$root/.venv/bin:$PATH"
home=$root/.cache/ansible-test-home
tree=$(mktemp -d)
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree/ansible_collections/pandasai/pod_sandbox" "$tree/ansible_collections/kubernetes" "$home"
git ls-files -z --cached --others --exclude-standard \
  | while IFS= read -r -d '' f; do [ -e "$f" ] && [ ! -d "$f" ] && printf '%s\0' "$f"; done \
  | tar --null -T - -c | tar -x -C "$tree/ansible_collections/pandasai/pod_sandbox"
site=$(python -c 'import ansible_test, os; print(os.path.dirname(os.path.dirname(ansible_test.__file__)))')
ln -sfn "$site/ansible_collections/kubernetes/core" "$tree/ansible_collections/kubernetes/core"
# The pip bootstrap script ansible-test would download, under the name it looks for.
pip_version=$(sed -n "s/^ *pip='\([0-9.]*\)',$/\1/p" \
  "$site/ansible_test/_internal/python_requirements.py")
mkdir -p "$home/.ansible/test/cache"
cp tests/sanity/get_pip_offline.py "$home/.ansible/test/cache/get_pip_${pip_version//./_}.py"
cd "$tree/ansible_collections/pandasai/pod_sandbox"
HOME=$home ansible-test sanity --local --python 3.11 --color no "$@"
