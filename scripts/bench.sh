#!/usr/bin/env bash
# make bench: the scenario matrix of docs/performance.md, plus microbenchmarks.
# Reflector pinned to core 0 (--threads 1), load generator pinned to core 1.
# Every run prints one JSON line; all lines go to bench/results/latest.jsonl. Progress
# ([3/25] fanout --rate 15 ... ETA 4 min) goes to stderr.
#
# Environment: BENCH_QUICK=1 for a short smoke run (fewer steps, 3 s each);
# BENCH_DOCS=1 (make bench-docs) also rewrites the summary table in docs/performance.md.
# BENCH_COST_ONLY=1 runs only section 6 (paired cost runs); BENCH_COST_CONFIGS picks its
# configurations (default "journal nojournal auth cluster"; "journal" is the ratios' base).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bin
out=bench/results
mkdir -p "$out"
res="$out/latest.jsonl"
: >"$res"
quick=${BENCH_QUICK:-0}
secs=8; warm=2
[ "$quick" = 1 ] && { secs=3; warm=1; }
ulimit -n 65536 2>/dev/null || true

# The steps of each series (BENCH_QUICK=1: fewer), counted up front for the progress line.
rates_fanout="5 10 15 20 25 30 40"; rates_400c="25 37.5 50 60"; counts_ticks="1000 2000 5000 10000"
counts_busy="1000 1500 2000 3000 5000 10000"; rates_threads="20 30 40"
if [ "$quick" = 1 ]; then
  rates_fanout="10 20"; rates_400c="50"; counts_ticks="2000"; counts_busy="1500"; rates_threads="20"
fi
words() { echo $#; }
# Paired cost runs (section 6): configurations x rounds, alternating.
cost_rates=${BENCH_COST_RATES:-50 75}; cost_rounds=${BENCH_COST_ROUNDS:-3}
[ "$quick" = 1 ] && cost_rounds=1
cost_names=${BENCH_COST_CONFIGS:-journal nojournal auth cluster}
if [ -n "${BENCH_BASELINE_BIN:-}" ]; then
  cost_names="$cost_names before"
  case " $cost_names " in *" cluster "*) cost_names="$cost_names before-cluster" ;; esac
fi
cost_only=${BENCH_COST_ONLY:-0}
total=$(( 2 + $(words $rates_fanout) + 2 * $(words $rates_400c) + 1 + 1 + $(words $counts_ticks) \
          + $(words $counts_busy) + $(words $rates_threads) + 2 ))
[ "$cost_only" = 1 ] && total=0
total=$(( total + $(words $cost_names) * cost_rounds * $(words $cost_rates) ))
step_no=0; started=$(date +%s)
progress() {  # what this step runs
  step_no=$((step_no + 1))
  local eta="" done_steps=$((step_no - 1))
  if [ "$done_steps" -gt 0 ]; then
    local left=$(( ($(date +%s) - started) * (total - done_steps) / done_steps ))
    eta=" ETA $((left / 60)) min $((left % 60)) s"
  fi
  echo "[$step_no/$total] $*$eta" >&2
}

ncores=$(nproc)
pin_refl="taskset -c 0"; pin_gen="taskset -c 1"
if [ "$ncores" -lt 2 ]; then pin_refl=""; pin_gen=""; fi

refl_pid=""
refl_bin="$BIN/lockstep-reflector"
start_reflector() {  # $1 = threads, then extra reflector flags
  local log; log=$(mktemp)
  local n=$1; shift
  rm -rf "$out/data"
  $pin_refl "$refl_bin" --port 0 --threads "$n" --data-dir "$out/data" --log-level warn \
      --max-queue-bytes 67108864 "$@" >"$log" 2>&1 &
  refl_pid=$!
  # --log-level warn hides the "listening" line: find the port from /proc.
  port=""
  for _ in $(seq 1 100); do
    port=$(ss -ltnpH 2>/dev/null | awk -v p="pid=$refl_pid," '$0 ~ p {split($4,a,":"); print a[length(a)]; exit}')
    [ -n "$port" ] && break
    sleep 0.05
  done
  [ -n "$port" ] || { echo "reflector did not start"; cat "$log"; exit 1; }
}
stop_reflector() {
  [ -n "$refl_pid" ] && kill -KILL "$refl_pid" 2>/dev/null || true
  wait "$refl_pid" 2>/dev/null || true
  refl_pid=""
}
trap stop_reflector EXIT
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

