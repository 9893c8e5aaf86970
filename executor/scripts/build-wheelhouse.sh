#!/usr/bin/env bash
# Resolve the executor image's wheels on the host into executor/wheelhouse, pinned with hashes, so
# `docker build --network none` installs them offline. Idempotent: does nothing when the wheelhouse
# already matches requirements-image.txt and requirements-build.txt.
#   WHEELHOUSE_DIR    output (default: executor/wheelhouse)
#   WHEELHOUSE_CACHE  download cache kept across runs (default: /var/cache/pandasai-pod-sandbox/wheelhouse)
#   PYTHON            interpreter whose pip downloads (default: the repo's .venv, else python3)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${WHEELHOUSE_DIR:-$here/wheelhouse}
cache=${WHEELHOUSE_CACHE:-/var/cache/pandasai-pod-sandbox/wheelhouse}
python=${PYTHON:-}
if [ -z "$python" ]; then
  if [ -x "$here/../.venv/bin/python" ]; then python=$here/../.venv/bin/python; else python=python3; fi
fi
reqs=("$here/requirements-image.txt" "$here/requirements-build.txt")
inputs=$(cat "${reqs[@]}" | sha256sum | cut -c1-16)
# The native helper goes into the image with the package source (see build-native.sh).
"$here/scripts/build-native.sh"
if [ -f "$out/SHA256SUMS" ] && [ "$(cat "$out/.inputs" 2>/dev/null)" = "$inputs" ]; then
  echo "build-wheelhouse: $out is up to date"
  exit 0
fi
mkdir -p "$cache"
for req in "${reqs[@]}"; do
  "$python" -m pip download --quiet --require-hashes --only-binary=:all: --no-deps \
    --python-version 3.11 --implementation cp --abi cp311 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -r "$req" -d "$cache"
done
tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
# Copy exactly the pinned wheels (the cache may hold other versions from older pins).
grep -hoE '^[A-Za-z0-9_.-]+==[^ \\]+' "${reqs[@]}" | while IFS='=' read -r name _ version; do
  stem=$(printf '%s' "$name" | tr '-' '_' | tr 'A-Z' 'a-z')
  found=$(find "$cache" -maxdepth 1 -iname "${stem}-${version}-*.whl" | head -n 1)
  if [ -z "$found" ]; then
    echo "build-wheelhouse: no wheel for $name==$version in $cache" >&2
    exit 1
  fi
  cp "$found" "$tmp/"
done
(cd "$tmp" && sha256sum -- *.whl > SHA256SUMS)
echo "$inputs" > "$tmp/.inputs"
rm -rf "$out"
mv "$tmp" "$out"
echo "build-wheelhouse: $(ls "$out"/*.whl | wc -l) wheels in $out"
