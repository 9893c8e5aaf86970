#!/usr/bin/env bash
# Build the executor's native helpers, plain C against libc loaded through ctypes (no Python
# headers): src/pod_sandbox/executor/_heapfile.so from heapfile.c (see heapfile.py) and _spawn.so
# from spawn.c (see spawn.py). Runs where the image's wheel and the local venvs are made
# (scripts/bootstrap.sh, build-wheelhouse.sh); installs gcc from Debian's registry when it is
# missing. Without them the executor still works, with fork() copying the warm stack's page
# tables every time and spares set up in Python (slower, same behaviour).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=$here/src/pod_sandbox/executor
names=(heapfile spawn)
stale=()
for name in "${names[@]}"; do
  out=$dir/_$name.so
  if ! [ -f "$out" ] || ! [ "$out" -nt "$dir/$name.c" ] || ! [ "$out" -nt "$0" ]; then
    stale+=("$name")
  fi
done
[ ${#stale[@]} -gt 0 ] || exit 0
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
  echo "build-native: no C compiler; ${stale[*]/%/.c} not built (the executor falls back to Python)" >&2
  exit 0
fi
for name in "${stale[@]}"; do
  out=$dir/_$name.so
  tmp="$out.tmp.$$"
  "$cc" -O2 -Wall -Wextra -Werror -shared -fPIC -o "$tmp" "$dir/$name.c"
  mv -f "$tmp" "$out"
  echo "build-native: built $(basename "$out") with $cc"
done
