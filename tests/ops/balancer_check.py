#!/usr/bin/env python3
"""The balancer configurations of deploy/ route a session's clients to one reflector.

deploy/haproxy/haproxy.cfg and deploy/nginx/lockstep-cluster.conf are run for real (HAProxy
and nginx from Debian) with their own balancing lines, on loopback, in front of three
small HTTP servers that answer with their own number. For each:
- every URL form of one session (/reflector/<id>, a seat /r/<token>/<id>, another user's
  seat, a token path /t/<jwt>/<id>, with a query string) reaches the same server;
- 40 sessions are spread over all three servers;
- after one server dies, its sessions reach a live server and every other session stays
  where it was (consistent hashing: no session of a live reflector moves).

Usage: balancer_check.py SOURCE_DIR
"""
import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from opslib import errors, fail, free_port

src = sys.argv[1]


class Backend:
    def __init__(self, n):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = str(n).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.port = free_port()
        class Quiet(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # health checks hang up early

        self.server = Quiet(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.read().decode()
    except OSError as e:
        return f"error {e}"


def forms(sid):
    return [f"/reflector/{sid}", f"/r/tok-a/{sid}", f"/r/tok-b/{sid}?x=1", f"/t/aaa.bbb.ccc/{sid}", f"/{sid}"]


def check(name, port, backends):
    sessions = [f"S{i:02d}x{i * 7919 % 1000}" for i in range(40)]
    home = {}
    for sid in sessions:
        seen = {get(port, p) for p in forms(sid)}
        if len(seen) != 1:
            fail(f"{name}: the URL forms of session {sid} reach {sorted(seen)}")
        home[sid] = seen.pop()
    used = set(home.values())
    if used != {"0", "1", "2"}:
        fail(f"{name}: 40 sessions reach only servers {sorted(used)}")
    # One server dies: its sessions go elsewhere, nobody else moves.
    backends[1].stop()
    deadline = time.monotonic() + 15
    moved_ok = False
    while time.monotonic() < deadline and not moved_ok:
        now = {sid: get(port, f"/reflector/{sid}") for sid in sessions}
        moved_ok = all(now[s] in ("0", "2") for s in sessions)
        if not moved_ok:
            time.sleep(0.2)
    if not moved_ok:
        fail(f"{name}: after server 1 died some sessions get {sorted(set(now.values()) - {'0', '2'})}")
    for sid in sessions:
        if home[sid] != "1" and now[sid] != home[sid]:
            fail(f"{name}: session {sid} moved from live server {home[sid]} to {now[sid]}")
    print(f"{name}: {len(sessions)} sessions over servers {sorted(used)}; after server 1 died, "
          f"{sum(1 for s in sessions if home[s] == '1')} moved, the others stayed")


def haproxy(tmp, backends, port):
    text = open(os.path.join(src, "deploy/haproxy/haproxy.cfg")).read()
    backend = text[text.index("backend reflectors"):]
    keep = [l for l in backend.splitlines()[1:]
            if l.strip().startswith(("balance", "hash-type", "option", "http-check"))]
    if not any(l.strip().startswith("balance") for l in keep):
        fail("haproxy.cfg: no balance line in backend reflectors")
    cfg = f"""defaults
    mode http
    timeout connect 500ms
    timeout client 10s
    timeout server 10s
    option redispatch 1
    retries 2
    retry-on conn-failure empty-response
frontend f
    bind 127.0.0.1:{port}
    default_backend reflectors
backend reflectors
""" + "\n".join(keep) + "\n    default-server inter 200ms fall 1 rise 1\n" + "\n".join(
        f"    server r{i} 127.0.0.1:{b.port} check" for i, b in enumerate(backends)) + "\n"
    path = os.path.join(tmp, "haproxy.cfg")
    open(path, "w").write(cfg)
    return subprocess.Popen(["haproxy", "-db", "-f", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def nginx(tmp, backends, port):
    text = open(os.path.join(src, "deploy/nginx/lockstep-cluster.conf")).read()
    maps = re.findall(r"^map [^{]+\{.*?^\}", text, re.M | re.S)
    up = re.search(r"^upstream lockstep_cluster \{(.*?)^\}", text, re.M | re.S)
    loc = re.search(r"^    location / \{(.*?)^    \}", text, re.M | re.S)
    if len(maps) < 2 or not up or not loc:
        fail("lockstep-cluster.conf: the maps, the upstream or location / are missing")
        return None
    hashing = [l for l in up.group(1).splitlines() if l.strip().startswith("hash ")]
    servers = "\n".join(f"        server 127.0.0.1:{b.port} max_fails=1 fail_timeout=2s;" for b in backends)
    cfg = f"""daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{chr(10).join(maps)}
    upstream lockstep_cluster {{
{chr(10).join(hashing)}
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{{loc.group(1)}    }}
    }}
}}
"""
    path = os.path.join(tmp, "nginx.conf")
    open(path, "w").write(cfg)
    t = subprocess.run(["nginx", "-t", "-p", tmp, "-c", path], capture_output=True, text=True)
    if t.returncode != 0:
        fail(f"nginx -t: {t.stderr}")
        return None
    return subprocess.Popen(["nginx", "-p", tmp, "-c", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


for name, start in (("haproxy", haproxy), ("nginx", nginx)):
    tmp = tempfile.mkdtemp(prefix=f"lockstep-{name}-")
    backends = [Backend(i) for i in range(3)]
    port = free_port()
    proc = start(tmp, backends, port)
    try:
        if proc:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and get(port, "/reflector/x") not in ("0", "1", "2"):
                time.sleep(0.05)
            check(name, port, backends)
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=10)
        for b in backends:
            try:
                b.stop()
            except Exception:
                pass
        shutil.rmtree(tmp, ignore_errors=True)

if errors:
    sys.exit(1)
print("ok: HAProxy and nginx keep each session on one reflector")
