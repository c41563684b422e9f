#!/usr/bin/env bash
# Builds the fuzz targets with clang + libFuzzer + ASan/UBSan into build-fuzz/ and runs
# each for N seconds (default 60): the codec/session target on build-fuzz/corpus, the
# journal reader on build-fuzz/corpus-journal.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
bash scripts/setup.sh
if ! command -v clang++ >/dev/null; then
  apt-get install -y -qq clang libclang-rt-14-dev >/dev/null
fi
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DLOCKSTEP_FUZZ=ON -DLOCKSTEP_TESTS=OFF -DLOCKSTEP_BENCH=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target lockstep-codec-fuzz lockstep-journal-fuzz
mkdir -p build-fuzz/corpus
for s in '{"action":"SEND","args":[1,0,"payload",3],"tags":{"debounce":5000,"msgID":"x"}}' \
         '{"action":"JOIN","args":{"version":1,"apiKey":"x","user":"v","ticks":{"tick":50,"delay":10}}}' \
         '{"action":"TUTTI","args":[10,0,"p",[10,0,"f"],true,["t"],"k"]}' \
         '{"action":"SNAP","args":{"time":5,"seq":4294967290,"url":"u"}}' \
         '{"action":"PING","args":{"a":[1,2,{"b":null}]}}'; do
  printf '%s' "$s" > "build-fuzz/corpus/$(printf '%s' "$s" | md5sum | cut -c1-12)"
done
./build-fuzz/bin/lockstep-codec-fuzz -max_total_time="$secs" -max_len=4096 build-fuzz/corpus
# Journal seeds: the first byte picks the mode (see tests/fuzz/journal_fuzz.cpp). Mode 2
# frames (type, length, payload) triples: a header, two events, a base, a seen record.
mkdir -p build-fuzz/corpus-journal
byte() { printf "\\$(printf '%03o' "$1")"; }
record() { local p; p=$(printf '%b' "$2"); byte "$1"; byte "$(printf '%s' "$p" | wc -c)"; printf '%s' "$p"; }
{
  byte 2
  record 1 '{"id":"F","name":"","appId":"","persistentId":"","timeline":"t","tick":100,"delay":0,"scale":1,"tove":"","flags":"{}","snapshotUrl":"","snapshotTime":"","snapshotSeq":0,"persistedUrl":"","time":0,"seq":4294967282}'
  record 2 '\xf1\xff\xff\xff[5,4294967281,"a",0]'
  record 2 '\xf2\xff\xff\xff[9,4294967282,{"what":"users","joined":["u"]}]'
  record 4 ''
  record 3 '\x10\x27\x01\x01\x01\x01\x01\x01'
} > build-fuzz/corpus-journal/framed
{ byte 1; byte 4; byte 0; byte 0; byte 0; byte 0; } > build-fuzz/corpus-journal/after-header
./build-fuzz/bin/lockstep-journal-fuzz -max_total_time="$secs" -max_len=4096 build-fuzz/corpus-journal
