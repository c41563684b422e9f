#!/usr/bin/env bash
# Starts build/bin/lockstep-reflector on a free loopback port with a fresh data dir,
# runs the real-client compatibility tests against its WebSocket and /files endpoints
# (box layout: ws://HOST:PORT/reflector + http://HOST:PORT/files), then stops it.
# Usage: run-against-reflector.sh <path to lockstep-reflector>
set -euo pipefail
bin=${1:?path to lockstep-reflector}
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

"$bin" --bind 127.0.0.1 --port 0 --data-dir "$work/data" --drain-timeout-ms 500 >"$work/reflector.log" 2>&1 &
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
