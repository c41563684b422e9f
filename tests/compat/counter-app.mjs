#!/usr/bin/env node
// Compatibility test client for the lockstep reflector.
//
// A small Croquet/Multisynq app (a shared counter plus a model clock) that runs
// unmodified against any reflector speaking the Croquet wire protocol, using either
// @multisynq/client (LIB=multisynq, default) or @croquet/croquet (LIB=croquet).
//
// Configured ONLY through environment variables (the libraries parse process.argv,
// e.g. --reflector=..., so command-line flags must not be used):
//
//   LIB              multisynq | croquet                          (default multisynq)
//   REFLECTOR        ws:// URL of the reflector, e.g. ws://127.0.0.1:9090/reflector (required)
//   FILES            http:// URL of the file server, e.g. http://127.0.0.1:9090/files (optional;
//                    without it no snapshot can be uploaded and late joiners replay the log)
//   SESSION          session name                                 (default "compat-counter")
//   APP              appId                                        (default io.lockstep.compat)
//   PASSWORD         session password                             (default "compat-password")
//   NAME             label of this process, used as event sender  (default random)
//   SENDS            number of counter:increment events to publish (default 10)
//   SEND_MS          interval between sends in ms                 (default 250)
//   SEND_START_MS    delay after joining before the first send    (default 300)
//   PAD              characters of padding in every event (a `pad` string; its length
//                    goes into the model's digest)                (default 0)
//   RUN_MS           how long to stay in the session after joining (default 10000)
//   EXPECT_COUNT     if set, after RUN_MS keep running until the model count reaches
//                    this value (bounded by SETTLE_MS)
//   SETTLE_MS        max extra wait for EXPECT_COUNT              (default 15000)
//   DROP_AT_MS       if set, force-drop the WebSocket (TCP) connection once, this many ms
//                    after joining; the client must reconnect and rejoin seamlessly
//   SNAPSHOT_AT      if set, request a snapshot (vm.forceSnapshot()) once model time
//                    reaches this many ms (the client accepts no snapshot poll before
//                    5000 ms of model time, so use >= 5200)
//   CLOCK_MS         model clock period in ms (model option)       (default 100)
//   CHECKPOINT_EVERY record a checkpoint every N clock ticks (model option) (default 20)
//   TPS              reflector ticks per second (Session.join tps) (default: library default)
//   JOIN_TIMEOUT_MS  give up if Session.join() has not resolved   (default 30000)
//   HARD_TIMEOUT_MS  absolute watchdog for the whole process       (default 90000)
//   CLIENT_DEBUG     library debug flags                           (default "session")
//   TRACE_FRAMES     "1" to print every WebSocket frame (truncated) for protocol debugging
//
// RESULT.recvAt lists the wall-clock time (Date.now()) of every RECV received, so a test
// can measure how long reflected events stopped (a failover).
//
// Output (stdout): marker lines starting with "@@ " (JOINED, DROPPED, REJOINED,
// SNAP_SENT, ...) and finally exactly one line `RESULT {json}`. Exit code 0 on a clean
// run; non-zero on errors (see EXIT below).

const EXIT = { OK: 0, ERROR: 2, BAD_ENV: 3, LEAVE_TIMEOUT: 4, WATCHDOG: 5, JOIN_TIMEOUT: 6 };

const env = process.env;
const num = (name, dflt) => {
    if (env[name] === undefined || env[name] === "") return dflt;
    const n = Number(env[name]);
    if (!Number.isFinite(n)) { console.error(`bad number in ${name}: ${env[name]}`); process.exit(EXIT.BAD_ENV); }
    return n;
};

