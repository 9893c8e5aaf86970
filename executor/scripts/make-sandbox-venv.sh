#!/usr/bin/env bash
# Make .venv-sandbox: a venv on the system Python that the unprivileged sandbox uid (10001) can
# execute, so tests run the executor as non-root like the pod does (root's pyenv is mode 700).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.venv-sandbox
python=${SANDBOX_VENV_PYTHON:-/usr/bin/python3.11}
[ -x "$python" ] || python=/usr/bin/python3
want=$( (cat executor/pyproject.toml; "$python" --version) | sha256sum | cut -c1-16)
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "make-sandbox-venv: creating $venv with $($python --version)"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e "executor[server]"
chmod -R go+rX "$venv"
echo "$want" > "$venv/.stamp"
