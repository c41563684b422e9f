#!/usr/bin/env bash
# Installs the SDK from a build tree into a temporary prefix, then builds against it with
# find_package(lockstep): (1) the consumer project here, which it runs; (2) the tutorial
# of docs/sdk.md, taken from the document itself (the CMakeLists.txt of section 2.3 and
# the code of sections 3.2 and 3.3), so the tutorial cannot drift from the SDK.
set -euo pipefail
build=$1
here=$(cd "$(dirname "$0")" && pwd)
doc="$here/../../docs/sdk.md"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
# A sanitizer build installs sanitized libraries: its consumers need the runtime too.
if grep -q '^LOCKSTEP_SANITIZE:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
  launcher+=(-DCMAKE_CXX_FLAGS="-fsanitize=address,undefined" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined")
fi
configure_and_build() {  # source dir, build dir
  cmake -S "$1" -B "$2" -DCMAKE_PREFIX_PATH="$tmp/prefix" -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" >/dev/null
  cmake --build "$2" -j 2 >/dev/null
}

configure_and_build "$here" "$tmp/consumer"
"$tmp/consumer/consumer"

mkdir -p "$tmp/tutorial"
# The n-th fenced block of a language between two headings of the document.
block() {  # lang, from-heading, to-heading
  awk -v lang="$1" -v from="$2" -v to="$3" '
    index($0, from) == 1 { on = 1; next }
    on && index($0, to) == 1 { exit }
    on && $0 == "```" lang { inb = 1; next }
    inb && $0 == "```" { inb = 0; next }
    inb { print }' "$doc"
}
block cmake "### 2.3" "As a subdirectory" > "$tmp/tutorial/CMakeLists.txt"
block cpp "### 3.2" "### 3.4" > "$tmp/tutorial/main.cpp"
grep -q "find_package(lockstep" "$tmp/tutorial/CMakeLists.txt" || { echo "no CMakeLists.txt in docs/sdk.md 2.3"; exit 1; }
grep -q "int$" "$tmp/tutorial/main.cpp" && grep -q "class counter" "$tmp/tutorial/main.cpp" ||
  { echo "tutorial code not found in docs/sdk.md 3.2-3.3"; exit 1; }
configure_and_build "$tmp/tutorial" "$tmp/tutorial/build"
test -x "$tmp/tutorial/build/hello"
echo "docs/sdk.md tutorial builds against the installed package"
