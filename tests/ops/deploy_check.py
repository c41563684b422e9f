#!/usr/bin/env python3
"""Checks deploy/ and docker/ against a running reflector.

- `promtool check rules` accepts deploy/prometheus/lockstep-alerts.yml, and
  `promtool check metrics` accepts the reflector's live /metrics.
- Every lockstep_/process_ series the alert rules and the Grafana dashboard name is exported.
- The systemd unit, the Kubernetes manifest and the compose file each give the process more
  time to stop than the drain timeout its arguments set.
- The reflector starts with the arguments of the systemd unit, of the Docker image
  (ENTRYPOINT) and of the Kubernetes manifest (ENTRYPOINT + args), each with loopback
  bind/port/data-dir overrides appended, and the Kubernetes probe paths answer 200.

Usage: deploy_check.py SOURCE_DIR REFLECTOR_BINARY
"""
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

from opslib import errors, fail, free_port

src, binary = sys.argv[1], sys.argv[2]
deploy = os.path.join(src, "deploy")


def drain_ms(args, default=5000):
    for i, a in enumerate(args):
        if a == "--drain-timeout-ms":
            return int(args[i + 1])
        if a.startswith("--drain-timeout-ms="):
            return int(a.split("=", 1)[1])
    return default


class Reflector:
    """The reflector started with ARGS, then loopback overrides (a later flag wins)."""

    def __init__(self, args):
        self.port = free_port()
        self.tmp = tempfile.TemporaryDirectory()
        cmd = [binary] + args + ["--bind", "127.0.0.1", "--port", str(self.port), "--data-dir", self.tmp.name]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited {self.proc.returncode}: {self.proc.stderr.read()[-2000:]}")
            try:
                if self.get("/health/live")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{cmd} did not answer /health/live within 10 s")

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.tmp.cleanup()


def started(what, args):
    try:
        return Reflector(args)
    except RuntimeError as e:
        fail(f"{what}: {e}")
        return None


# --- Dockerfile ENTRYPOINT and compose -------------------------------------------------------
dockerfile = open(os.path.join(src, "docker/Dockerfile")).read()
entry = json.loads(re.search(r"^ENTRYPOINT\s+(\[.*\])$", dockerfile, re.M).group(1))[1:]
compose = yaml.safe_load(open(os.path.join(src, "docker/compose.yml")))
for name, svc in compose["services"].items():
    grace = svc.get("stop_grace_period", "10s")
    secs = float(grace.rstrip("s"))
    if secs * 1000 <= drain_ms(entry + svc.get("command", [])):
        fail(f"compose service {name}: stop_grace_period {grace} is not above the drain timeout")
    r = started(f"compose service {name}", entry + svc.get("command", []))
    if r:
        r.stop()

# --- the cluster: compose.cluster.yml and HAProxy ------------------------------------------
# Every reflector shares one Redis and stops within its grace period; HAProxy's config is
# valid (haproxy -c), hashes the URL path, checks /health/ready, and lists exactly the
# compose file's reflectors. The reflectors themselves need that Redis, so they are started
# by ctest compat-failover, not here.
cluster = yaml.safe_load(open(os.path.join(src, "docker/compose.cluster.yml")))
refl = {n: s for n, s in cluster["services"].items() if n.startswith("reflector-")}
if len(refl) < 3:
    fail("compose.cluster.yml: fewer than three reflectors")
urls = set()
for name, svc in refl.items():
    cmd = svc.get("command", [])
    urls.add(cmd[cmd.index("--redis") + 1] if "--redis" in cmd else None)
    secs = float(svc.get("stop_grace_period", "10s").rstrip("s"))
    if secs * 1000 <= drain_ms(entry + cmd):
        fail(f"compose.cluster.yml {name}: stop_grace_period is not above the drain timeout")
if len(urls) != 1 or None in urls:
    fail(f"compose.cluster.yml: the reflectors do not share one --redis ({urls})")
