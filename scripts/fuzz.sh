#!/usr/bin/env bash
# Builds the fuzz targets with clang + libFuzzer + ASan/UBSan into build-fuzz/ and runs
# each for N seconds (default 60): the codec/session target on build-fuzz/corpus, the
# token target (src/auth/) on build-fuzz/token-corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
bash scripts/setup.sh
if ! command -v clang++ >/dev/null; then
  apt-get install -y -qq clang libclang-rt-14-dev >/dev/null
fi
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DLOCKSTEP_FUZZ=ON -DLOCKSTEP_TESTS=OFF -DLOCKSTEP_BENCH=OFF >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target lockstep-codec-fuzz lockstep-token-fuzz
mkdir -p build-fuzz/corpus
for s in '{"action":"SEND","args":[1,0,"payload",3],"tags":{"debounce":5000,"msgID":"x"}}' \
         '{"action":"JOIN","args":{"version":1,"apiKey":"x","user":"v","ticks":{"tick":50,"delay":10}}}' \
         '{"action":"TUTTI","args":[10,0,"p",[10,0,"f"],true,["t"],"k"]}' \
         '{"action":"SNAP","args":{"time":5,"seq":4294967290,"url":"u"}}' \
         '{"action":"PING","args":{"a":[1,2,{"b":null}]}}'; do
  printf '%s' "$s" > "build-fuzz/corpus/$(printf '%s' "$s" | md5sum | cut -c1-12)"
done
./build-fuzz/bin/lockstep-codec-fuzz -max_total_time="$secs" -max_len=4096 build-fuzz/corpus
mkdir -p build-fuzz/token-corpus
for s in '/t/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln/sess' \
         '/files/t/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln/apps/a/b?token=x' \
         'Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln' \
         '{"sub":"u","app":"io.*","sessions":["r-*"],"scope":"files"}' \
         '/v1/rooms/r/join?a=1&token=abc' '/r/0123456789abcdef/S'; do
  printf '%s' "$s" > "build-fuzz/token-corpus/$(printf '%s' "$s" | md5sum | cut -c1-12)"
done
./build-fuzz/bin/lockstep-token-fuzz -max_total_time="$secs" -max_len=2048 build-fuzz/token-corpus