url_prefix=""    # path segments in front of /reflector (a t/<jwt> pair)
extra_fields=""  # more JSON fields for run()'s line ("config":...,)
run() {  # scenario label, then lockstep-bench args
  local label=$1; shift
  local line
  progress "$label $*"
  line=$($pin_gen "$BIN/lockstep-bench" --url "ws://127.0.0.1:$port$url_prefix/reflector" --seconds "$secs" --warmup "$warm" "$@" 2>/dev/null | tail -n1) || true
  [ -n "$line" ] || line='{"errors":-1}'
  line="{\"scenario\":\"$label\",$extra_fields\"reflector_threads\":$threads,${line#\{}"
  echo "$line" | tee -a "$res"
}

if [ "$cost_only" != 1 ]; then
# 0. The machine: small loopback TCP writes per second from one core (no reflector).
for n in 1000 9000; do
  progress "loopback-probe $n sockets"
  $pin_gen "$BIN/lockstep-bench" --loopback-probe "$n" --probe-cpu 0 --seconds "$secs" \
    | sed 's/^{/{"scenario":"loopback-probe",/' | tee -a "$res"
done

# 1. Fan-out: sessions of 20 clients, 120-byte payloads, stepping the send rate.
threads=1
start_reflector 1
for r in $rates_fanout; do run fanout --sessions 50 --clients 1000 --rate "$r" --payload 120 --tps 20; done
stop_reflector

# 1b. The same deliveries from fewer, busier clients (400 in 20 sessions of 20; the JS
# client allows up to 60 events/s): more frames per connection per write.
start_reflector 1
for r in $rates_400c; do run fanout-400c --sessions 20 --clients 400 --rate "$r" --payload 120 --tps 20; done
stop_reflector

# 1c. The same without the session journal (--journal none): what durability costs
# (docs/durability.md; the journal's default fsync policy is on in 1b).
start_reflector 1 --journal none
for r in $rates_400c; do run fanout-400c-nojournal --sessions 20 --clients 400 --rate "$r" --payload 120 --tps 20; done
stop_reflector

# 2. Scale: 10,000 clients in 200 sessions of 50 at 20 ticks/s, one event per 5 s each.
start_reflector 1
run scale --sessions 200 --clients 10000 --rate 0.2 --payload 120 --tps 20 --join-timeout 120
stop_reflector

# 3. Memory: RSS per idle connection (10,000 joined, idle clients).
progress "memory: 10,000 idle clients"
start_reflector 1
sleep 0.5
base=$(rss_kb "$refl_pid")
$pin_gen "$BIN/lockstep-bench" --url "ws://127.0.0.1:$port/reflector" --sessions 200 --clients 10000 --rate 0 \
    --tps 1 --seconds 3 --warmup 1 --join-timeout 120 >/dev/null 2>&1 &
gen=$!
sleep 2.5
loaded=$(rss_kb "$refl_pid")
wait "$gen" || true
echo "{\"scenario\":\"memory\",\"reflector_threads\":1,\"clients\":10000,\"rss_empty_kb\":$base,\"rss_loaded_kb\":$loaded,\"bytes_per_connection\":$(( (loaded - base) * 1024 / 10000 ))}" | tee -a "$res"
stop_reflector

