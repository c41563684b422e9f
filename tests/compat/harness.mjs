// Shared by the Node scenario tests (run-restart.mjs, run-failover.mjs, run-rolling.mjs,
// run-handoff.mjs): free ports, readiness waits, counter-app.mjs processes, reflectors that
// can be stopped and started again, a cluster (redis-server, reflectors, HAProxy with an
// admin socket), the checks every scenario makes on the apps' results, and cleanup of
// every child process.
import { spawn } from "node:child_process";
import { createWriteStream, mkdtempSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import net from "node:net";

const HERE = dirname(fileURLToPath(import.meta.url));

/** Every child started through here; killed by killAll() (call it from after()). */
export const children = new Set();
export function killAll() { for (const c of children) { try { c.kill("SIGKILL"); } catch { /* gone */ } } }

export const sleep = ms => new Promise(r => setTimeout(r, ms));

function ephemeralPort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.on("error", reject);
        s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
    });
}

// Ports handed out, so that no two are the same: the kernel may give a port just closed
// to the next bind(0), in this process (a test allocates several before starting anything)
// or in another scenario running beside it (make test runs three at once). A marker file
// per port in a shared directory reserves it across processes; markers older than ten
// minutes are stale (a killed run) and taken over.
const handedOut = new Set();
const PORT_DIR = join(tmpdir(), "lockstep-test-ports");

function reserve(port) {
    if (handedOut.has(port)) return false;
    mkdirSync(PORT_DIR, { recursive: true });
    const marker = join(PORT_DIR, String(port));
    try {
        writeFileSync(marker, String(process.pid), { flag: "wx" });
    } catch (e) {
        try {
            if (Date.now() - statSync(marker).mtimeMs < 600000) return false;
            writeFileSync(marker, String(process.pid));
        } catch (e2) {
            return false;
        }
    }
    handedOut.add(port);
    return true;
}

process.on("exit", () => {
    for (const p of handedOut) { try { rmSync(join(PORT_DIR, String(p)), { force: true }); } catch { /* gone */ } }
});

/** A free loopback port no other caller of this function (here or in a test beside this
 *  one) got in the last ten minutes (bounded: 200 tries). */
export async function freePort() {
    for (let i = 0; i < 200; i++) {
        const p = await ephemeralPort();
        if (reserve(p)) return p;
    }
    throw new Error("no free port after 200 tries");
}

/** Waits (bounded: 10 s) until http://127.0.0.1:<port><path> answers 200. */
export async function ready(port, path = "/health/ready") {
    for (let i = 0; i < 200; i++) {
        try {
            const r = await fetch(`http://127.0.0.1:${port}${path}`);
            if (r.status === 200) return;
        } catch (e) { /* not listening yet */ }
        await sleep(50);
    }
    throw new Error(`nothing ready on ${port}${path}`);
}

/** Spawns a process with its output in `logFile`; `exited` resolves {code, signal}. */
export function spawnLogged(cmd, args, logFile, opts = {}) {
    const log = createWriteStream(logFile);
    const proc = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"], ...opts });
    children.add(proc);
    proc.stdout.pipe(log);
    proc.stderr.pipe(log);
    const exited = new Promise(resolve => proc.on("exit", (code, signal) => { children.delete(proc); resolve({ code, signal }); }));
    return { proc, exited };
}

/** Stops a spawned process with `signal`, SIGKILL after `ms`; resolves its exit. */
export async function stopProcess(p, signal, ms = 10000) {
    p.proc.kill(signal);
    const r = await Promise.race([p.exited, sleep(ms).then(() => null)]);
    if (r) return r;
    p.proc.kill("SIGKILL");
    await p.exited;
    throw new Error(`process did not exit after ${signal}`);
}

/** One counter-app.mjs process (configured by `env`); resolves {code, logFile, result}. */
export function runClient(name, env, logDir) {
    const logFile = join(logDir, `${env.SESSION}-${name}.log`);
    const log = createWriteStream(logFile);
    const proc = spawn(process.execPath, [join(HERE, "counter-app.mjs")],
        { cwd: HERE, env: { ...process.env, ...env, NAME: name }, stdio: ["ignore", "pipe", "pipe"] });
    children.add(proc);
    let out = "";
    proc.stdout.on("data", c => { log.write(c); out += c.toString("utf8"); });
    proc.stderr.on("data", c => log.write(c));
    return new Promise(resolve => proc.on("exit", code => {
        children.delete(proc);
        log.end();
        const line = out.split("\n").find(l => l.startsWith("RESULT "));
        resolve({ code, logFile, result: line ? JSON.parse(line.slice(7)) : null });
    }));
}

