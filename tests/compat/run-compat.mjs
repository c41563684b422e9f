#!/usr/bin/env node
// Compatibility test runner: drives several processes of counter-app.mjs (the unmodified
// @multisynq/client and @croquet/croquet libraries) against a reflector and checks that
// all replicas stay identical.
//
// Run (after `npm ci --ignore-scripts` in this directory):
//
//   LOCKSTEP_URL=ws://127.0.0.1:PORT/reflector \
//   LOCKSTEP_FILES=http://127.0.0.1:PORT/files \
//   node --test tests/compat/run-compat.mjs
//
// Environment:
//   LOCKSTEP_URL     (required) WebSocket URL of the reflector; the client appends /<sessionId>
//   LOCKSTEP_FILES   file-server URL, required by the snapshot scenario (missing = failure)
//   COMPAT_LIBS      comma list of libraries to test (default "multisynq,croquet")
//   COMPAT_SCENARIOS comma list of scenarios (default "replay,snapshot,router,bigsync")
//   COMPAT_LOG_DIR   where the per-process logs go (default: a fresh dir under the OS tmp dir)
//   COMPAT_TRACE     "1" to make the clients print every WebSocket frame into their logs
//   COMPAT_SLOW      factor (>= 1) to stretch the timeouts on a slow machine (default 1)
//   LOCKSTEP_API_TOKEN  Bearer token for the router API (a reflector with --auth-secret);
//                    seated clients then store blobs through LOCKSTEP_FILES (which carries
//                    a t/<jwt> pair) instead of the seat answer's plain files URL
//
// Scenarios (each for each library, each in its own fresh session):
//   replay:   3 clients publish increments, client C force-drops its TCP connection midway
//             and must rejoin seamlessly, a late joiner starts ~3 s after the others and
//             (no file server) must rebuild the state by replaying the reflector's log.
//   snapshot: same with a file server: client A forces a snapshot at model time 5.3 s,
//             the winner of the snapshot vote uploads it (PUT <files>/apps/...) and sends
//             SNAP; the late joiner starts after that and must start from the snapshot
//             (its model init() must not run), C drops its connection after the snapshot.
//   bigsync:  client A publishes 100 events of 10,000 characters each (no file server;
//             the clients refuse payloads over 16 KiB, encrypted);
//             a late joiner starts after A saw all of them reflected, so the SYNC that
//             carries the log is over 1,000,000 bytes and arrives as _CHUNK frames; it
//             must rebuild the same state (count and checkpoint digests) as A.
//   router:   the session router HTTP API on the reflector's port (http origin of
//             LOCKSTEP_URL): 2 users get seats in a fresh room (POST /v1/rooms/<room>/join),
//             connect through their seat URLs (ws://HOST:PORT/r/<token>, the client appends
//             /<sessionId>) into the room's first shard; GET /v1/rooms/<room> must show the
//             seats reserved before and confirmed (members 2, reserved 0) while they run, and
//             freed (0/0) right after both called session.leave() (close 1000).

