#!/usr/bin/env bash
# Executor, client and collection-plugin tests that need no Kubernetes cluster: unit, HTTP against real executor
# processes, hostile code, load (SANDBOX_LOAD_N, default 10000) and schemathesis fuzz
# (SANDBOX_FUZZ_EXAMPLES per operation, default 60). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# As root, the executor under test runs as uid 10001 (like the pod) from a venv that uid can run.
if [ "$(id -u)" = 0 ]; then
  executor/scripts/make-sandbox-venv.sh
fi
export SANDBOX_LOAD_N=${SANDBOX_LOAD_N:-10000}
export SANDBOX_FUZZ_EXAMPLES=${SANDBOX_FUZZ_EXAMPLES:-60}
# The collection's own plugin tests (no cluster: the Kubernetes client is faked).
.venv/bin/pytest -q -p no:cacheprovider tests/unit
exec .venv/bin/pytest -q -p no:cacheprovider -m "not cluster" --durations=10 executor/tests "$@"
