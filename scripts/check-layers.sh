#!/usr/bin/env bash
# The layering rules of docs/architecture.md, checked over the #include lines of src/.
# Exits 1 and names every offending line when a rule is broken.
#
#   scripts/check-layers.sh [SRC_DIR]     check (default: the src/ next to this script)
#   scripts/check-layers.sh --self-test   break each rule in a scratch copy and make sure
#                                         the check notices (the check itself is tested)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

check() {
    local src="$1" bad=0
    # rule FOLDER REGEX MESSAGE: no #include line in FOLDER may match REGEX.
    rule() {
        local dir="$src/$1" re="$2" msg="$3" hits
        [ -d "$dir" ] || return 0
        hits="$(grep -rnE --include='*.hpp' --include='*.cpp' --include='*.hpp.in' "^[[:space:]]*#[[:space:]]*include[[:space:]]*[<\"]($re)" "$dir" || true)"
        if [ -n "$hits" ]; then
            echo "layering: $msg" >&2
            echo "${hits//$src\//src/}" | sed 's/^/  /' >&2
            bad=1
        fi
    }
    local runtime='server/|http/|store/|router/|directory/|client/|boost/|hiredis/'
    rule reflector "$runtime|auth/|limits/|tls/" "src/reflector/ is the core: no runtime, store, router, access control, Boost or hiredis"
    rule protocol "$runtime|reflector/" "src/protocol/ depends on nothing but common/"
    rule common "server/|http/|store/|router/|directory/|client/|reflector/|protocol/|hiredis/" \
        "src/common/ has no project dependencies"
    rule store "server/|http/|router/|directory/|client/|reflector/(session|dispatch)" \
        "src/store/ sees only the reflector's ports (reflector/ports.hpp)"
    rule router "server/|http/|store/|client/|reflector/(session|dispatch)" \
        "src/router/ sees only the reflector's ports"
    rule directory "server/|http/|store/|client/|reflector/(session|dispatch)" \
        "src/directory/ sees only the router's interface and the reflector's ports"
    rule http "server/|directory/|client/" "src/http/ reaches the server only through http/service.hpp"
    # One entry point into a worker: nothing but worker::defer posts into its io_context.
    local posts
    posts="$(grep -rnE '(post|dispatch)\(([^,()]*[.>])?ioc\b' "$src/server" "$src/http" 2>/dev/null |
             grep -v 'server/internal.hpp:.*net::post(ioc, std::forward<F>(f))' || true)"
    if [ -n "$posts" ]; then
        echo "layering: only worker::defer() posts into a worker's io_context" >&2
        echo "${posts//$src\//src/}" | sed 's/^/  /' >&2
        bad=1
    fi
    return $bad
}

if [ "${1:-}" = "--self-test" ]; then
    src="$here/../src"
    check "$src" || { echo "self-test: the tree itself breaks a rule" >&2; exit 1; }
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    n=0
    for case in "reflector/session.cpp|#include \"server/metrics.hpp\"" \
                "reflector/session.hpp|#include <boost/asio.hpp>" \
                "protocol/codec.cpp|#include <hiredis/hiredis.h>" \
                "store/file_store.hpp|#include \"reflector/session.hpp\"" \
                "http/routes.cpp|#include \"server/internal.hpp\"" \
                "router/memory_directory.cpp|#include \"store/file_store.hpp\"" \
                "server/connection.cpp|void f(worker& w) { net::post(w.ioc, [] {}); }"; do
        rm -rf "$scratch/src" && cp -r "$src" "$scratch/src"
        file="${case%%|*}" line="${case#*|}"
        echo "$line" >> "$scratch/src/$file"
        if check "$scratch/src" 2>/dev/null; then
            echo "self-test: '$line' in src/$file was not caught" >&2
            exit 1
        fi
        n=$((n + 1))
    done
    echo "layering self-test: $n violations caught"
    exit 0
fi

check "${1:-$here/../src}"
echo "layering: ok"