/** Waits (bounded by `ms`) until the client `name` of `session`, started by runClient()
 *  with `logDir`, has printed the marker `@@ <marker>`. */
export async function waitForMarker(logDir, session, name, marker, ms) {
    const file = join(logDir, `${session}-${name}.log`);
    for (const end = Date.now() + ms; Date.now() < end; await sleep(100)) {
        let text = "";
        try { text = readFileSync(file, "utf8"); } catch { /* not written yet */ }
        if (text.includes(`@@ ${marker} `)) return;
    }
    throw new Error(`${name} did not print ${marker} within ${ms} ms`);
}

/** What every scenario reads from its environment: LOCKSTEP_REFLECTOR_BIN (required),
 *  COMPAT_SLOW (factor >= 1 for the timeouts), COMPAT_LOG_DIR (default: a fresh temp dir). */
export function scenarioEnv(prefix) {
    const logDir = process.env.COMPAT_LOG_DIR
        ? (mkdirSync(process.env.COMPAT_LOG_DIR, { recursive: true }), process.env.COMPAT_LOG_DIR)
        : mkdtempSync(join(tmpdir(), `lockstep-${prefix}-`));
    return { BIN: process.env.LOCKSTEP_REFLECTOR_BIN || "", SLOW: Math.max(1, Number(process.env.COMPAT_SLOW) || 1),
        LOG_DIR: logDir };
}

/** A lockstep-reflector process on a fixed port and data dir; start() may be called again. */
export class Reflector {
    constructor(bin, port, dir, args, logDir, name = String(port)) {
        Object.assign(this, { bin, port, dir, args, logDir, name, runs: 0 });
    }
    async start() {
        this.p = spawnLogged(this.bin, ["--bind", "127.0.0.1", "--port", String(this.port), "--data-dir", this.dir,
            ...this.args], join(this.logDir, `reflector-${this.name}-${++this.runs}.log`));
        await ready(this.port);
    }
    stop(signal, ms = 10000) { return stopProcess(this.p, signal, ms); }
}

async function redisPing(port) {
    return new Promise(resolve => {
        const s = net.connect(port, "127.0.0.1", () => s.write("PING\r\n"));
        s.on("data", d => { s.destroy(); resolve(d.toString().startsWith("+PONG")); });
        s.on("error", () => resolve(false));
    });
}

/** A redis-server on `port` without persistence; resolves once it answers PING (bounded: 10 s). */
export async function startRedis(port, logDir) {
    const p = spawnLogged("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--loglevel", "warning"], join(logDir, "redis.log"));
    for (let i = 0; i < 200; i++) {
        if (await redisPing(port)) return p;
        await sleep(50);
    }
    throw new Error("redis-server did not start");
}

/** deploy/haproxy/haproxy.cfg for loopback: `balance` (uri: consistent hash of the last
 *  path segment, the session id, as deploy/ has it; first: the first server in service), an
 *  admin socket, servers listed in `order`, `disabled` ones in maintenance until enabled
 *  through the socket. */
function haproxyConfig({ port, ports, balance, socket, order, disabled }) {
    const hashing = balance === "uri" ? "    balance hash path,field(-1,/)\n    hash-type consistent\n"
        : `    balance ${balance}\n`;
    return `global
    maxconn 2000
    stats socket ${socket} level admin

defaults
    mode http
    timeout connect 500ms
    timeout client 60s
    timeout server 60s
    timeout tunnel 1h
    timeout http-request 10s
    option redispatch 1
    retries 2
    retry-on conn-failure empty-response

frontend lockstep
    bind 127.0.0.1:${port}
    default_backend reflectors

backend reflectors
${hashing}    option httpchk GET /health/ready
    http-check expect status 200
    default-server inter 500ms fall 2 rise 2
${order.map(i => `    server r${i + 1} 127.0.0.1:${ports[i]} check${disabled.includes(i) ? " disabled" : ""}`).join("\n")}
`;
}