const LIB = env.LIB || "multisynq";
const REFLECTOR = env.REFLECTOR;
const FILES = env.FILES || "";
const SESSION = env.SESSION || "compat-counter";
const APP = env.APP || "io.lockstep.compat";
const PASSWORD = env.PASSWORD || "compat-password";
const NAME = env.NAME || Math.random().toString(36).slice(2, 8);
const SENDS = num("SENDS", 10);
const SEND_MS = num("SEND_MS", 250);
const SEND_START_MS = num("SEND_START_MS", 300);
const PAD = num("PAD", 0);
const RUN_MS = num("RUN_MS", 10000);
const EXPECT_COUNT = num("EXPECT_COUNT", null);
const SETTLE_MS = num("SETTLE_MS", 15000);
const DROP_AT_MS = num("DROP_AT_MS", null);
const SNAPSHOT_AT = num("SNAPSHOT_AT", null);
const CLOCK_MS = num("CLOCK_MS", 100);
const CHECKPOINT_EVERY = num("CHECKPOINT_EVERY", 20);
const TPS = num("TPS", null);
const JOIN_TIMEOUT_MS = num("JOIN_TIMEOUT_MS", 30000);
const HARD_TIMEOUT_MS = num("HARD_TIMEOUT_MS", 90000);
const CLIENT_DEBUG = env.CLIENT_DEBUG ?? "session";
const TRACE_FRAMES = env.TRACE_FRAMES === "1";

if (!REFLECTOR || !/^wss?:\/\//.test(REFLECTOR)) {
    console.error("REFLECTOR must be a ws:// or wss:// URL");
    process.exit(EXIT.BAD_ENV);
}
if (!["multisynq", "croquet"].includes(LIB)) {
    console.error("LIB must be multisynq or croquet");
    process.exit(EXIT.BAD_ENV);
}

const t0 = performance.now();
const elapsed = () => Math.round(performance.now() - t0);
const marker = (what, data = {}) => process.stdout.write(`@@ ${what} ${JSON.stringify({ name: NAME, t: elapsed(), ...data })}\n`);

// ---------------------------------------------------------------------------
// Observation state (view side only, never model state)
// ---------------------------------------------------------------------------
const obs = {
    initRan: 0,            // how often the model's init() ran in this process (0 => state came from a snapshot)
    viewsCreated: 0,
    viewsDetached: 0,
    sockets: [],           // per WebSocket: {url, opened, closeCode, ...}
    rx: {},                // incoming frame counts per action
    tx: {},                // outgoing frame counts per action
    syncs: [],             // summary of every SYNC received
    snapsSent: [],         // SNAP frames this process sent
    fetches: [],           // main-thread fetch() calls (snapshot downloads)
    logs: { seamless: 0, cannotRejoin: 0, uploadFailed: 0, snapshotRejected: 0, errors: [] },
    drop: null,
    sendsDone: 0,
    sendsDiscarded: 0,
    recvAt: [],            // wall-clock ms (Date.now()) of each RECV received (the first 5000)
};
globalThis.__lockstepObs = obs;

// watch the library's log output for the facts we want to verify
for (const level of ["log", "info", "warn", "error"]) {
    const orig = console[level].bind(console);
    console[level] = (...args) => {
        try {
            const text = args.map(a => (typeof a === "string" ? a : a instanceof Error ? a.message : "")).join(" ");
            if (text.includes("seamless rejoin successful")) obs.logs.seamless++;
            if (text.includes("cannot rejoin seamlessly")) obs.logs.cannotRejoin++;
            if (text.includes("Failed to upload snapshot")) obs.logs.uploadFailed++;
            if (text.includes("rejecting snapshot poll")) obs.logs.snapshotRejected++;
            if (level === "error" && obs.logs.errors.length < 20) obs.logs.errors.push(text.slice(0, 300));
        } catch (e) { /* ignore */ }
        orig(`[${NAME} +${elapsed()}ms]`, ...args);
    };
}

// Declared before the handlers: an import that fails at start calls finish() at once.
let finished = false;
process.on("unhandledRejection", err => {
    console.error("unhandled rejection:", err && (err.stack || err));
    finish(EXIT.ERROR, `unhandled rejection: ${err && (err.message || err)}`);
});
process.on("uncaughtException", err => {
    console.error("uncaught exception:", err && (err.stack || err));
    finish(EXIT.ERROR, `uncaught exception: ${err && (err.message || err)}`);
});
const watchdog = setTimeout(() => finish(EXIT.WATCHDOG, "watchdog timeout"), HARD_TIMEOUT_MS);