# 4. Ticks: lateness with many tick-driven sessions (events rare), stepping the load.
start_reflector 1
for n in $counts_ticks; do run ticks --sessions $((n / 50)) --clients "$n" --rate 0.2 --payload 120 --tps 20 --join-timeout 120; done
stop_reflector

# 4b. The same with busy-polling on both sides (reflector --busy-poll-us 2000, generator
# --busy-poll): neither thread sleeps, so the VM's wake-up delay leaves the figures.
start_reflector 1 --busy-poll-us 2000
for n in $counts_busy; do run ticks-busypoll --sessions $((n / 50)) --clients "$n" --rate 0.2 --payload 120 --tps 20 --join-timeout 120 --busy-poll; done
stop_reflector

# 5. Threads: fan-out with --threads 2 (reflector unpinned: it shares the cores with the generator).
threads=2
pin_refl=""
start_reflector 2
for r in $rates_threads; do run fanout-threads2 --sessions 50 --clients 1000 --rate "$r" --payload 120 --tps 20 --threads 1; done
stop_reflector
fi  # not BENCH_COST_ONLY

# 6. What a feature costs, paired: the same fan-out (400 clients in 20 sessions of 20,
# each of BENCH_COST_RATES events/s per client) against reflectors started with different flags, one
# configuration after the other, BENCH_COST_ROUNDS times, so that the machine's noise
# falls on all of them alike. One JSON line per run ("cost"), then one per configuration
# and rate ("cost-summary": median deliveries/s and p99 over the rounds, ratio to
# "journal" at the same rate).
#   journal    the default (session journal on, group commit)
#   nojournal  --journal none
#   auth       --auth-secret, every client through a t/<jwt> path (the gate, JOIN claims)
#   cluster    --redis: a local redis-server holds leases, the session journal and blobs
#              (--journal-sync redis: output waits for the Redis batch holding its records)
#   before     BENCH_BASELINE_BIN, another build's reflector with default flags (optional)
#   before-cluster  the same build with the cluster flags (when "cluster" is measured too)
threads=1
pin_refl="taskset -c 0"
[ "$ncores" -lt 2 ] && pin_refl=""
secret="bench-secret-$$"
token=$(python3 - "$secret" <<'PY'
import base64, hashlib, hmac, json, sys, time
b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode()
h = b(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
p = b(json.dumps({"sub": "bench", "exp": int(time.time()) + 7200}).encode())
s = b(hmac.new(sys.argv[1].encode(), f"{h}.{p}".encode(), hashlib.sha256).digest())
print(f"{h}.{p}.{s}")
PY
)
# The cluster configuration's Redis: a redis-server of its own on a free port, no disk.
redis_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
  --logfile /dev/null >/dev/null 2>&1 &
redis_pid=$!
trap 'stop_reflector; kill "$redis_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.05; done
for cost_rate in $cost_rates; do
for round in $(seq 1 "$cost_rounds"); do
  for cfg in $cost_names; do
    refl_bin="$BIN/lockstep-reflector"; url_prefix=""; flags=()
    case $cfg in
      nojournal) flags=(--journal none) ;;
      auth) flags=(--auth-secret "$secret"); url_prefix="/t/$token" ;;
      cluster) redis-cli -p "$redis_port" flushall >/dev/null; flags=(--redis "redis://127.0.0.1:$redis_port") ;;
      before) refl_bin=$BENCH_BASELINE_BIN ;;
      before-cluster) refl_bin=$BENCH_BASELINE_BIN; redis-cli -p "$redis_port" flushall >/dev/null
                      flags=(--redis "redis://127.0.0.1:$redis_port") ;;
    esac
    start_reflector 1 "${flags[@]}"
    extra_fields="\"config\":\"$cfg\",\"round\":$round,"
    rcmds() { redis-cli -p "$redis_port" info stats | awk -F: '/^total_commands_processed/ {print $2+0}'; }
    # redis-server's CPU time (user + system clock ticks): the share of a core it used.
    rticks() { awk '{print $14 + $15}' "/proc/$redis_pid/stat"; }
    c0=$(rcmds); k0=$(rticks); t0=$(date +%s.%N)
    run "cost" --sessions 20 --clients 400 --rate "$cost_rate" --payload 120 --tps 20
    if [ "$cfg" = cluster ] || [ "$cfg" = before-cluster ]; then
      c1=$(rcmds); k1=$(rticks); t1=$(date +%s.%N)
      echo "{\"scenario\":\"cost-redis\",\"config\":\"$cfg\",\"rate\":$cost_rate,\"round\":$round,$(python3 -c "