/** One command on HAProxy's admin socket; resolves its answer. */
export function haproxyAdmin(socket, command) {
    return new Promise((resolve, reject) => {
        let out = "";
        const s = net.connect(socket, () => s.end(`${command}\n`));
        s.on("data", d => { out += d.toString("utf8"); });
        s.on("end", () => resolve(out));
        s.on("error", reject);
    });
}

/** Waits (bounded: 10 s) until HAProxy reports server r<i+1> `status` (UP, DOWN, MAINT). */
export async function haproxyStatus(socket, i, status) {
    let last = "";
    for (let k = 0; k < 200; k++) {
        const csv = await haproxyAdmin(socket, "show stat").catch(() => "");
        const row = csv.split("\n").find(l => l.startsWith(`reflectors,r${i + 1},`));
        last = row ? row.split(",")[17] : "";
        if (last === status) return;
        await sleep(50);
    }
    throw new Error(`HAProxy: r${i + 1} is ${last}, not ${status}`);
}

/** A cluster on loopback: a redis-server, `n` reflectors (ids r1…rn, each with its data
 *  dir, restartable) and HAProxy in front with an admin socket. With `publicUrl` every
 *  reflector's --public-url is HAProxy's, as for a cluster behind a balancer (router seat
 *  URLs then name the balancer). stop() ends all of it. */
export async function startCluster({ bin, logDir, n = 3, args = [], balance = "uri", order, disabled = [],
    publicUrl = false }) {
    const redisPort = await freePort();
    const redis = await startRedis(redisPort, logDir);
    const ports = [];
    for (let i = 0; i < n; i++) ports.push(await freePort());
    const hport = await freePort();
    const pub = publicUrl ? ["--public-url", `ws://127.0.0.1:${hport}`] : [];
    const reflectors = ports.map((port, i) => new Reflector(bin, port, mkdtempSync(join(tmpdir(), "lockstep-cluster-data-")),
        ["--redis", `redis://127.0.0.1:${redisPort}`, "--reflector-id", `r${i + 1}`, ...pub, ...args], logDir,
        `r${i + 1}`));
    for (const r of reflectors) await r.start();
    const socket = join(logDir, `haproxy-${hport}.sock`);
    const cfg = join(logDir, "haproxy.cfg");
    writeFileSync(cfg, haproxyConfig({ port: hport, ports, balance, socket, disabled,
        order: order || ports.map((_, i) => i) }));
    const haproxy = spawnLogged("haproxy", ["-db", "-f", cfg], join(logDir, "haproxy.log"));
    await ready(hport);
    return {
        redisPort, redis, ports, reflectors, hport, socket,
        /** counter-app.mjs settings reaching the cluster through HAProxy. */
        env: { LIB: "multisynq", REFLECTOR: `ws://127.0.0.1:${hport}/reflector`, FILES: `http://127.0.0.1:${hport}/files` },
        async stop() {
            await stopProcess(haproxy, "SIGTERM", 5000).catch(() => {});
            for (const r of reflectors)
                if (children.has(r.p.proc)) await r.stop("SIGTERM").catch(() => {});
            await stopProcess(redis, "SIGTERM", 5000).catch(() => {});
            for (const r of reflectors) rmSync(r.dir, { recursive: true, force: true });
        },
    };
}

/** The reflector (index into `ports`) whose /sessions lists `name` live with clients, or -1. */
export async function owner(ports, name) {
    for (let i = 0; i < ports.length; i++) {
        try {
            const list = await (await fetch(`http://127.0.0.1:${ports[i]}/sessions`)).json();
            if (list.some(e => e.state === "live" && e.clients > 0 && String(e.name).endsWith(name))) return i;
        } catch (e) { /* down */ }
    }
    return -1;
}

/** The value of one Prometheus metric (no labels) at the reflector on `port`; NaN if absent or down. */
export async function metric(port, name) {
    try {
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        const line = text.split("\n").find(l => l.startsWith(`${name} `));
        return line ? Number(line.slice(name.length + 1)) : NaN;
    } catch (e) {
        return NaN;
    }
}

/** The last lines of each app's log, for a failure message. */
export function tails(results, lines = 15) {
    return results.map(r => `--- ${r.logFile}\n${readFileSync(r.logFile, "utf8").split("\n").slice(-lines).join("\n")}`)
        .join("\n");
}

