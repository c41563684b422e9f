#!/usr/bin/env python3
"""The alert rules of deploy/prometheus/lockstep-alerts.yml, fed with what a real reflector exports.

Two real reflector processes are driven into the conditions the rules watch, and /metrics is
scraped before and after each:
- refused events: a session reaches --log-max (lockstep_refused_total grows);
- slow consumers: two members stop reading and are closed with 1013
  (lockstep_closes_total{code="1013"} grows by 2);
- a drain that does not end: SIGTERM with a client that never leaves (lockstep_draining 1).
Each scraped value becomes a `promtool test rules` input series, repeated once a minute as if
the same thing happened every minute, and promtool must fire exactly the alerts the docs
promise, with their labels and rendered annotations. The quiet scrape taken first must fire
none. The rules no live scenario here can reach in seconds (a reflector down, late or
stretched ticks, 256 MiB of queued output, file descriptors, restarts) are checked on
synthetic series, each with a case that must fire and one that must not.

Usage: alerts_check.py SOURCE_DIR REFLECTOR_BINARY
"""
import base64
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

from opslib import errors, fail, free_port

src, binary = sys.argv[1], sys.argv[2]
rules_path = os.path.abspath(os.path.join(src, "deploy/prometheus/lockstep-alerts.yml"))
rules = {r["alert"]: r for g in yaml.safe_load(open(rules_path))["groups"] for r in g["rules"]}


def until(pred, secs, what):
    """Polls pred every 50 ms for at most secs seconds (bounds only cut off a stuck run)."""
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {secs} s waiting for {what}")


class Reflector:
    def __init__(self, *flags):
        self.port = free_port()
        self.tmp = tempfile.TemporaryDirectory()
        self.err = open(os.path.join(self.tmp.name, "err.log"), "w+")
        self.proc = subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(self.port), "--threads", "1",
                                      "--data-dir", os.path.join(self.tmp.name, "data"), *flags],
                                     stdout=subprocess.DEVNULL, stderr=self.err)
        def ready():
            if self.proc.poll() is not None:
                self.err.seek(0)
                raise RuntimeError(f"the reflector exited with {self.proc.returncode}: {self.err.read()[-2000:]}")
            return self.get("/health/ready")[0] == 200
        until(ready, 30, "the reflector to be ready")

    def get(self, path):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()
        except OSError:
            return 0, ""

    def metrics(self):
        status, text = self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                series, value = line.rsplit(" ", 1)
                out[series] = float(value)
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.err.close()
        self.tmp.cleanup()


class WebSocket:
    """A minimal client (RFC 6455): text frames out, masked; frames in, whole."""

    def __init__(self, port, path, rcvbuf=None):
        self.s = socket.socket()
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(10)
        self.s.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(4096)
            if not chunk:
                raise RuntimeError("upgrade: connection closed")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise RuntimeError(f"upgrade refused: {head[:80]!r}")

    def send(self, obj):
        data = json.dumps(obj).encode()
        n = len(data)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else
                                bytes([0x80 | 126]) + struct.pack(">H", n) if n < 65536 else
                                bytes([0x80 | 127]) + struct.pack(">Q", n))
        mask = os.urandom(4)
        self.s.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data)))

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(1 << 16)
            if not chunk:
                raise EOFError
            self.buf += chunk

    def frame(self):
        self._need(2)
        op, n = self.buf[0] & 0x0F, self.buf[1] & 0x7F
        off = 2
        if n == 126:
            self._need(4)
            n, off = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, off = struct.unpack(">Q", self.buf[2:10])[0], 10
        self._need(off + n)
        payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
        return op, payload

    def action(self, name):
        """The next text frame whose action is `name` (others are skipped)."""
        while True:
            op, payload = self.frame()
            if op == 8:
                raise RuntimeError(f"closed while waiting for {name}")
            if op == 1 and json.loads(payload).get("action") == name:
                return json.loads(payload)

    def close_code(self):
        """Reads (bounded by the socket timeout) until the close frame; its code."""
        while True:
            op, payload = self.frame()
            if op == 8:
                return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005


def join(port, path, user):
    ws = WebSocket(port, path, rcvbuf=4096 if user.startswith("slow") else None)
    ws.send({"id": "x", "action": "JOIN", "args": {"name": "alerts/app", "apiKey": "none", "appId": "alerts",
                                                   "persistentId": "p", "version": 1, "user": user,
                                                   "ticks": {"tick": 1000, "delay": 0}, "tove": "t"}})
    ws.action("SYNC")
    return ws


