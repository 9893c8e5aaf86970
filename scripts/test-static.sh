#!/usr/bin/env bash
# The fast static stage (no cluster, no Docker): yamllint, ansible-lint (production profile,
# offline), then pytest tests/static: playbook syntax checks, the collection build, rendered
# manifests validated for Kubernetes 1.25..newest and scanned by checkov, the Prometheus rules,
# configuration and dashboard queries checked and unit-tested with promtool, bad settings
# rejected by the argument specs, helper unit tests. CI runs it first (make test-static).
# Extra arguments go to pytest, e.g. scripts/test-static.sh -k manifests.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
[ -x .venv/bin/python ] || scripts/bootstrap.sh
export PATH="$root/.venv/bin:$PATH"
export ANSIBLE_CONFIG="$root/ansible.cfg"
export ANSIBLE_NOCOLOR=1 PY_COLORS=0

step() { printf '\n== static: %s\n' "$*"; }
start=$(date +%s)

# checkov lives in its own venv: its pins (packaging, numpy, ...) conflict with .venv.
checkov_req=tests/static/requirements-checkov.txt
checkov_stamp=.venv-checkov/.stamp
checkov_want=$(sha256sum "$checkov_req" | cut -c1-16)
if [ ! -x .venv-checkov/bin/checkov ] || [ "$(cat "$checkov_stamp" 2>/dev/null)" != "$checkov_want" ]; then
  step "making .venv-checkov"
  python=${PYTHON:-python3.11}
  command -v "$python" >/dev/null 2>&1 || python=python3
  "$python" -m venv .venv-checkov
  .venv-checkov/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  .venv-checkov/bin/python -m pip install -q -r "$checkov_req" 2>&1 | grep -v '^WARNING: Location' || true
  .venv-checkov/bin/checkov --version >/dev/null
  echo "$checkov_want" > "$checkov_stamp"
fi

# promtool (rule unit tests, config checks) from Debian's prometheus package: the package is
# downloaded and unpacked into .cache (no daemon installed or started, no root needed).
promtool_dir=.cache/prometheus-deb
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$promtool_dir/usr/bin/promtool" ]; then
  step "unpacking promtool from Debian's prometheus package"
  rm -rf "$promtool_dir" && mkdir -p "$promtool_dir"
  if ! (cd "$promtool_dir" && apt-get download -q prometheus >/dev/null && dpkg-deb -x prometheus_*.deb .); then
    [ "$(id -u)" = 0 ] && apt-get update -q >/dev/null && (cd "$promtool_dir" && apt-get download -q prometheus >/dev/null && dpkg-deb -x prometheus_*.deb .)
  fi
fi
[ -x "$promtool_dir/usr/bin/promtool" ] && export PATH="$root/$promtool_dir/usr/bin:$PATH"

# Every step runs even when an earlier one fails, so one run shows everything to fix.
failed=()
run_step() {
  local label=$1; shift
  step "$label"
  if ! "$@"; then failed+=("$label"); fi
}
run_step "yamllint" yamllint --strict .
run_step "ansible-lint (production profile, offline)" ansible-lint --offline --profile production
run_step "ruff (syntax errors, undefined names, unused imports)" \
  ruff check --select E9,F plugins executor tests bench molecule
run_step "mypy (executor package and module_utils)" \
  mypy --ignore-missing-imports executor/src/pod_sandbox plugins/module_utils
run_step "pytest tests/static" pytest -q -p no:cacheprovider tests/static "$@"

elapsed=$(( $(date +%s) - start ))
if [ ${#failed[@]} -gt 0 ]; then
  printf '\n== static: FAILED after %ss: %s\n' "$elapsed" "$(IFS=,; echo "${failed[*]}")"
  exit 1
fi
printf '\n== static: all green in %ss\n' "$elapsed"