hcfg = os.path.join(deploy, "haproxy/haproxy.cfg")
chk = subprocess.run(["haproxy", "-c", "-f", hcfg], capture_output=True, text=True)
if chk.returncode != 0:
    fail(f"haproxy -c {hcfg}: {chk.stdout}{chk.stderr}")
htext = open(hcfg).read()
for needed in ("balance hash path,field(-1,/)", "hash-type consistent", "option httpchk GET /health/ready", "timeout tunnel"):
    if needed not in htext:
        fail(f"{hcfg} lacks '{needed}'")
servers = set(re.findall(r"^\s*server\s+(\S+)", htext, re.M))
if servers != set(refl):
    fail(f"{hcfg} lists {sorted(servers)}, compose.cluster.yml has {sorted(refl)}")

# --- systemd ---------------------------------------------------------------------------------
unit = open(os.path.join(deploy, "systemd/lockstep-reflector.service")).read().replace("\\\n", " ")
exec_start = shlex.split(re.search(r"^ExecStart=(.*)$", unit, re.M).group(1))
stop = float(re.search(r"^TimeoutStopSec=(\d+)", unit, re.M).group(1))
if stop * 1000 <= drain_ms(exec_start[1:]):
    fail(f"systemd: TimeoutStopSec={stop:g} is not above --drain-timeout-ms {drain_ms(exec_start[1:])}")
r = started("systemd ExecStart", exec_start[1:])
if r:
    r.stop()

# --- Kubernetes --------------------------------------------------------------------------------
docs = list(yaml.safe_load_all(open(os.path.join(deploy, "kubernetes/lockstep.yaml"))))
dep = next(d for d in docs if d["kind"] == "Deployment")
pod = dep["spec"]["template"]["spec"]
container = pod["containers"][0]
args = entry + container.get("args", [])
if pod.get("terminationGracePeriodSeconds", 30) * 1000 <= drain_ms(args):
    fail("kubernetes: terminationGracePeriodSeconds is not above the drain timeout")
probes = [container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe") if p in container]
if len(probes) != 2:
    fail("kubernetes: the reflector container needs a liveness and a readiness probe")
r = started("kubernetes container", args)
metrics = ""
if r:
    for path in probes:
        status, _ = r.get(path)
        if status != 200:
            fail(f"kubernetes probe {path} answered {status}")
    status, metrics = r.get("/metrics")
    if status != 200:
        fail(f"/metrics answered {status}")
    r.stop()

# --- Prometheus conventions, alert rules, dashboard --------------------------------------------
rules = os.path.join(deploy, "prometheus/lockstep-alerts.yml")
p = subprocess.run(["promtool", "check", "rules", rules], capture_output=True, text=True)
if p.returncode != 0:
    fail(f"promtool check rules: {p.stdout}{p.stderr}")
p = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True, text=True)
if p.returncode != 0:
    fail(f"promtool check metrics on the live /metrics: {p.stdout}{p.stderr}")
exported = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)", metrics, re.M))
# A labelled series with no sample yet (closes_total before any close) is declared by TYPE.
for name, kind in re.findall(r"^# TYPE (\S+) (\S+)", metrics, re.M):
    exported.add(name)
    if kind == "histogram":
        exported.update({name + "_bucket", name + "_sum", name + "_count"})
for required in ("lockstep_build_info", "process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_open_fds", "process_max_fds", "process_start_time_seconds"):
    if required not in exported:
        fail(f"/metrics lacks {required}")
exprs = [rule["expr"] for g in yaml.safe_load(open(rules))["groups"] for rule in g["rules"]]
dash = json.load(open(os.path.join(deploy, "grafana/lockstep-dashboard.json")))
exprs += [t["expr"] for panel in dash["panels"] for t in panel["targets"]]
named = set()
for e in exprs:
    named.update(re.findall(r"\b((?:lockstep|process)_[a-z_]+)", e))
for n in sorted(named - exported):
    fail(f"alert rules or dashboard use {n}, which the reflector does not export")
print(f"{len(exprs)} rule and panel expressions name {len(named)} series")

if errors:
    sys.exit(1)
print("ok: deploy/ and docker/ agree with the reflector")
