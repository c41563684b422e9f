#!/usr/bin/env python3
"""Rewrites the results section of docs/performance.md from bench/results/latest.jsonl."""
import json
import sys
import datetime

src, doc = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(src) if l.strip()]
lines = [f"Measured {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC by `make bench` (`scripts/bench.sh`).", ""]

load = [r for r in rows if r.get("scenario") not in ("memory", "micro", "loopback-probe", "cost", "cost-summary")]
if load:
    lines += ["| scenario | refl. threads | sessions | clients | rate/client | offered ev/s | sent/s | deliveries/s | p50 ms | p99 ms | p99.9 ms | max ms | ticks/s | tick late p99 ms | gaps | errors | gen CPU |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in load:
        lines.append("| {scenario} | {reflector_threads} | {sessions} | {clients} | {rate} | {offered:.0f} | {sent:.0f} | {deliv:.0f} | {p50:.2f} | {p99:.2f} | {p999:.2f} | {mx:.1f} | {ticks:.0f} | {tl:.2f} | {gaps} | {errors} | {cpu:.0%} |".format(
            scenario=r.get("scenario"), reflector_threads=r.get("reflector_threads"), sessions=r.get("sessions", "?"),
            clients=r.get("clients", "?"), rate=r.get("rate", "?"), offered=r.get("offered_per_s", 0), sent=r.get("sent_per_s", 0),
            deliv=r.get("deliveries_per_s", 0), p50=r.get("p50_ms", 0), p99=r.get("p99_ms", 0), p999=r.get("p999_ms", 0),
            mx=r.get("max_ms", 0), ticks=r.get("ticks_per_s", 0), tl=r.get("tick_late_p99_ms", 0), gaps=r.get("gaps", "?"),
            errors=r.get("errors", "?"), cpu=r.get("cpu_util", 0)))
    lines.append("")
for r in rows:
    if r.get("scenario") == "loopback-probe":
        lines.append(f"Loopback probe (`lockstep-bench --loopback-probe {r['sockets']}`, no reflector): one core makes "
                     f"**{r['writes_per_s']:.0f} writes/s** of {r['bytes_per_write']} bytes over {r['sockets']} loopback TCP "
                     f"connections ({r['us_per_write']} µs of CPU per write, the receiving side's TCP work included).")
        lines.append("")
for r in rows:
    if r.get("scenario") == "memory":
        lines.append(f"Memory: {r['clients']} idle joined connections: RSS {r['rss_empty_kb']} KiB empty, "
                     f"{r['rss_loaded_kb']} KiB loaded: **{r['bytes_per_connection']} bytes per connection**.")
        lines.append("")
costs = [r for r in rows if r.get("scenario") == "cost-summary"]
if costs:
    lines += ["What a feature costs (paired runs, section 6 of `scripts/bench.sh`: the same fan-out, "
              "configurations alternating, medians over the rounds):", "",
              "| configuration | rounds | rate/client | median deliveries/s | median p99 ms | ratio to journal | Redis commands/s |",
              "|---|---|---|---|---|---|---|"]
    for r in costs:
        lines.append(f"| {r['config']} | {r['rounds']} | {r['rate']} | {r['median_deliveries_per_s'] or 0:.0f} | "
                     f"{r['median_p99_ms'] or 0:.2f} | {r['ratio_to_journal']} | {r.get('median_redis_commands_per_s', '')} |")
    lines.append("")
micro = [r for r in rows if r.get("scenario") == "micro"]
if micro:
    lines += ["| microbenchmark | ns/op | deliveries/s | MB/s |", "|---|---|---|---|"]
    for r in micro:
        lines.append(f"| {r['name']} | {r['ns_per_op']} | {r.get('deliveries_per_s', '')} | {r.get('mb_per_s', '')} |")
    lines.append("")

text = open(doc).read()
begin, end = "<!-- results:begin -->", "<!-- results:end -->"
i, j = text.index(begin) + len(begin), text.index(end)
open(doc, "w").write(text[:i] + "\n" + "\n".join(lines) + "\n" + text[j:])
