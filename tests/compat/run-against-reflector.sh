#!/usr/bin/env bash
# Starts build/bin/lockstep-reflector on a free loopback port with a fresh data dir,
# runs the real-client compatibility tests against its WebSocket and /files endpoints
# (box layout: ws://HOST:PORT/reflector + http://HOST:PORT/files), then stops it.
# Usage: run-against-reflector.sh <path to lockstep-reflector> [--auth|--tls]
# --tls: the reflector serves TLS itself (--tls-cert/--tls-key, a certificate made here
# for IP:127.0.0.1); the clients use wss:// and https:// and trust it through
# NODE_EXTRA_CA_CERTS.
# --auth: the reflector requires JWTs (--auth-secret, from the environment) and an admin
# token; the clients carry tokens in their URLs (ws://H:P/reflector/t/<jwt>,
# http://H:P/files/t/<jwt>), the router API calls send a Bearer token, and the
# reflector's log must not contain any of the tokens.
set -euo pipefail
bin=${1:?path to lockstep-reflector}
mode=${2:-}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ "$mode" = "--auth" ]; then
  LOCKSTEP_AUTH_SECRET=$(head -c 32 /dev/urandom | base64)
  LOCKSTEP_ADMIN_TOKEN=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
  export LOCKSTEP_AUTH_SECRET LOCKSTEP_ADMIN_TOKEN
fi
tls_args=()
scheme=ws
hscheme=http
if [ "$mode" = "--tls" ]; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=lockstep-compat -keyout "$work/key.pem" \
    -out "$work/cert.pem" -addext subjectAltName=IP:127.0.0.1 >/dev/null 2>&1
  tls_args=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem")
  scheme=wss
  hscheme=https
  export NODE_EXTRA_CA_CERTS="$work/cert.pem"
fi
"$bin" --bind 127.0.0.1 --port 0 --data-dir "$work/data" --drain-timeout-ms 500 "${tls_args[@]}" \
  >"$work/reflector.log" 2>&1 &
pid=$!
port=""
for _ in $(seq 1 100); do
  port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/reflector.log" | head -n1)
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/reflector.log"; echo "reflector exited"; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { cat "$work/reflector.log"; echo "reflector did not report its port"; exit 1; }
echo "reflector on port $port (log: $work/reflector.log)"

# The full matrix always runs here: variables that would narrow it (COMPAT_LIBS,
# COMPAT_SCENARIOS) are removed, and the TAP summary must show every case passed.
# 1 preflight + 2 libraries x 4 scenarios (replay, snapshot, router, bigsync).
expected=9
status=0
if [ "$mode" = "--auth" ]; then
  # Without a token the reflector refuses: the mode is really on.
  code=$(node -e 'fetch(process.argv[1]).then(r => console.log(r.status))' "http://127.0.0.1:$port/files/x/y")
  [ "$code" = 401 ] || { echo "expected 401 without a token, got $code"; exit 1; }
  ws_token=$(node "$here/mint-token.mjs" '{"sub":"compat","scope":"reflector"}')
  files_token=$(node "$here/mint-token.mjs" '{"sub":"compat","scope":"files"}')
  api_token=$(node "$here/mint-token.mjs" '{"scope":"api"}')
  LOCKSTEP_URL="ws://127.0.0.1:$port/reflector/t/$ws_token" LOCKSTEP_FILES="http://127.0.0.1:$port/files/t/$files_token" \
    LOCKSTEP_API_TOKEN="$api_token" COMPAT_LIBS=${COMPAT_LIBS:-multisynq} \
    COMPAT_LOG_DIR="$work/clients" node --test "$here/run-compat.mjs" || status=$?
  for t in "$ws_token" "$files_token" "$api_token"; do
    if grep -qF "${t##*.}" "$work/reflector.log"; then
      echo "a token's signature appears in the reflector log"; status=1
    fi
  done
  unset LOCKSTEP_AUTH_SECRET LOCKSTEP_ADMIN_TOKEN
elif [ "$mode" = "--tls" ]; then
  LOCKSTEP_URL="wss://127.0.0.1:$port/reflector" LOCKSTEP_FILES="https://127.0.0.1:$port/files" \
    COMPAT_LIBS=${COMPAT_LIBS:-multisynq} COMPAT_LOG_DIR="$work/clients" node --test "$here/run-compat.mjs" || status=$?
else
  env -u COMPAT_LIBS -u COMPAT_SCENARIOS \
    LOCKSTEP_URL="ws://127.0.0.1:$port/reflector" LOCKSTEP_FILES="http://127.0.0.1:$port/files" \
    COMPAT_LOG_DIR="$work/clients" node --test \
    --test-reporter=spec --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$work/results.tap" \
    "$here/run-compat.mjs" || status=$?
  count() { sed -n "s/^# $1 \([0-9]*\)\$/\1/p" "$work/results.tap" | tail -n1; }
  ran=$(count tests); passed=$(count pass)
  echo "compat: $ran cases ran, $passed passed (expected $expected)"
  if [ "$ran" != "$expected" ] || [ "$passed" != "$expected" ]; then
    echo "compat: expected exactly $expected cases to run and pass"
    [ "$status" -ne 0 ] || status=1
  fi
fi
# The reflector must drain and exit cleanly (under sanitizers this also catches leaks).
kill -TERM "$pid" 2>/dev/null || true
rstatus=0
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
  echo "reflector did not exit within 10 s of SIGTERM"; rstatus=1
else
  wait "$pid" || rstatus=$?
fi
pid=""
if [ "$rstatus" -ne 0 ]; then
  echo "reflector exited with status $rstatus"
  [ "$status" -ne 0 ] || status=$rstatus
fi
if [ "$status" -ne 0 ]; then
  echo "---- reflector log (last 80 lines) ----"; tail -n 80 "$work/reflector.log"
  for f in "$work"/clients/*; do [ -f "$f" ] && { echo "---- $f (last 30 lines) ----"; tail -n 30 "$f"; }; done
fi
exit "$status"