def send_event(ws, payload):
    ws.send({"id": "x", "action": "SEND", "args": [0, 0, payload, 5]})


# --- the live scenarios -------------------------------------------------------------------------
quiet, refused, slow, draining = {}, {}, {}, {}
a = Reflector("--log-max", "20", "--log-requ-threshold", "10")
b = Reflector("--max-queue-bytes", "65536", "--drain-timeout-ms", "120000")
try:
    quiet = {"a": a.metrics(), "b": b.metrics()}

    # a: 30 events into a session whose log holds 20 (no client snapshots here).
    m = join(a.port, "/refused", "sender")
    for i in range(30):
        send_event(m, f"e{i}")
    until(lambda: a.metrics().get("lockstep_refused_total", 0) >= 10, 30, "10 refused events")
    refused = a.metrics()

    # b: two members that stop reading while 256 KiB events arrive: each is closed with 1013.
    slow_members = [join(b.port, "/slow", f"slow{i}") for i in range(2)]
    sender = join(b.port, "/slow", "sender")
    big = "x" * (256 * 1024)
    for i in range(40):
        send_event(sender, big)
        if b.metrics().get('lockstep_closes_total{code="1013"}', 0) >= 2:
            break
    until(lambda: b.metrics().get('lockstep_closes_total{code="1013"}', 0) >= 2, 30, "two 1013 closes")
    for ws in slow_members:
        code = ws.close_code()
        if code != 1013:
            fail(f"a member that stopped reading was closed with {code}, not 1013")
    slow = b.metrics()

    # b: SIGTERM while a client stays: the drain lasts (--drain-timeout-ms 120 s).
    stubborn = join(b.port, "/stay", "stubborn")
    b.proc.send_signal(signal.SIGTERM)
    until(lambda: b.get("/health/ready")[0] == 503, 30, "readiness 503 after SIGTERM")
    draining = b.metrics()
finally:
    a.stop()
    b.stop()

for name, want in (("refused", refused.get("lockstep_refused_total", 0) >= 10),
                   ("1013 closes", slow.get('lockstep_closes_total{code="1013"}', 0) >= 2),
                   ("draining", draining.get("lockstep_draining") == 1),
                   ("quiet draining", quiet["b"].get("lockstep_draining") == 0)):
    if not want:
        fail(f"the live metrics do not show {name}")
closes_1013 = 'lockstep_closes_total{code="1013"}'
print(f"live: refused {refused.get('lockstep_refused_total')}, 1013 closes {slow.get(closes_1013)}, "
      f"draining {draining.get('lockstep_draining')}")


# --- promtool -----------------------------------------------------------------------------------
def labels_of(series):
    m = re.match(r"^[^{]+\{(.*)\}$", series)
    return dict(re.findall(r'(\w+)="([^"]*)"', m.group(1))) if m else {}


def series(name_with_labels, instance, values):
    """An input series named as scraped, with the job and instance Prometheus would add."""
    name, _, rest = name_with_labels.partition("{")
    extra = ("," + rest.rstrip("}")) if rest else ""
    return {"series": f'{name}{{job="lockstep",instance="{instance}"{extra}}}', "values": values}


def num(v):
    """A sample value as promtool's series notation reads it (no exponent: its '+' would
    be taken for the notation's own)."""
    return str(int(v)) if float(v).is_integer() else f"{v:.9f}".rstrip("0")


def rising(before, after, n=15):
    """A counter that grows from `before` by (after - before) every minute, n times."""
    return f"{num(before)}+{num(after - before)}x{n}"


def flat(v, n=15):
    return f"{num(v)}x{n}"


def expected(alert, labels):
    rule = rules[alert]
    ann = {}
    for k, text in rule.get("annotations", {}).items():
        ann[k] = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), text)
    return {"exp_labels": {**rule.get("labels", {}), **labels}, "exp_annotations": ann}


def alert_case(alert, input_series, at, fires_with=None):
    return {"interval": "1m", "input_series": input_series,
            "alert_rule_test": [{"eval_time": at, "alertname": alert,
                                 "exp_alerts": [expected(alert, fires_with)] if fires_with is not None else []}]}


