#!/usr/bin/env bash
# Builds every libFuzzer target with clang + ASan/UBSan into build-fuzz/ and runs each for
# N seconds (default 60), one after the other, each on its own corpus in
# build-fuzz/corpus/<target> seeded with a few valid inputs. A crash, a sanitizer report
# or a failed oracle check (the targets abort) fails the script; the reproducer is left
# in build-fuzz/ (crash-*).
#   codec  JSON scanner vs nlohmann (both directions), client frames, SEND -> RECV
#   paths  /v1 path segments and /files blob paths vs a reference implementation
#   join   JOIN arguments vs the documented rules
#   journal  the session journal readers: raw segment files, after a valid header, framed records;
#            write-ahead log files, raw and as framed entries
#   token  credential extraction, redaction, the gate, JWT verification (src/auth/)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
bash scripts/setup.sh
if ! command -v clang++ >/dev/null || ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get install -y -qq clang libclang-rt-14-dev >/dev/null
fi
targets=(codec paths join journal token)
# FUZZ_TARGETS="codec join" runs only those (all are still built).
if [ -n "${FUZZ_TARGETS:-}" ]; then read -r -a targets <<<"$FUZZ_TARGETS"; fi
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DLOCKSTEP_FUZZ=ON -DLOCKSTEP_TESTS=OFF -DLOCKSTEP_BENCH=OFF -DLOCKSTEP_EXAMPLES=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target lockstep-codec-fuzz lockstep-paths-fuzz lockstep-join-fuzz lockstep-journal-fuzz lockstep-token-fuzz
seed() {  # seed <target> <input>...
  local dir=build-fuzz/corpus/$1
  shift
  mkdir -p "$dir"
  for s in "$@"; do printf '%s' "$s" > "$dir/seed-$(printf '%s' "$s" | md5sum | cut -c1-12)"; done
}
seed codec '{"action":"SEND","args":[1,0,"payload",3],"tags":{"debounce":5000,"msgID":"x"}}' \
  '{"action":"JOIN","args":{"version":1,"apiKey":"x","user":"v","ticks":{"tick":50,"delay":10}}}' \
  '{"action":"TUTTI","args":[10,0,"p",[10,0,"f"],true,["t"],"k"]}' \
  '{"action":"SNAP","args":{"time":5,"seq":4294967290,"url":"u"}}' \
  '{"action":"PING","args":{"a":[1,2,{"b":null}],"s":"\u00e9\ud83d\ude00 \"q\"","n":-1.5e-3}}'
seed paths 'rooms/lobby/join' 'apps/a%2Fb/snap.json?x=1' 'x/y/.lockstep-1.tmp' 'a/../b' '%zz' 'sessions/abc/'
seed token '/t/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln/sess' \
  '/files/t/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln/apps/a/b?token=x' \
  'Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln' \
  '{"sub":"u","app":"io.*","sessions":["r-*"],"scope":"files"}' \
  '/v1/rooms/r/join?a=1&token=abc' '/r/0123456789abcdef/S'
seed join '{"version":1,"apiKey":"x","user":["v",1],"ticks":{"tick":50,"delay":10,"scale":2},"tove":{"a":1}}' \
  '{"version":0,"apiKey":"x"}' '{"version":"1","leaveDelay":100,"flags":{"rawtime":1}}' '[1]'
# Journal seeds: the first byte picks the mode (tests/fuzz/journal_fuzz.cpp). Mode 2 frames
# (type, length, payload) triples: a header, two events, a base, a seen record.
byte() { printf "\\$(printf '%03o' "$1")"; }
record() { local p; p=$(printf '%b' "$2"); byte "$1"; byte "$(printf '%s' "$p" | wc -c)"; printf '%s' "$p"; }
mkdir -p build-fuzz/corpus/journal
{
  byte 2
  record 1 '{"id":"F","name":"","appId":"","persistentId":"","timeline":"t","tick":100,"delay":0,"scale":1,"tove":"","flags":"{}","snapshotUrl":"","snapshotTime":"","snapshotSeq":0,"persistedUrl":"","time":0,"seq":4294967282}'
  record 2 '\xf1\xff\xff\xff[5,4294967281,"a",0]'
  record 2 '\xf2\xff\xff\xff[9,4294967282,{"what":"users","joined":["u"]}]'
  record 4 ''
  record 3 '\x10\x27\x01\x01\x01\x01\x01\x01'
} > build-fuzz/corpus/journal/seed-framed
{ byte 1; byte 4; byte 0; byte 0; byte 0; byte 0; } > build-fuzz/corpus/journal/seed-after-header
# Mode 4 frames WAL entries (kind + generation, id length, data length, id, data).
{ byte 4; byte 6; byte 1; byte 5; printf 'Aabcde'; byte 5; byte 2; byte 3; printf 'B/xyz'; } \
  > build-fuzz/corpus/journal/seed-wal
for t in "${targets[@]}"; do
  echo "fuzz: $t for ${secs}s"
  log=build-fuzz/$t.log
  if ! ./build-fuzz/bin/lockstep-$t-fuzz -max_total_time="$secs" -max_len=4096 -print_final_stats=1 \
       -artifact_prefix=build-fuzz/"$t"- "build-fuzz/corpus/$t" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $t FAILED (reproducer: build-fuzz/$t-crash-*; log: $log)"
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" | sed "s/^/  $t /"
done
