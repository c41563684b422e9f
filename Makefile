# lockstep: the two commands of the README, and a few more.
#   make run    set up, build, start the reflector on ws://127.0.0.1:9090 (data in ./data)
#   make test   set up, build, run every test (unit, integration, compatibility)
#   make bench  set up, build, run the benchmarks (rewrites docs/performance.md)
#   make test-asan, make fuzz: the same tests under sanitizers; every fuzz target (60 s each)
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PORT ?= 9090

.PHONY: all setup build run test test-asan bench fuzz clean compat-deps

all: build

setup:
	@bash scripts/setup.sh

build: setup
	@cmake --preset release >/dev/null
	@cmake --build --preset release -j $(JOBS)

run: build
	./build/bin/lockstep-reflector --bind 127.0.0.1 --port $(PORT) --data-dir ./data

compat-deps: setup
	@bash scripts/compat-deps.sh

test: build compat-deps
	ctest --preset release -j 1

# Every test against an ASan+UBSan (Debug) build in build-asan/, real clients included.
test-asan: setup compat-deps
	@cmake --preset asan >/dev/null
	@cmake --build --preset asan -j $(JOBS)
	ctest --preset asan -j 1

fuzz: setup
	bash scripts/fuzz.sh 60

bench: build
	@if [ -x scripts/bench.sh ]; then bash scripts/bench.sh; else echo "no benchmarks yet"; fi

clean:
	rm -rf build build-asan build-fuzz