inst = {"job": "lockstep"}
R, S = "lockstep_refused_total", 'lockstep_closes_total{code="1013"}'
tests = [
    # Live: refused events, as scraped, each minute.
    alert_case("LockstepEventsRefused", [series(R, "a", rising(quiet["a"].get(R, 0), refused.get(R, 0)))], "5m",
               {**inst, "instance": "a"}),
    # Live: two slow consumers closed each minute (> 1 a minute) for the rule's 5 minutes.
    alert_case("LockstepSlowConsumers", [series(S, "b", rising(0, slow.get(S, 0)))], "12m",
               {**inst, "instance": "b", "code": "1013"}),
    # Live: the scraped draining gauge held for longer than the rule's 10 minutes.
    alert_case("LockstepDrainingTooLong", [series("lockstep_draining", "b", flat(draining.get("lockstep_draining", 0)))],
               "12m", {**inst, "instance": "b"}),
]
# The quiet reflectors, every exported series held for 15 minutes: no alert may fire.
quiet_series = [series(k, inst_name, flat(v)) for inst_name, m in quiet.items() for k, v in m.items()
                if k.startswith(("lockstep_", "process_"))]
quiet_series += [{"series": f'up{{job="lockstep",instance="{i}"}}', "values": flat(1)} for i in quiet]
for alert in rules:
    tests.append(alert_case(alert, quiet_series, "14m"))

# Synthetic: what no live scenario reaches in seconds; each case fires, and a near miss does not.
syn = {**inst, "instance": "s"}
lat = "lockstep_tick_lateness_seconds_bucket"


def lateness(late_share):
    """Ticks at 100/s; `late_share` of them later than 50 ms (bucket le=0.1 and above)."""
    on_time = 6000 * (1 - late_share)
    return [series(f'{lat}{{le="0.05"}}', "s", f"0+{num(on_time)}x15"),
            series(f'{lat}{{le="0.1"}}', "s", "0+6000x15"),
            series(f'{lat}{{le="+Inf"}}', "s", "0+6000x15")]


# histogram_quantile(... sum by (instance, le) ...) keeps only the instance.
only_instance = {"LockstepTicksLate": {"instance": "s"}}
for alert, firing, quiet_input, at in [
    ("LockstepDown", [{"series": 'up{job="lockstep",instance="s"}', "values": "1 0x10"}],
     [{"series": 'up{job="lockstep",instance="s"}', "values": "1 0 1x10"}], "5m"),
    ("LockstepTicksLate", lateness(0.05), lateness(0.005), "10m"),
    ("LockstepTicksStretched", [series("lockstep_tick_stretch_percent", "s", "200x15")],
     [series("lockstep_tick_stretch_percent", "s", "200x5 100x10")], "14m"),
    ("LockstepOutboundQueueHigh", [series("lockstep_outbound_queue_bytes", "s", f"{300 * 2**20}x10")],
     [series("lockstep_outbound_queue_bytes", "s", f"{200 * 2**20}x10")], "8m"),
    ("LockstepFileDescriptorsExhausted",
     [series("process_open_fds", "s", "900x10"), series("process_max_fds", "s", "1000x10")],
     [series("process_open_fds", "s", "700x10"), series("process_max_fds", "s", "1000x10")], "8m"),
    ("LockstepRestarted", [series("process_start_time_seconds", "s", "100 200 300 400 400x10")],
     [series("process_start_time_seconds", "s", "100 200 200x10")], "5m"),
]:
    tests.append(alert_case(alert, firing, at, only_instance.get(alert, syn)))
    tests.append(alert_case(alert, quiet_input, at))

covered = {t["alert_rule_test"][0]["alertname"] for t in tests if t["alert_rule_test"][0]["exp_alerts"]}
for alert in sorted(set(rules) - covered):
    fail(f"alert {alert} has no case that fires it")

with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "alerts-test.json")
    json.dump({"rule_files": [rules_path], "evaluation_interval": "1m", "tests": tests}, open(path, "w"), indent=1)
    p = subprocess.run(["promtool", "test", "rules", path], capture_output=True, text=True)
    if p.returncode != 0:
        fail(f"promtool test rules:\n{p.stdout}{p.stderr}")

if errors:
    sys.exit(1)
print(f"ok: {len(tests)} promtool cases; {len(covered)} of {len(rules)} alerts fire on their case "
      "(3 on live metrics), none on a quiet reflector")