// In Node the file-server code paths need a window.location (see REAL_CLIENT.md).
if (FILES) globalThis.window = { location: new URL("http://localhost/") };

const lib = LIB === "croquet" ? await import("@croquet/croquet") : await import("@multisynq/client");
const { Model, View, Session } = lib.Model ? lib : lib.default;

// ---------------------------------------------------------------------------
// WebSocket tracing. Both libraries assign globalThis.WebSocket = ws.WebSocket when
// they load and look the global up each time they connect, so replacing it *after*
// the import gives us every socket the client opens.
// ---------------------------------------------------------------------------
const BaseWebSocket = globalThis.WebSocket;
let currentSocket = null;

function summarizeFrame(dir, sock, data) {
    const text = typeof data === "string" ? data : Buffer.isBuffer(data) ? data.toString("utf8") : String(data);
    if (TRACE_FRAMES) process.stdout.write(`@@ FRAME ${dir} #${sock.__idx} ${text.slice(0, 400)}\n`);
    if (text.startsWith("_CHUNK")) {
        // Count the chunk, and look at the whole message once its last chunk is here.
        const counts = dir === "rx" ? obs.rx : obs.tx;
        counts._CHUNK = (counts._CHUNK || 0) + 1;
        const key = `__chunk_${dir}`;
        if (text[6] === "1") sock[key] = { parts: [], frames: 0 };
        if (!sock[key]) return;
        sock[key].parts.push(text.slice(8));
        sock[key].frames++;
        if (text[7] !== "1") return;
        const whole = sock[key];
        sock[key] = null;
        return summarizeMessage(dir, sock, whole.parts.join(""), whole.frames);
    }
    return summarizeMessage(dir, sock, text, 1);
}

function summarizeMessage(dir, sock, text, frames) {
    let msg;
    try { msg = JSON.parse(text); } catch (e) { return; }
    const action = msg && msg.action || "?";
    const counts = dir === "rx" ? obs.rx : obs.tx;
    counts[action] = (counts[action] || 0) + 1;
    if (dir === "rx" && action === "RECV" && obs.recvAt.length < 5000) obs.recvAt.push(Date.now());
    if (dir === "rx" && action === "SYNC") {
        const a = msg.args || {};
        const s = {
            socket: sock.__idx, t: elapsed(), at: Date.now(), url: a.url, messages: (a.messages || []).length,
            time: a.time, seq: a.seq, snapshotTime: a.snapshotTime, snapshotSeq: a.snapshotSeq,
            timeline: a.timeline, tove: !!a.tove, reflector: a.reflector, idPresent: !!msg.id,
            bytes: text.length, frames,
        };
        obs.syncs.push(s);
        sock.__syncAt = performance.now();
        if (obs.drop && obs.drop.socket !== sock.__idx && obs.drop.reconnectMs === null) {
            obs.drop.reconnectMs = Math.round(performance.now() - obs.drop.at);
            obs.drop.reconnected = true;
            obs.drop.resyncSocket = sock.__idx;
            marker("REJOINED", { reconnectMs: obs.drop.reconnectMs, sync: s });
        }
    }
    if (dir === "tx" && action === "SNAP") {
        const a = msg.args || {};
        const s = { time: a.time, seq: a.seq, hash: a.hash, url: a.url, dissident: a.dissident };
        obs.snapsSent.push(s);
        marker("SNAP_SENT", s);
    }
    if (dir === "tx" && action === "JOIN") {
        sock.__joinArgs = Object.keys(msg.args || {});
    }
}