dt = $t1 - $t0
print('\"redis_commands_per_s\":%d,\"redis_cpu_percent\":%d' % (round(($c1 - $c0) / dt), round(100 * ($k1 - $k0) / $(getconf CLK_TCK) / dt)))")}" | tee -a "$res"
    fi
    stop_reflector
  done
done
done
refl_bin="$BIN/lockstep-reflector"; url_prefix=""; extra_fields=""
kill "$redis_pid" 2>/dev/null || true
python3 - "$res" <<'PY' | tee -a "$res"
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if '"scenario":"cost"' in l]
by = {}
for r in runs:
    by.setdefault((r.get("rate"), r.get("config", "?")), []).append(r)
def med(rs, k):
    v = [r.get(k, 0) for r in rs if r.get("errors", 1) == 0]
    return statistics.median(v) if v else None
redis = [json.loads(l) for l in open(sys.argv[1]) if '"scenario":"cost-redis"' in l]
for (rate, cfg), rs in by.items():
    base = med(by.get((rate, "journal"), []), "deliveries_per_s")
    d = med(rs, "deliveries_per_s")
    o = {"scenario": "cost-summary", "config": cfg, "rounds": len(rs), "rate": rate,
         "median_deliveries_per_s": d, "median_p99_ms": med(rs, "p99_ms"),
         "ratio_to_journal": round(d / base, 3) if d and base else None}
    mine = [r for r in redis if r.get("rate") == rate and r.get("config", "cluster") == cfg]
    if mine:
        o["median_redis_commands_per_s"] = statistics.median(r["redis_commands_per_s"] for r in mine)
        o["median_redis_cpu_percent"] = statistics.median(r["redis_cpu_percent"] for r in mine)
    print(json.dumps(o))
PY

[ "$cost_only" = 1 ] && { echo "results: $res"; exit 0; }

# 6b. Durable sessions: start-up time with 0 and 10,000 stored sessions (resume is lazy:
# it must not grow), and a JOIN resuming one session with a 10,000-event journal.
progress "durable: start-up with 0 and 10,000 stored sessions, resume of a 10,000-event journal"
python3 scripts/bench_durable.py "$BIN" "$out" "$([ "$quick" = 1 ] && echo 3 || echo 5)" \
  "${pin_refl#taskset -c }" "${pin_gen#taskset -c }" | tee -a "$res"

# 7. Microbenchmarks (one JSON line each).
progress "microbenchmarks"
"$BIN/lockstep-microbench" --benchmark_format=json --benchmark_min_time=0.2 2>/dev/null \
  | python3 -c '
import json,sys
d=json.load(sys.stdin)
for b in d["benchmarks"]:
    o={"scenario":"micro","name":b["name"],"ns_per_op":round(b["real_time"],1)}
    if "deliveries/s" in b: o["deliveries_per_s"]=round(b["deliveries/s"])
    if "bytes_per_second" in b: o["mb_per_s"]=round(b["bytes_per_second"]/1e6,1)
    print(json.dumps(o))' | tee -a "$res"

if [ "${BENCH_DOCS:-0}" = 1 ]; then
  python3 scripts/perf_table.py "$res" docs/performance.md
  echo "results: $res; table written to docs/performance.md"
else
  echo "results: $res (make bench-docs also writes the table in docs/performance.md)"
fi
