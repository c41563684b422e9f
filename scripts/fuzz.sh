#!/usr/bin/env bash
# Builds the codec/session fuzz target with clang + libFuzzer + ASan/UBSan into
# build-fuzz/ and runs it for N seconds (default 60) on a corpus in build-fuzz/corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
bash scripts/setup.sh
if ! command -v clang++ >/dev/null; then
  apt-get install -y -qq clang libclang-rt-14-dev >/dev/null
fi
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DLOCKSTEP_FUZZ=ON -DLOCKSTEP_TESTS=OFF -DLOCKSTEP_BENCH=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target lockstep-codec-fuzz
mkdir -p build-fuzz/corpus
for s in '{"action":"SEND","args":[1,0,"payload",3],"tags":{"debounce":5000,"msgID":"x"}}' \
         '{"action":"JOIN","args":{"version":1,"apiKey":"x","user":"v","ticks":{"tick":50,"delay":10}}}' \
         '{"action":"TUTTI","args":[10,0,"p",[10,0,"f"],true,["t"],"k"]}' \
         '{"action":"SNAP","args":{"time":5,"seq":4294967290,"url":"u"}}' \
         '{"action":"PING","args":{"a":[1,2,{"b":null}]}}'; do
  printf '%s' "$s" > "build-fuzz/corpus/$(printf '%s' "$s" | md5sum | cut -c1-12)"
done
./build-fuzz/bin/lockstep-codec-fuzz -max_total_time="$secs" -max_len=4096 build-fuzz/corpus
