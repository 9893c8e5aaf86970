#!/usr/bin/env bash
# Build the executor's one native helper, src/pod_sandbox/executor/_heapfile.so, from heapfile.c
# (see heapfile.py): plain C against libc, loaded through ctypes, no Python headers. Runs where
# the image's wheel and the local venvs are made (scripts/bootstrap.sh, build-wheelhouse.sh);
# installs gcc from Debian's registry when it is missing. Without it the executor still works,
# with fork() copying the warm stack's page tables every time (slower, same behaviour).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
src=$here/src/pod_sandbox/executor/heapfile.c
out=$here/src/pod_sandbox/executor/_heapfile.so
if [ -f "$out" ] && [ "$out" -nt "$src" ] && [ "$out" -nt "$0" ]; then
  exit 0
fi
cc=${CC:-}
if [ -z "$cc" ]; then
  for candidate in cc gcc; do
    if command -v "$candidate" >/dev/null 2>&1; then cc=$candidate; break; fi
  done
fi
if [ -z "$cc" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "build-native: installing gcc (Debian packages gcc, libc6-dev)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcc libc6-dev >/dev/null || true
  command -v gcc >/dev/null 2>&1 && cc=gcc
fi
if [ -z "$cc" ]; then
  echo "build-native: no C compiler; $(basename "$out") not built (the executor falls back to plain fork)" >&2
  exit 0
fi
tmp="$out.tmp.$$"
"$cc" -O2 -Wall -Wextra -Werror -shared -fPIC -o "$tmp" "$src"
mv -f "$tmp" "$out"
echo "build-native: built $(basename "$out") with $cc"