class TracingWebSocket extends BaseWebSocket {
    constructor(...args) {
        super(...args);
        const idx = obs.sockets.length;
        Object.defineProperty(this, "__idx", { value: idx });
        const info = { idx, url: String(args[0]), t: elapsed(), opened: null, closeCode: null, closeReason: null };
        obs.sockets.push(info);
        this.addEventListener("open", () => { info.opened = elapsed(); currentSocket = this; });
        this.addEventListener("message", ev => { try { summarizeFrame("rx", this, ev.data); } catch (e) { /* ignore */ } });
        this.addEventListener("close", ev => { info.closeCode = ev.code; info.closeReason = String(ev.reason || ""); info.closed = elapsed(); });
    }
    send(data, ...rest) {
        try { summarizeFrame("tx", this, data); } catch (e) { /* ignore */ }
        // A WebSocket that is closing (the server's close arrived, its close event did not
        // yet) discards what is sent: the library's loss, which no reflector can see.
        if (this.readyState !== BaseWebSocket.OPEN && String(data).includes('"action":"SEND"'))
            obs.sendsDiscarded++;
        return super.send(data, ...rest);
    }
}
globalThis.WebSocket = TracingWebSocket;

// record main-thread fetches (snapshot / persistence downloads happen here; uploads run in a worker)
const origFetch = globalThis.fetch;
globalThis.fetch = async (input, init = {}) => {
    const url = typeof input === "string" ? input : input && input.url || String(input);
    const rec = { method: (init && init.method) || "GET", url, t: elapsed(), status: null, bytes: null };
    if (obs.fetches.length < 50) obs.fetches.push(rec);
    try {
        const res = await origFetch(input, init);
        rec.status = res.status;
        rec.bytes = Number(res.headers.get("content-length")) || null;
        return res;
    } catch (e) {
        rec.error = String(e && e.message || e);
        throw e;
    }
};

// ---------------------------------------------------------------------------
// The shared model
// ---------------------------------------------------------------------------
class CounterModel extends Model {
    init(options) {
        super.init(options);
        this.clockMs = options && options.clockMs || 100;
        this.checkpointEvery = options && options.checkpointEvery || 20;
        this.count = 0;
        this.clock = 0;
        this.digest = 0x811c9dc5; // FNV-1a 32-bit offset basis
        this.viewJoins = 0;
        this.viewExits = 0;
        this.dups = 0;
        this.lastN = {};          // sender -> highest n seen
        this.perSender = {};      // sender -> number of events
        this.checkpoints = [];    // [modelTime, clock, count, viewCount, digestHex]
        this.subscribe("counter", "increment", this.onIncrement);
        this.subscribe(this.sessionId, "view-join", this.onViewJoin);
        this.subscribe(this.sessionId, "view-exit", this.onViewExit);
        this.future(this.clockMs).tick();
        // side channel for the test (not model state): init ran in this process
        if (globalThis.__lockstepObs) globalThis.__lockstepObs.initRan++;
    }

    mix(str) {
        let h = this.digest;
        for (let i = 0; i < str.length; i++) {
            h ^= str.charCodeAt(i);
            h = Math.imul(h, 16777619) >>> 0;
        }
        this.digest = h;
    }

    onIncrement(data) {
        const from = String(data && data.from);
        const n = Number(data && data.n);
        this.count++;
        this.perSender[from] = (this.perSender[from] || 0) + 1;
        if (from in this.lastN && n <= this.lastN[from]) this.dups++;
        else this.lastN[from] = n;
        const pad = data && typeof data.pad === "string" ? data.pad : "";
        this.mix(`${this.now()}:${from}:${n}:${pad.length}:${pad.slice(0, 1)}`);
    }

    onViewJoin(viewId) {
        this.viewJoins++;
        this.mix(`${this.now()}:join:${viewId}`);
    }

    onViewExit(viewId) {
        this.viewExits++;
        this.mix(`${this.now()}:exit:${viewId}`);
    }

    tick() {
        this.clock++;
        if (this.clock % this.checkpointEvery === 0) {
            this.checkpoints.push([this.now(), this.clock, this.count, this.viewCount, this.digest.toString(16).padStart(8, "0")]);
        }
        this.future(this.clockMs).tick();
    }
}
CounterModel.register("CounterModel");

class CounterView extends View {
    constructor(model) {
        super(model);
        this.model = model;
        obs.viewsCreated++;
    }

    detach() {
        obs.viewsDetached++;
        super.detach();
    }
}

