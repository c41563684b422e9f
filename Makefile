# lockstep: the two commands of the README, and a few more.
#   make run    install what the server needs, build it, start it on ws://127.0.0.1:9090
#               (data in ./data). BIND=0.0.0.0 serves other machines, PORT= another port.
#   make test   install the test toolchain, build everything, run every test (unit,
#               integration, real npm clients in Node and Chromium, packaging, deploy/)
#   make bench  run the benchmarks with progress; results in bench/results/latest.jsonl.
#               make bench-docs also rewrites the table in docs/performance.md from them.
#   make test-asan, make fuzz: the same tests under sanitizers; every fuzz target (60 s each)
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PORT ?= 9090
BIND ?= 127.0.0.1
# Everything (tests, benchmarks, examples) or the reflector alone (make run).
ALL_TARGETS = -DLOCKSTEP_TESTS=ON -DLOCKSTEP_BENCH=ON -DLOCKSTEP_EXAMPLES=ON
SERVER_ONLY = -DLOCKSTEP_TESTS=OFF -DLOCKSTEP_BENCH=OFF -DLOCKSTEP_EXAMPLES=OFF

.PHONY: web-deps all setup setup-runtime build build-server run test test-asan bench bench-docs fuzz clean compat-deps docs-options

all: build

setup-runtime:
	@bash scripts/setup.sh runtime

setup:
	@bash scripts/setup.sh test

build: setup
	@cmake --preset release $(ALL_TARGETS) >/dev/null
	@cmake --build --preset release -j $(JOBS)

build-server: setup-runtime
	@cmake --preset release $(SERVER_ONLY) >/dev/null
	@cmake --build --preset release -j $(JOBS) --target lockstep-reflector

# The demo page's client bundle (web/vendor/), from npm; skipped with a note without npm.
web-deps:
	@bash scripts/web-deps.sh

run: build-server web-deps
	./build/bin/lockstep-reflector --bind $(BIND) --port $(PORT) --data-dir ./data

compat-deps: setup
	@bash scripts/compat-deps.sh
	@bash scripts/web-deps.sh

# The tests labelled `parallel` (the real-client scenarios, which mostly wait, and the
# Dockerfile check at the lowest CPU priority; tests/CMakeLists.txt) three at a time, then
# the rest one at a time; both always run, and either failing fails the target.
test: build compat-deps
	@ctest --preset release -j 3 -L parallel; a=$$?; ctest --preset release -j 1 -LE parallel; b=$$?; \
	  test $$a -eq 0 -a $$b -eq 0

# Every test against an ASan+UBSan (Debug) build in build-asan/, real clients included.
test-asan: setup compat-deps
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan -j $(JOBS)
	@ctest --preset asan -j 3 -L parallel; a=$$?; ctest --preset asan -j 1 -LE parallel; b=$$?; \
	  test $$a -eq 0 -a $$b -eq 0

fuzz: setup
	bash scripts/fuzz.sh 60

bench: build
	@bash scripts/bench.sh

bench-docs: build
	@BENCH_DOCS=1 bash scripts/bench.sh

clean:
	rm -rf build build-asan build-fuzz

# Rewrites the option tables of docs/operations.md from the programs' definitions.
docs-options: build
	python3 tests/ops/options_doc.py --write docs/operations.md build/bin/lockstep-reflector \
	  build/bin/lockstep-bench build/bin/lockstep-counter build/bin/lockstep-chat
