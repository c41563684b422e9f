#!/usr/bin/env bash
# Puts the real, unmodified @multisynq/client browser bundle where the demo page loads
# it (web/vendor/multisynq-client.min.js, served by the reflector at /vendor/...), so the
# page needs no internet. The version is the one pinned for the compatibility tests
# (tests/compat/package-lock.json). Taken from tests/compat/node_modules when the tests'
# packages are installed, else from the package tarball alone (`npm pack`, no
# dependencies). Without npm the reflector still runs; the demo page says what is missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dest="$root/web/vendor/multisynq-client.min.js"
version=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["packages"]["node_modules/@multisynq/client"]["version"])' \
  "$root/tests/compat/package-lock.json")
stamp="$root/web/vendor/.version"
if [ -s "$dest" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$version" ]; then
  exit 0
fi
from="$root/tests/compat/node_modules/@multisynq/client"
if [ -f "$from/bundled/multisynq-client.min.js" ] &&
   [ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$from/package.json")" = "$version" ]; then
  cp "$from/bundled/multisynq-client.min.js" "$dest.tmp"
elif command -v npm >/dev/null 2>&1; then
  echo "web: fetching @multisynq/client@$version (npm pack) for the demo page"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if ! (cd "$tmp" && npm pack --silent --ignore-scripts "@multisynq/client@$version" >/dev/null); then
    echo "web: npm pack @multisynq/client@$version failed: the demo page at / will say the bundle is missing" >&2
    exit 0
  fi
  tar -xzf "$tmp"/multisynq-client-"$version".tgz -C "$tmp" package/bundled/multisynq-client.min.js
  cp "$tmp/package/bundled/multisynq-client.min.js" "$dest.tmp"
else
  echo "web: npm not found: the demo page at / needs web/vendor/multisynq-client.min.js (install nodejs npm, then make web-deps)" >&2
  exit 0
fi
mv "$dest.tmp" "$dest"
echo "$version" > "$stamp"