// ---------------------------------------------------------------------------
// Run
// ---------------------------------------------------------------------------
let session = null;
let stepTimer = null;

function modelSummary() {
    const m = session && session.model;
    if (!m) return null;
    const view = session.view;
    return {
        time: view ? view.now() : null, count: m.count, clock: m.clock, digest: m.digest.toString(16).padStart(8, "0"),
        viewJoins: m.viewJoins, viewExits: m.viewExits, viewCount: m.viewCount, dups: m.dups,
        perSender: { ...m.perSender }, lastN: { ...m.lastN },
        checkpoints: m.checkpoints.map(c => c.slice()),
    };
}

function result(exitCode, error) {
    const m = modelSummary();
    const firstSync = obs.syncs[0] || null;
    return {
        name: NAME, lib: LIB, libVersion: lib.VERSION || (lib.default && lib.default.VERSION) || null,
        exitCode, error: error || null,
        sessionId: session && session.id || null, viewId: session && session.view && session.view.viewId || null,
        count: m && m.count, clock: m && m.clock, digest: m && m.digest, modelTime: m && m.time,
        viewJoins: m && m.viewJoins, viewExits: m && m.viewExits, viewCount: m && m.viewCount,
        dups: m && m.dups, perSender: m && m.perSender, lastN: m && m.lastN,
        checkpoints: m ? m.checkpoints : [],
        sendsDone: obs.sendsDone,
        sendsDiscarded: obs.sendsDiscarded,
        initRan: obs.initRan,
        loadedSnapshot: !!(firstSync && firstSync.url) && obs.initRan === 0,
        firstSync,
        syncs: obs.syncs,
        viewsCreated: obs.viewsCreated, viewsDetached: obs.viewsDetached,
        dropped: !!obs.drop,
        seamlessRejoin: !!obs.drop && obs.drop.reconnected === true && obs.logs.seamless > 0 &&
            obs.logs.cannotRejoin === 0 && obs.viewsCreated === 1 && obs.viewsDetached === 0,
        drop: obs.drop,
        snapsSent: obs.snapsSent,
        recvAt: obs.recvAt,
        fetches: obs.fetches,
        rx: obs.rx, tx: obs.tx,
        sockets: obs.sockets,
        logs: obs.logs,
        elapsedMs: elapsed(),
    };
}

async function finish(exitCode, error) {
    if (finished) return;
    finished = true;
    let res;
    try { res = result(exitCode, error); } catch (e) { res = { name: NAME, exitCode, error: `${error || ""} / result failed: ${e.message}` }; }
    let leaveCode = exitCode;
    // finish() may run before the module body reached these bindings (a failed import).
    const live = (() => { try { return session; } catch { return null; } })();
    if (live) {
        try {
            const left = await Promise.race([
                Promise.resolve(live.leave()).then(() => true),
                new Promise(resolve => setTimeout(() => resolve(false), 5000)),
            ]);
            if (!left && leaveCode === EXIT.OK) { leaveCode = EXIT.LEAVE_TIMEOUT; res.error = "session.leave() timed out"; }
        } catch (e) {
            if (leaveCode === EXIT.OK) { leaveCode = EXIT.ERROR; res.error = `leave failed: ${e.message}`; }
        }
    }
    res.exitCode = leaveCode;
    process.stdout.write(`RESULT ${JSON.stringify(res)}\n`);
    try { if (stepTimer) clearInterval(stepTimer); } catch { /* not initialized yet */ }
    clearTimeout(watchdog);
    // the library keeps timers and a worker alive: exit explicitly
    process.stdout.write("", () => process.exit(leaveCode));
}

const joinOptions = {
    reflector: REFLECTOR,
    apiKey: "none",
    appId: APP,
    name: SESSION,
    password: PASSWORD,
    model: CounterModel,
    view: CounterView,
    step: "manual",
    options: { clockMs: CLOCK_MS, checkpointEvery: CHECKPOINT_EVERY },
};
if (FILES) joinOptions.files = FILES;
if (TPS !== null) joinOptions.tps = TPS;
if (CLIENT_DEBUG) joinOptions.debug = CLIENT_DEBUG;

