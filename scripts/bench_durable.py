#!/usr/bin/env python3
"""make bench, durable sessions: start-up time with 0 and 10,000 stored sessions, and the
time a JOIN takes to resume one session with a 10,000-event journal. One JSON line each.

The data dir is made by the real reflector: 10,000 clients join 10,000 sessions, 20 more
send 10,000 events into one session, then the reflector is drained (SIGTERM). Each run
starts the reflector on that dir and measures, from the exec, the time until /health/ready
answers 200; then one lockstep-bench client joins the big session (its JOIN resumes it from
the journal) and join_s is the time from connecting to its SYNC. Median of RUNS runs.

usage: bench_durable.py BIN_DIR WORK_DIR [RUNS] [REFLECTOR_CPU] [GEN_CPU]
"""
import json, resource, os, shutil, signal, socket, statistics, subprocess, sys, time, urllib.request

bin_dir, work = sys.argv[1], sys.argv[2]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 5
pin_refl = ["taskset", "-c", sys.argv[4]] if len(sys.argv) > 4 and sys.argv[4] else []
pin_gen = ["taskset", "-c", sys.argv[5]] if len(sys.argv) > 5 and sys.argv[5] else []
STORED, EVENTS = 10000, 10000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(data, port):
    """Starts the reflector; returns (process, ms until /health/ready answered 200)."""
    t0 = time.monotonic()
    p = subprocess.Popen(pin_refl + [f"{bin_dir}/lockstep-reflector", "--port", str(port), "--threads", "1",
                          "--data-dir", data, "--log-level", "warn"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while time.monotonic() - t0 < 60:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=1) as r:
                if r.status == 200:
                    return p, (time.monotonic() - t0) * 1000
        except OSError:
            time.sleep(0.001)
    p.kill()
    p.wait()
    sys.exit("reflector did not become ready")


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def bench(port, *args):
    out = subprocess.run(pin_gen + [f"{bin_dir}/lockstep-bench", "--url", f"ws://127.0.0.1:{port}/reflector",
                                    "--warmup", "0", "--join-timeout", "120", *args],
                         capture_output=True, text=True, timeout=300)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if r.get("errors", 1) != 0:
        sys.exit(f"lockstep-bench {args}: {r}")
    return r


stored = os.path.join(work, "durable-stored")
empty = os.path.join(work, "durable-empty")
for d in (stored, empty):
    shutil.rmtree(d, ignore_errors=True)

# The stored sessions, made and drained by a real reflector.
port = free_port()
p, _ = start(stored, port)
try:
    for batch in range(STORED // 2000):  # 2,000 at a time: joins stay quick
        bench(port, "--run-id", f"stored{batch}", "--sessions", "2000", "--clients", "2000", "--rate", "0",
              "--tps", "1", "--seconds", "0")
    bench(port, "--run-id", "big", "--sessions", "1", "--clients", "20", "--rate", "50", "--seconds",
          str(EVENTS / 20 / 50))
finally:
    stop(p)
journal = os.path.join(stored, "journal")
big_bytes = sum(os.path.getsize(os.path.join(journal, "big-s0", f)) for f in os.listdir(os.path.join(journal, "big-s0")))

ready = {"empty": [], "stored": []}
resume_ms = []
for _ in range(runs):
    for name, data in (("empty", empty), ("stored", stored)):
        port = free_port()
        p, ms = start(data, port)
        try:
            ready[name].append(ms)
            if name == "stored":
                r = bench(port, "--run-id", "big", "--sessions", "1", "--clients", "1", "--rate", "0",
                          "--seconds", "0")
                resume_ms.append(r["join_s"] * 1000)
        finally:
            stop(p)

for name, n in (("empty", 0), ("stored", len(os.listdir(journal)))):
    print(json.dumps({"scenario": "startup", "stored_sessions": n, "runs": runs,
                      "median_ready_ms": round(statistics.median(ready[name]), 1),
                      "min_ready_ms": round(min(ready[name]), 1), "max_ready_ms": round(max(ready[name]), 1)}))
print(json.dumps({"scenario": "resume", "stored_sessions": len(os.listdir(journal)), "journal_bytes": big_bytes,
                  "events_sent": EVENTS, "runs": runs, "median_join_to_sync_ms": round(statistics.median(resume_ms), 1),
                  "min_ms": round(min(resume_ms), 1), "max_ms": round(max(resume_ms), 1)}))
for d in (stored, empty):
    shutil.rmtree(d, ignore_errors=True)
