#!/usr/bin/env bash
# Every program prints "NAME VERSION" for --version, exits 0, and VERSION is the one in
# project() of CMakeLists.txt (the version CHANGELOG.md has a section for).
# Usage: version.sh SOURCE_DIR BINARY...
set -euo pipefail
src=$1; shift
want=$(sed -n 's/^project(lockstep VERSION \([0-9]*\.[0-9]*\.[0-9]*\) .*/\1/p' "$src/CMakeLists.txt")
[[ $want =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "no semantic version in project()"; exit 1; }
grep -q "^## \[$want\]" "$src/CHANGELOG.md" || { echo "CHANGELOG.md has no section for $want"; exit 1; }
for bin in "$@"; do
  got=$("$bin" --version)
  if [ "$got" != "$(basename "$bin") $want" ]; then
    echo "$bin --version printed '$got', want '$(basename "$bin") $want'"; exit 1
  fi
  # --help mentions --version.
  help=$("$bin" --help)
  grep -q -- --version <<<"$help" || { echo "$bin --help does not list --version"; exit 1; }
done
echo "ok: $# programs print $want"