// step the session from a timer (Node has no animation frames); starts before join resolves
let sessionForStep = null;
const joinPromise = Session.join(joinOptions).then(s => { sessionForStep = s; return s; });
stepTimer = setInterval(() => {
    if (!sessionForStep) return;
    try { sessionForStep.step(performance.now()); } catch (e) { console.error("step error", e); }
    onStep();
}, 20);

const joinTimeout = new Promise((_, reject) => setTimeout(() => reject(new Error("join timeout")), JOIN_TIMEOUT_MS));
try {
    session = await Promise.race([joinPromise, joinTimeout]);
} catch (e) {
    console.error("join failed:", e && (e.stack || e));
    await finish(e && e.message === "join timeout" ? EXIT.JOIN_TIMEOUT : EXIT.ERROR, `join failed: ${e && e.message || e}`);
}
const joinedAt = performance.now();
marker("JOINED", {
    sessionId: session.id, viewId: session.view && session.view.viewId,
    modelTime: session.view.now(), count: session.model.count, initRan: obs.initRan, sync: obs.syncs[0] || null,
});

let snapshotRequested = false;
function onStep() {
    if (!session || finished) return;
    if (SNAPSHOT_AT !== null && !snapshotRequested && session.view) {
        const now = session.view.now();
        if (now >= SNAPSHOT_AT) {
            snapshotRequested = true;
            const vm = session.view.realm && session.view.realm.vm || globalThis.MULTISYNQVM || globalThis.CROQUETVM;
            if (vm && typeof vm.forceSnapshot === "function") {
                marker("SNAPSHOT_REQUESTED", { modelTime: now });
                vm.forceSnapshot();
            } else {
                marker("SNAPSHOT_UNAVAILABLE", { modelTime: now });
            }
        }
    }
}

// publish increments
let sent = 0;
if (SENDS > 0) {
    setTimeout(function sendOne() {
        if (finished) return;
        sent++;
        try {
            const view = session.view;
            const event = { from: NAME, n: sent };
            if (PAD > 0) event.pad = String.fromCharCode(97 + sent % 26).repeat(PAD);
            view.publish("counter", "increment", event);
            obs.sendsDone = sent;
        } catch (e) {
            console.error("publish failed", e);
        }
        if (sent < SENDS) setTimeout(sendOne, SEND_MS);
        else marker("SENDS_DONE", { sent });
    }, SEND_START_MS);
}

// force-drop the connection once
if (DROP_AT_MS !== null) {
    setTimeout(() => {
        if (finished) return;
        const sock = currentSocket;
        if (!sock || sock.readyState !== BaseWebSocket.OPEN) {
            marker("DROP_SKIPPED", { reason: "no open socket" });
            return;
        }
        obs.drop = { at: performance.now(), atElapsed: elapsed(), socket: sock.__idx, modelTime: session.view ? session.view.now() : null,
            method: "terminate", reconnected: false, reconnectMs: null, resyncSocket: null };
        marker("DROPPED", { socket: sock.__idx, modelTime: obs.drop.modelTime });
        // ws.terminate() destroys the TCP socket without a closing handshake; the client sees
        // close code 1006 (< 4100) and reconnects immediately
        sock.terminate();
    }, DROP_AT_MS);
}

// end of run
setTimeout(async () => {
    if (finished) return;
    if (EXPECT_COUNT !== null) {
        const deadline = performance.now() + SETTLE_MS;
        while (!finished && session.model.count < EXPECT_COUNT && performance.now() < deadline) {
            await new Promise(r => setTimeout(r, 100));
        }
    }
    // give a pending rejoin a moment to complete before judging it
    if (obs.drop && !obs.drop.reconnected) {
        const deadline = performance.now() + 5000;
        while (!finished && !obs.drop.reconnected && performance.now() < deadline) await new Promise(r => setTimeout(r, 100));
    }
    await finish(EXIT.OK);
}, Math.max(0, RUN_MS - (performance.now() - joinedAt)));