import { test, describe, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, createWriteStream, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import net from "node:net";

const HERE = dirname(fileURLToPath(import.meta.url));
const APP_SCRIPT = join(HERE, "counter-app.mjs");

const REFLECTOR = process.env.LOCKSTEP_URL || "";
const API_TOKEN = process.env.LOCKSTEP_API_TOKEN || "";
const FILES = (process.env.LOCKSTEP_FILES || "").replace(/\/+$/, "");
const LIBS = (process.env.COMPAT_LIBS || "multisynq,croquet").split(",").map(s => s.trim()).filter(Boolean);
const SCENARIOS = (process.env.COMPAT_SCENARIOS || "replay,snapshot,router,bigsync").split(",").map(s => s.trim()).filter(Boolean);
const TRACE = process.env.COMPAT_TRACE === "1";
const SLOW = Math.max(1, Number(process.env.COMPAT_SLOW) || 1);
const LOG_DIR = process.env.COMPAT_LOG_DIR
    ? (mkdirSync(process.env.COMPAT_LOG_DIR, { recursive: true }), process.env.COMPAT_LOG_DIR)
    : mkdtempSync(join(tmpdir(), "lockstep-compat-"));

/** Appends the last lines of every client's log to a failure. */
function withClientTails(err, clients) {
    const tails = clients.map(c => `--- ${c.name} (${c.logFile}) exit=${JSON.stringify(c.exit)}\n${c.tail(15)}`).join("\n");
    err.message = `${err.message}\n${tails}`;
    return err;
}

// workload
const MAIN = ["A", "B", "C"];
const MAIN_SENDS = 20;
const LATE_SENDS = 8;
const SEND_MS = 250;
const TOTAL = MAIN.length * MAIN_SENDS + LATE_SENDS;
const DROPPER = "C";
const LATE = "L";

// bounds
const JOIN_TIMEOUT = 30000 * SLOW;
const SNAP_TIMEOUT = 25000 * SLOW;
const SCENARIO_TIMEOUT = 100000 * SLOW;
const HTTP_TIMEOUT = 5000 * SLOW;

// router workload: 2 seated users
const ROUTER_USERS = ["A", "B"];
const ROUTER_SENDS = 10;
const ROUTER_RUN_MS = 4500;
const ROUTER_FREE_MS = 3000;   // a left seat must be gone within this (and well within the seat TTL)

// every variable counter-app.mjs reads: never inherited from the runner's environment
const APP_ENV_VARS = ["LIB", "REFLECTOR", "FILES", "SESSION", "APP", "PASSWORD", "NAME", "SENDS", "SEND_MS",
    "SEND_START_MS", "PAD", "RUN_MS", "EXPECT_COUNT", "SETTLE_MS", "DROP_AT_MS", "SNAPSHOT_AT", "CLOCK_MS",
    "CHECKPOINT_EVERY", "TPS", "JOIN_TIMEOUT_MS", "HARD_TIMEOUT_MS", "CLIENT_DEBUG", "TRACE_FRAMES"];

const children = new Set();
function killAll(signal = "SIGKILL") {
    for (const c of children) {
        try { if (c.exitCode === null && c.signalCode === null) c.kill(signal); } catch (e) { /* ignore */ }
    }
}
process.on("exit", () => killAll());
after(() => killAll());

// ---------------------------------------------------------------------------
// child process wrapper
// ---------------------------------------------------------------------------
class Client {
    constructor(label, name, env) {
        this.label = label;
        this.name = name;
        this.markers = [];
        this.result = null;
        this.exit = null;           // {code, signal}
        this.logFile = join(LOG_DIR, `${label}-${name}.log`);
        this.waiters = [];
        const log = createWriteStream(this.logFile);
        const childEnv = { ...process.env };
        for (const k of Object.keys(childEnv)) {
            // keep the test runner's own context and any stray app settings out of the clients
            if (k.startsWith("NODE_TEST") || APP_ENV_VARS.includes(k)) delete childEnv[k];
        }
        Object.assign(childEnv, env, { NAME: name });
        this.proc = spawn(process.execPath, [APP_SCRIPT], { cwd: HERE, env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
        children.add(this.proc);
        let buf = "";
        this.proc.stdout.on("data", chunk => {
            log.write(chunk);
            buf += chunk.toString("utf8");
            let nl;
            while ((nl = buf.indexOf("\n")) >= 0) {
                const line = buf.slice(0, nl);
                buf = buf.slice(nl + 1);
                this.onLine(line);
            }
        });
        this.proc.stderr.on("data", chunk => log.write(chunk));
        this.exited = new Promise(resolve => {
            this.proc.on("exit", (code, signal) => {
                this.exit = { code, signal };
                children.delete(this.proc);
                if (buf) { this.onLine(buf); buf = ""; }
                log.end();
                this.notify();
                resolve(this.exit);
            });
        });
    }

    onLine(line) {
        if (line.startsWith("RESULT ")) {
            try { this.result = JSON.parse(line.slice(7)); } catch (e) { this.result = { parseError: e.message, raw: line.slice(0, 500) }; }
        } else if (line.startsWith("@@ ")) {
            const m = /^@@ (\S+) (.*)$/.exec(line);
            if (m && m[1] !== "FRAME") {
                let data = {};
                try { data = JSON.parse(m[2]); } catch (e) { /* ignore */ }
                this.markers.push({ what: m[1], ...data });
            }
        }
        this.notify();
    }

    notify() {
        for (const w of this.waiters.slice()) w();
    }

    marker(what) { return this.markers.find(m => m.what === what); }

    /** wait until predicate() is truthy; rejects after timeoutMs or if the process exits first */
    waitUntil(predicate, timeoutMs, what) {
        return new Promise((resolve, reject) => {
            const check = () => {
                const v = predicate();
                if (v) { cleanup(); resolve(v); return; }
                if (this.exit) { cleanup(); reject(new Error(`${this.name} exited (${JSON.stringify(this.exit)}) before ${what}; log: ${this.logFile}`)); }
            };
            const timer = setTimeout(() => { cleanup(); reject(new Error(`timeout (${timeoutMs} ms) waiting for ${this.name}: ${what}; log: ${this.logFile}`)); }, timeoutMs);
            const cleanup = () => { clearTimeout(timer); this.waiters = this.waiters.filter(w => w !== check); };
            this.waiters.push(check);
            check();
        });
    }

    tail(n = 25) {
        try { return readFileSync(this.logFile, "utf8").split("\n").filter(l => !l.startsWith("RESULT ")).slice(-n).join("\n"); } catch (e) { return ""; }
    }
}

const sleep = ms => new Promise(r => setTimeout(r, ms));

function withTimeout(promise, ms, what) {
    let timer;
    return Promise.race([
        promise.finally(() => clearTimeout(timer)),
        new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timeout (${ms} ms): ${what}`)), ms); }),
    ]);
}

/** http(s) origin of the reflector (the router API shares its port), from LOCKSTEP_URL */
function httpBase() {
    const u = new URL(REFLECTOR);
    return `${u.protocol === "wss:" ? "https:" : "http:"}//${u.host}`;
}

/** fetch JSON from the router API; asserts the status */
async function api(method, path, body, expectStatus = 200) {
    const url = `${httpBase()}${path}`;
    const res = await fetch(url, {
        method,
        headers: {
            ...(body ? { "content-type": "application/json" } : {}),
            ...(API_TOKEN ? { authorization: `Bearer ${API_TOKEN}` } : {}),
        },
        body: body ? JSON.stringify(body) : undefined,
        signal: AbortSignal.timeout(HTTP_TIMEOUT),
    });
    const text = await res.text();
    assert.equal(res.status, expectStatus, `${method} ${url}: status ${res.status} ${text.slice(0, 300)}`);
    try { return JSON.parse(text); } catch (e) { throw new Error(`${method} ${url}: not JSON: ${text.slice(0, 300)}`); }
}

function checkReachable(urlString, timeoutMs = 3000) {
    const u = new URL(urlString);
    const port = Number(u.port) || (u.protocol === "wss:" || u.protocol === "https:" ? 443 : 80);
    return new Promise((resolve, reject) => {
        const sock = net.connect({ host: u.hostname, port });
        const timer = setTimeout(() => { sock.destroy(); reject(new Error(`cannot reach ${u.host} (timeout)`)); }, timeoutMs);
        sock.on("connect", () => { clearTimeout(timer); sock.end(); resolve(); });
        sock.on("error", e => { clearTimeout(timer); reject(new Error(`cannot reach ${u.host}: ${e.message}`)); });
    });
}

/** a checkpoint list must be a prefix of the reference list (or vice versa) */
function assertCheckpointsAgree(results) {
    const longest = results.reduce((a, b) => (b.checkpoints.length > a.checkpoints.length ? b : a));
    for (const r of results) {
        const n = Math.min(r.checkpoints.length, longest.checkpoints.length);
        for (let i = 0; i < n; i++) {
            assert.deepEqual(r.checkpoints[i], longest.checkpoints[i],
                `checkpoint #${i} of ${r.name} differs from ${longest.name}:\n` +
                `  ${r.name}: ${JSON.stringify(r.checkpoints)}\n  ${longest.name}: ${JSON.stringify(longest.checkpoints)}`);
        }
    }
    return longest.checkpoints;
}

// ---------------------------------------------------------------------------
// one scenario
// ---------------------------------------------------------------------------
async function runScenario(t, lib, scenario) {
    if (preflightError) throw new Error(`not run: ${preflightError} (see the preflight test)`);
    const withFiles = scenario === "snapshot";
    const label = `${lib}-${scenario}`;
    const session = `compat-${label}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;
    const common = {
        LIB: lib,
        REFLECTOR,
        SESSION: session,
        APP: "io.lockstep.compat",
        PASSWORD: "compat-password",
        SEND_MS: String(SEND_MS),
        EXPECT_COUNT: String(TOTAL),
        SETTLE_MS: String(20000 * SLOW),
        JOIN_TIMEOUT_MS: String(JOIN_TIMEOUT),
        HARD_TIMEOUT_MS: String(SCENARIO_TIMEOUT - 5000),
        CLIENT_DEBUG: "session",
        TRACE_FRAMES: TRACE ? "1" : "0",
    };
    if (withFiles) common.FILES = FILES;

    const started = performance.now();
    const clients = [];
    const phase = {};
    const stamp = what => { phase[what] = Math.round(performance.now() - started); };
    try {
        for (const name of MAIN) {
            const env = { ...common, SENDS: String(MAIN_SENDS), RUN_MS: "9000" };
            if (name === "A" && withFiles) env.SNAPSHOT_AT = "5300";
            // replay: drop before the late joiner arrives; snapshot: drop after the snapshot was taken
            if (name === DROPPER) env.DROP_AT_MS = withFiles ? "6500" : "3000";
            clients.push(new Client(label, name, env));
        }
        await Promise.all(clients.map(c => c.waitUntil(() => c.marker("JOINED"), JOIN_TIMEOUT, "JOINED")));
        stamp("mainJoined");

        let snap = null;
        if (withFiles) {
            // whichever client wins the snapshot vote uploads and sends SNAP
            snap = await Promise.any(clients.map(c => c.waitUntil(() => c.marker("SNAP_SENT"), SNAP_TIMEOUT, "SNAP_SENT")))
                .catch(e => { throw new Error(`no client sent SNAP: ${e.errors ? e.errors.map(x => x.message).join("; ") : e.message}`); });
            stamp("snapSent");
            await sleep(300); // let the reflector process the SNAP frame
        } else {
            // replay: the late joiner comes once the dropper is back (it drops at 3 s)
            const dropper = clients.find(c => c.name === DROPPER);
            await dropper.waitUntil(() => dropper.marker("REJOINED"), SNAP_TIMEOUT, "dropper REJOINED");
            stamp("dropperRejoined");
        }

        const late = new Client(label, LATE, { ...common, SENDS: String(LATE_SENDS), RUN_MS: "5000" });
        clients.push(late);
        await late.waitUntil(() => late.marker("JOINED"), JOIN_TIMEOUT, "late joiner JOINED");
        stamp("lateJoined");

        await withTimeout(Promise.all(clients.map(c => c.exited)), SCENARIO_TIMEOUT, "all clients to exit");
        stamp("allExited");

        // ---------------- assertions ----------------
        for (const c of clients) {
            assert.ok(c.result, `${c.name} printed no RESULT line (exit ${JSON.stringify(c.exit)}); log ${c.logFile}\n${c.tail()}`);
            assert.equal(c.exit.code, 0, `${c.name} exit code ${JSON.stringify(c.exit)} error=${c.result.error}; log ${c.logFile}\n${c.tail()}`);
            assert.equal(c.result.exitCode, 0, `${c.name} reported exitCode ${c.result.exitCode}: ${c.result.error}`);
        }
        const results = clients.map(c => c.result);
        const byName = Object.fromEntries(results.map(r => [r.name, r]));
        const sessionIds = new Set(results.map(r => r.sessionId));
        assert.equal(sessionIds.size, 1, `all clients must be in one session: ${[...sessionIds]}`);

        for (const r of results) {
            assert.equal(r.sendsDone, r.name === LATE ? LATE_SENDS : MAIN_SENDS, `${r.name} did not publish all its events`);
            assert.equal(r.count, TOTAL, `${r.name}: count ${r.count}, expected ${TOTAL} (perSender ${JSON.stringify(r.perSender)})`);
            assert.equal(r.dups, 0, `${r.name}: duplicate events executed`);
            for (const name of MAIN) assert.equal(r.perSender[name], MAIN_SENDS, `${r.name}: events from ${name}`);
            assert.equal(r.perSender[LATE], LATE_SENDS, `${r.name}: events from ${LATE}`);
            assert.equal(r.logs.cannotRejoin, 0, `${r.name}: a rejoin was not seamless`);
            assert.ok(r.checkpoints.length >= 3, `${r.name}: only ${r.checkpoints.length} checkpoints`);
            const sync0 = r.firstSync;
            assert.ok(sync0 && sync0.idPresent, `${r.name}: SYNC must carry the session id`);
            assert.ok(typeof sync0.timeline === "string" && sync0.timeline.length > 0, `${r.name}: SYNC without timeline`);
            if (r.name !== DROPPER) {
                assert.equal(r.syncs.length, 1, `${r.name} reconnected unexpectedly: ${JSON.stringify(r.syncs)}`);
            }
        }

        // the dropped client must have reconnected and rejoined seamlessly
        const dropper = byName[DROPPER];
        assert.ok(dropper.dropped, `${DROPPER} did not drop its connection (${JSON.stringify(dropper.drop)})`);
        assert.ok(dropper.drop.reconnected, `${DROPPER} did not reconnect after the drop`);
        assert.equal(dropper.syncs.length, 2, `${DROPPER}: expected exactly one re-SYNC: ${JSON.stringify(dropper.syncs)}`);
        assert.equal(dropper.syncs[1].timeline, dropper.syncs[0].timeline, `${DROPPER}: timeline changed across reconnect`);
        assert.ok(dropper.seamlessRejoin,
            `${DROPPER}: rejoin was not seamless (logs ${JSON.stringify(dropper.logs)}, views created ${dropper.viewsCreated}, detached ${dropper.viewsDetached})`);

        // checkpoints are model state: identical wherever they overlap, and the late joiner
        // must have got the ones from before it joined (from the snapshot or the replayed log)
        const reference = assertCheckpointsAgree(results);
        const lateResult = byName[LATE];
        assert.ok(lateResult.checkpoints.length > 0 && lateResult.checkpoints[0][0] < lateResult.firstSync.time,
            `late joiner's checkpoints must start before its join (SYNC time ${lateResult.firstSync.time}): ${JSON.stringify(lateResult.checkpoints)}`);
        assert.deepEqual(lateResult.checkpoints, reference.slice(0, lateResult.checkpoints.length));

        if (!withFiles) {
            assert.equal(lateResult.firstSync.url, "", "without a file server the late joiner's SYNC must not name a snapshot");
            assert.ok(lateResult.firstSync.messages > 0, "late joiner must replay the message log");
            assert.equal(lateResult.initRan, 1, "late joiner must build the model from init() and the log");
            for (const r of results) assert.equal(r.snapsSent.length, 0, `${r.name} sent SNAP without a file server`);
        } else {
            const snaps = results.flatMap(r => r.snapsSent);
            assert.ok(snaps.length >= 1, "no SNAP sent");
            for (const s of snaps) {
                assert.ok(s.url.startsWith(`${FILES}/`), `snapshot URL ${s.url} is not under ${FILES}`);
                assert.equal(s.dissident, null, `dissident snapshot: ${JSON.stringify(s)}`);
            }
            const sync = lateResult.firstSync;
            assert.ok(sync.url, `late joiner's SYNC has no snapshot url: ${JSON.stringify(sync)}`);
            assert.ok(snaps.some(s => s.url === sync.url), `late joiner's SYNC url ${sync.url} is none of the announced snapshots`);
            const announced = snaps.find(s => s.url === sync.url);
            // snapshotTime is not read by the client, but if sent it must be right
            if (sync.snapshotTime !== undefined) assert.equal(sync.snapshotTime, announced.time, "SYNC snapshotTime must be the SNAP time");
            assert.equal(sync.snapshotSeq, announced.seq, "SYNC snapshotSeq must be the SNAP seq");
            assert.equal(lateResult.initRan, 0, "late joiner ran init(): it did not start from the snapshot");
            assert.ok(lateResult.loadedSnapshot, "late joiner did not load the snapshot");
            const get = lateResult.fetches.find(f => f.url === sync.url);
            assert.ok(get && get.status === 200, `late joiner's GET of the snapshot: ${JSON.stringify(lateResult.fetches)}`);
            // the snapshot must still be downloadable, and be what the client uploaded
            const res = await fetch(sync.url);
            assert.equal(res.status, 200, `GET ${sync.url}`);
            const body = Buffer.from(await res.arrayBuffer());
            assert.ok(body.length > 52, `snapshot body too short (${body.length} bytes)`);
            assert.equal(body.subarray(0, 4).toString("latin1"), "CRQ1", "snapshot body must be the client's encrypted blob (starts with CRQ1)");
            phase.snapshotBytes = body.length;
        }

        const dropInfo = dropper.drop;
        t.diagnostic(`${label}: session ${results[0].sessionId}, phases(ms) ${JSON.stringify(phase)}, ` +
            `checkpoints ${reference.length}, late joiner SYNC ${JSON.stringify({ url: lateResult.firstSync.url ? "(snapshot)" : "", messages: lateResult.firstSync.messages, time: lateResult.firstSync.time })}, ` +
            `drop->resync ${dropInfo.reconnectMs} ms (resync SYNC ${JSON.stringify({ messages: dropper.syncs[1].messages, snapshot: !!dropper.syncs[1].url })}), ` +
            `snap ${snap ? `${snap.name}@${snap.time}` : "-"}, logs in ${LOG_DIR}`);
    } catch (err) {
        killAll();
        throw withClientTails(err, clients);
    } finally {
        killAll();
    }
}

// ---------------------------------------------------------------------------
// router scenario: seats from the HTTP API, confirmed by the clients' JOINs, freed on leave
// ---------------------------------------------------------------------------
async function runRouterScenario(t, lib) {
    if (preflightError) throw new Error(`not run: ${preflightError} (see the preflight test)`);
    const label = `${lib}-router`;
    const room = `compat-${label}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;
    const roomPath = `/v1/rooms/${encodeURIComponent(room)}`;
    const host = new URL(httpBase()).host;
    const shardOf = (info, session) => {
        const sh = info.shards.find(s => s.session === session);
        assert.ok(sh, `GET ${roomPath}: no shard for session ${session}: ${JSON.stringify(info)}`);
        return sh;
    };

    const started = performance.now();
    const clients = [];
    const phase = {};
    const stamp = what => { phase[what] = Math.round(performance.now() - started); };
    try {
        // ---- seats ----
        const seats = {};
        for (const user of ROUTER_USERS) {
            const a = await api("POST", `${roomPath}/join`, { user });
            seats[user] = a;
            assert.equal(a.room, room, `join ${user}: room`);
            assert.equal(a.session, room, `join ${user}: the first shard's session is the room name`);
            assert.equal(a.shard, 1, `join ${user}: shard`);
            const ws = new URL(REFLECTOR).protocol;  // ws: or wss: (a reflector serving TLS itself)
            assert.ok(a.reflector.startsWith(`${ws}//${host}/r/`) && a.reflector.length > `${ws}//${host}/r/`.length,
                `join ${user}: reflector ${a.reflector} must be ${ws}//${host}/r/<seat-token>`);
            assert.match(a.files, /^https?:\/\/.+\/files$/, `join ${user}: files`);
            assert.ok(Number.isInteger(a.expires_in_ms) && a.expires_in_ms > 0, `join ${user}: expires_in_ms ${a.expires_in_ms}`);
        }
        const [ua, ub] = ROUTER_USERS.map(u => seats[u]);
        assert.notEqual(ua.reflector, ub.reflector, "two users must get two seat tokens");
        assert.equal(ua.session, ub.session, "both users must be seated in the same session");
        const ttlMs = Math.min(ua.expires_in_ms, ub.expires_in_ms);
        let info = await api("GET", roomPath);
        assert.equal(info.room, room);
        let sh = shardOf(info, ua.session);
        assert.deepEqual([sh.members, sh.reserved], [0, ROUTER_USERS.length], `seats handed out, not yet confirmed: ${JSON.stringify(info)}`);
        stamp("seated");

        // ---- clients through their seat URLs ----
        for (const user of ROUTER_USERS) {
            const seat = seats[user];
            clients.push(new Client(label, user, {
                LIB: lib, REFLECTOR: seat.reflector, FILES: API_TOKEN ? FILES : seat.files, SESSION: seat.session,
                APP: "io.lockstep.compat", PASSWORD: "compat-password",
                SENDS: String(ROUTER_SENDS), SEND_MS: String(SEND_MS), RUN_MS: String(ROUTER_RUN_MS),
                EXPECT_COUNT: String(ROUTER_SENDS * ROUTER_USERS.length), SETTLE_MS: String(10000 * SLOW),
                JOIN_TIMEOUT_MS: String(JOIN_TIMEOUT), HARD_TIMEOUT_MS: String(SCENARIO_TIMEOUT - 5000),
                CLIENT_DEBUG: "session", TRACE_FRAMES: TRACE ? "1" : "0",
            }));
        }
        // JOINED is printed after the SYNC, and the reflector confirms the seat before it sends the SYNC
        await Promise.all(clients.map(c => c.waitUntil(() => c.marker("JOINED"), JOIN_TIMEOUT, "JOINED")));
        stamp("joined");
        info = await api("GET", roomPath);
        sh = shardOf(info, ua.session);
        assert.deepEqual([sh.members, sh.reserved], [ROUTER_USERS.length, 0], `both clients joined through their seats: ${JSON.stringify(info)}`);
        const running = { members: sh.members, reserved: sh.reserved };

        await withTimeout(Promise.all(clients.map(c => c.exited)), SCENARIO_TIMEOUT, "all clients to exit");
        stamp("allExited");

        // ---- seats freed by the clients' session.leave() ----
        // Bounded by ROUTER_FREE_MS and by half the seat TTL counted from now, so that an
        // expiring reservation (what a dropped connection leaves behind) cannot pass for a leave.
        const pollStart = performance.now();
        const deadline = pollStart + Math.max(200, Math.min(ROUTER_FREE_MS * SLOW, ttlMs / 2));
        for (;;) {
            info = await api("GET", roomPath);
            sh = shardOf(info, ua.session);
            if ((sh.members === 0 && sh.reserved === 0) || performance.now() >= deadline) break;
            await sleep(100);
        }
        const freedMs = Math.round(performance.now() - pollStart);
        assert.deepEqual([sh.members, sh.reserved], [0, 0],
            `seats must be freed after session.leave() (waited ${freedMs} ms, seat TTL ${ttlMs} ms): ${JSON.stringify(info)}`);
        stamp("seatsFreed");
        const left = await api("POST", `${roomPath}/leave`, { user: ROUTER_USERS[0] });
        assert.equal(left.freed, false, `the seat of ${ROUTER_USERS[0]} was still held: ${JSON.stringify(left)}`);

        // ---- the replicas ----
        for (const c of clients) {
            assert.ok(c.result, `${c.name} printed no RESULT line (exit ${JSON.stringify(c.exit)}); log ${c.logFile}\n${c.tail()}`);
            assert.equal(c.exit.code, 0, `${c.name} exit code ${JSON.stringify(c.exit)} error=${c.result.error}; log ${c.logFile}\n${c.tail()}`);
            assert.equal(c.result.exitCode, 0, `${c.name} reported exitCode ${c.result.exitCode}: ${c.result.error}`);
        }
        const results = clients.map(c => c.result);
        assert.equal(new Set(results.map(r => r.sessionId)).size, 1, `both clients must be in one session: ${results.map(r => r.sessionId)}`);
        for (const r of results) {
            const seat = seats[r.name];
            assert.ok(r.sockets.length >= 1 && r.sockets[0].url.startsWith(`${seat.reflector}/`),
                `${r.name} must connect through its seat URL ${seat.reflector}/<sessionId>: ${JSON.stringify(r.sockets.map(s => s.url))}`);
            assert.equal(r.syncs.length, 1, `${r.name} reconnected unexpectedly: ${JSON.stringify(r.syncs)}`);
            assert.equal(r.sendsDone, ROUTER_SENDS, `${r.name} did not publish all its events`);
            assert.equal(r.count, ROUTER_SENDS * ROUTER_USERS.length, `${r.name}: count ${r.count} (perSender ${JSON.stringify(r.perSender)})`);
            assert.equal(r.dups, 0, `${r.name}: duplicate events executed`);
            for (const u of ROUTER_USERS) assert.equal(r.perSender[u], ROUTER_SENDS, `${r.name}: events from ${u}`);
            assert.ok(r.checkpoints.length >= 2, `${r.name}: only ${r.checkpoints.length} checkpoints`);
        }
        const reference = assertCheckpointsAgree(results);

        t.diagnostic(`${label}: room ${room}, session ${results[0].sessionId}, phases(ms) ${JSON.stringify(phase)}, ` +
            `running ${JSON.stringify(running)}, seats freed ${freedMs} ms after exit (seat TTL ${ttlMs} ms), ` +
            `checkpoints ${reference.length}, logs in ${LOG_DIR}`);
    } catch (err) {
        killAll();
        throw withClientTails(err, clients);
    } finally {
        killAll();
    }
}

// ---------------------------------------------------------------------------
// a late joiner whose SYNC is over the _CHUNK threshold
// ---------------------------------------------------------------------------
const BIG_SENDS = 100;
const BIG_PAD = 10000;  // ~13.5 KB encrypted: under the clients' 16 KiB payload limit
const BIG_SEND_MS = 75; // one event per SEND: above the clients' 50 ms bundling window and under their 20/s rate limit

async function runBigSyncScenario(t, lib) {
    if (preflightError) throw new Error(`not run: ${preflightError} (see the preflight test)`);
    const label = `${lib}-bigsync`;
    const session = `compat-${label}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;
    const common = {
        LIB: lib, REFLECTOR, SESSION: session, APP: "io.lockstep.compat", PASSWORD: "compat-password",
        JOIN_TIMEOUT_MS: String(JOIN_TIMEOUT), HARD_TIMEOUT_MS: String(SCENARIO_TIMEOUT - 5000),
        EXPECT_COUNT: String(BIG_SENDS), SETTLE_MS: String(30000 * SLOW), CLIENT_DEBUG: "session",
        TRACE_FRAMES: TRACE ? "1" : "0",
    };
    const clients = [];
    try {
        const a = new Client(label, "A", { ...common, SENDS: String(BIG_SENDS), SEND_MS: String(BIG_SEND_MS), PAD: String(BIG_PAD), RUN_MS: "6000" });
        clients.push(a);
        await a.waitUntil(() => a.marker("JOINED"), JOIN_TIMEOUT, "JOINED");
        await a.waitUntil(() => a.marker("SENDS_DONE"), SCENARIO_TIMEOUT, "SENDS_DONE");
        const late = new Client(label, LATE, { ...common, SENDS: "0", RUN_MS: "3000" });
        clients.push(late);
        await late.waitUntil(() => late.marker("JOINED"), JOIN_TIMEOUT, "late joiner JOINED");
        await withTimeout(Promise.all(clients.map(c => c.exited)), SCENARIO_TIMEOUT, "all clients to exit");

        for (const c of clients) {
            assert.ok(c.result, `${c.name} printed no RESULT line (exit ${JSON.stringify(c.exit)}); log ${c.logFile}\n${c.tail()}`);
            assert.equal(c.exit.code, 0, `${c.name} exit code ${JSON.stringify(c.exit)} error=${c.result.error}`);
            assert.equal(c.result.count, BIG_SENDS, `${c.name}: count ${c.result.count}, expected ${BIG_SENDS}`);
            assert.equal(c.result.dups, 0, `${c.name}: duplicate events executed`);
        }
        const lr = late.result;
        const sync = lr.firstSync;
        assert.ok(sync, `the late joiner saw no SYNC (its tracer joins _CHUNK frames): ${JSON.stringify(lr.rx || {})}`);
        assert.ok(sync.bytes > 1000000, `late joiner's SYNC was ${sync.bytes} bytes, expected over 1,000,000`);
        assert.ok(sync.frames >= 2, `late joiner's SYNC came in ${sync.frames} frame(s), expected _CHUNK frames`);
        assert.ok(sync.messages >= BIG_SENDS - 2, `late joiner's SYNC carried only ${sync.messages} messages`);
        assert.equal(lr.initRan, 1, "late joiner must build the model from init() and the log");
        const reference = assertCheckpointsAgree(clients.map(c => c.result));
        assert.ok(reference.length >= 1, "no checkpoint to compare");
        t.diagnostic(`${label}: SYNC ${sync.bytes} bytes in ${sync.frames} frames, ${sync.messages} messages, ` +
            `checkpoints ${reference.length}, logs in ${LOG_DIR}`);
    } catch (err) {
        killAll();
        throw withClientTails(err, clients);
    } finally {
        killAll();
    }
}

// ---------------------------------------------------------------------------
// tests
// ---------------------------------------------------------------------------
let preflightError = "preflight did not run";
test("preflight: reflector configured and reachable", async () => {
    preflightError = "preflight failed";
    assert.ok(REFLECTOR, "set LOCKSTEP_URL, e.g. ws://127.0.0.1:9090/reflector");
    assert.match(REFLECTOR, /^wss?:\/\//, "LOCKSTEP_URL must be a ws:// or wss:// URL");
    await checkReachable(REFLECTOR);
    if (FILES) {
        assert.match(FILES, /^https?:\/\//, "LOCKSTEP_FILES must be an http(s):// URL");
        await checkReachable(FILES);
    }
    preflightError = null;
});

for (const lib of LIBS) {
    describe(`${lib} client`, () => {
        for (const scenario of SCENARIOS) {
            const title = scenario === "snapshot"
                ? "3 clients + drop/seamless rejoin + late joiner from a snapshot (files)"
                : scenario === "bigsync"
                    ? "a late joiner's SYNC over 1 MB arrives in _CHUNK frames and rebuilds the same state"
                : scenario === "router"
                    ? "2 users seated by /v1/rooms/<room>/join share the shard's session; seats confirmed by JOIN, freed by leave"
                    : "3 clients + drop/seamless rejoin + late joiner replaying the log (no files)";
            test(`${scenario}: ${title}`, { timeout: SCENARIO_TIMEOUT + 20000 }, t => {
                // A missing component is a failure, never a skip.
                assert.ok(REFLECTOR, "LOCKSTEP_URL must name the reflector under test");
                if (scenario === "snapshot")
                    assert.ok(FILES, "LOCKSTEP_FILES must name the file endpoint for the snapshot scenario");
                if (scenario === "router") return runRouterScenario(t, lib);
                if (scenario === "bigsync") return runBigSyncScenario(t, lib);
                return runScenario(t, lib, scenario);
            });
        }
    });
}