/** The app ran to the end, reconnected, and its session went on across the interruption
 *  at model time `atMs`: one timeline, a SYNC after it, model time past it. */
export function assertContinued(r, atMs) {
    assert.ok(r.result, `no RESULT from ${r.logFile}`);
    const res = r.result;
    assert.equal(r.code, 0, `${res.name} exit ${r.code}: ${res.error}`);
    assert.ok(res.syncs.length >= 2, `${res.name} saw ${res.syncs.length} SYNCs (no reconnect?)`);
    assert.equal(new Set(res.syncs.map(s => s.timeline)).size, 1, `${res.name}: timeline changed`);
    const last = res.syncs[res.syncs.length - 1];
    assert.ok(last.time >= atMs - 1500, `${res.name}: last SYNC at time ${last.time}`);
    assert.ok(res.modelTime > atMs, `${res.name}: model time ${res.modelTime} restarted`);
}

/** Every reconnect was a seamless rejoin: model and view kept, init() ran once. */
export function assertSeamless(res, rejoins = 1) {
    assert.ok(res.logs.seamless >= rejoins, `${res.name}: ${res.logs.seamless} seamless rejoin(s), want ${rejoins}`);
    assert.equal(res.logs.cannotRejoin, 0, `${res.name}: could not rejoin seamlessly`);
    assert.equal(res.viewsCreated, 1, `${res.name}: view rebuilt`);
    assert.equal(res.viewsDetached, 0, `${res.name}: view torn down`);
    assert.equal(res.initRan, 1, `${res.name}: model init ran again`);
}

/** The replicas agree (count, digest) and at most `maxLost` of `expected` increments are missing. */
export function assertAgree(results, expected, maxLost) {
    const [first, ...rest] = results.map(r => r.result);
    for (const res of rest) {
        assert.equal(res.count, first.count, `${res.name} and ${first.name} differ in count`);
        assert.equal(res.digest, first.digest, `${res.name} and ${first.name} differ in state`);
    }
    const lost = expected - first.count;
    assert.ok(lost >= 0 && lost <= maxLost, `count ${first.count} of ${expected}`);
}

/** For each app: ms from `at` (wall clock) to its next reflected event (Infinity: none). */
export function eventGaps(results, at) {
    return results.map(r => {
        const next = r.result.recvAt.find(t => t > at);
        return next === undefined ? Infinity : next - at;
    });
}

/** Logs each app's pause in reflected events after `at` (`label` names the cause) and
 *  holds it to `goalMs` (x `slow`, + 1 s of slack). Returns the pauses. */
export function assertEventsResumed(results, at, label, goalMs, slow) {
    const gaps = eventGaps(results, at);
    console.log(`${label}: next reflected event after ${gaps[0]} ms (A), ${gaps[1]} ms (B); goal ${goalMs} ms`);
    for (const g of gaps) assert.ok(g <= goalMs * slow + 1000, `events stopped for ${g} ms`);
    return gaps;
}

/** Every SEND of each sender in `senders` ([name, its own result]) that reached a reflector
 *  is counted once by every app in `results`, `sends` each. A sender's closing WebSocket
 *  discards what its app sends between the reflector's close frame and the close event
 *  (`sendsDiscarded`: the reflector never sees those; at most one per move). Everything
 *  else must arrive, also a SEND that crossed the reflector's close frame on the wire: the
 *  reflector reads until the client's close reply. Returns how many SENDs were discarded
 *  in all (the apps' totals miss exactly those). */
export function assertSendsArrived(results, senders, sends, moves, label) {
    let missing = 0;
    for (const [who, sender] of senders) {
        const discarded = sender.result.sendsDiscarded || 0;
        assert.ok(discarded <= moves, `${who} discarded ${discarded} SENDs on a closing socket`);
        for (const r of results) {
            const got = r.result.perSender[who] || 0;
            assert.equal(got, sends - discarded, `${r.result.name}: ${got} events of ${who}, want ` +
                `${sends - discarded} (${sends} sent, ${discarded} discarded by ${who}'s closing WebSocket)`);
            assert.equal(r.result.lastN[who], sends, `${r.result.name}: last event of ${who}`);
        }
        if (discarded)
            console.log(`${label}: ${who}: ${discarded} SEND(s) discarded by its closing WebSocket`);
        missing += discarded;
    }
    return missing;
}
