#!/usr/bin/env node
// The C++ SDK across a failover (docs/durability.md, "Cluster"): the same cluster as
// run-failover.mjs (three reflectors, a real redis-server, HAProxy hashing the URL path),
// with two lockstep-counter processes (the SDK's counter example) joining one session
// through HAProxy and uploading snapshots through HAProxy's /files. The reflector serving
// the session is killed with SIGKILL. Afterwards:
//   - both replicas agree: count, digest, and every checkpoint both recorded;
//   - no increment is lost beyond the one frame per client that may have been in flight
//     (the SDK queues what is published while disconnected and sends it after the SYNC);
//   - each replica reconnected and rejoined seamlessly (no rebuild): the session kept its
//     timeline and its log, and model time went on past the kill;
//   - no divergence was reported.
//
//   LOCKSTEP_REFLECTOR_BIN=build/bin/lockstep-reflector LOCKSTEP_COUNTER_BIN=build/bin/lockstep-counter \
//     node --test tests/compat/run-sdk-failover.mjs
//
// Environment: as run-failover.mjs, plus LOCKSTEP_COUNTER_BIN (required).

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createWriteStream, readFileSync } from "node:fs";
import { join } from "node:path";
import { children, killAll, sleep, scenarioEnv, startCluster, owner } from "./harness.mjs";

const { BIN, SLOW, LOG_DIR } = scenarioEnv("sdk-failover");
const COUNTER = process.env.LOCKSTEP_COUNTER_BIN || "";
const SENDS = 30;        // per client, one every SEND_MS
const SEND_MS = 250;
const KILL_AT_MS = 4500; // after the first snapshot (model time 2 s) and before the last send
after(killAll);

/** One lockstep-counter process; resolves {code, logFile, result, killAt}. */
function runCounter(name, args) {
    const logFile = join(LOG_DIR, `sdk-${name}.log`);
    const log = createWriteStream(logFile);
    const proc = spawn(COUNTER, args, { stdio: ["ignore", "pipe", "pipe"] });
    children.add(proc);
    let out = "";
    proc.stdout.on("data", c => { log.write(c); out += c.toString("utf8"); });
    proc.stderr.on("data", c => log.write(c));
    const hard = setTimeout(() => proc.kill("SIGKILL"), 90000 * SLOW);
    return new Promise(resolve => proc.on("exit", code => {
        clearTimeout(hard);
        children.delete(proc);
        log.end();
        const line = out.split("\n").find(l => l.startsWith("RESULT "));
        resolve({ name, code, logFile, result: line ? JSON.parse(line.slice(7)) : null });
    }));
}

async function waitFor(probe, ms, what) {
    const until = Date.now() + ms;
    while (Date.now() < until) {
        const v = await probe().catch(() => null);
        if (v) return v;
        await sleep(100);
    }
    throw new Error(`timed out waiting for ${what}`);
}

function tail(r, lines = 20) {
    return `--- ${r.logFile}\n${readFileSync(r.logFile, "utf8").split("\n").slice(-lines).join("\n")}`;
}

/** Seats: both counters ask the router (through HAProxy) for a seat in one room and
 *  connect to the seat URL it hands out, which names HAProxy (every reflector's
 *  --public-url); after the kill they retry that same URL. */
async function sdkFailover({ seats }) {
    assert.ok(BIN, "LOCKSTEP_REFLECTOR_BIN must name the reflector binary");
    assert.ok(COUNTER, "LOCKSTEP_COUNTER_BIN must name the lockstep-counter binary");
    const cluster = await startCluster({ bin: BIN, logDir: LOG_DIR, args: ["--drain-timeout-ms", "2000"],
        publicUrl: seats });
    const { ports, reflectors, hport } = cluster;
    const name = `sdk-failover-${seats ? "seat" : "url"}-${Date.now()}`;
    const where = seats ? ["--router", `http://127.0.0.1:${hport}`, "--room", name]
        : ["--reflector", `ws://127.0.0.1:${hport}/reflector`, "--session", name];
    const common = [...where, "--files", `http://127.0.0.1:${hport}/files`, "--sends", String(SENDS),
        "--send-ms", String(SEND_MS), "--snapshot-ms", "2000", "--run-ms", String(16000 * SLOW)];
    const a = runCounter(`${name}-A`, [...common, ...(seats ? ["--user", "ua"] : [])]);
    await sleep(300);
    const b = runCounter(`${name}-B`, [...common, ...(seats ? ["--user", "ub"] : [])]);
    // Through the router the session's name is the room's shard, known once a client joined.
    let session = name;
    if (seats) {
        const room = await waitFor(async () => {
            const r = await fetch(`http://127.0.0.1:${hport}/v1/rooms/${name}`);
            const j = r.status === 200 ? await r.json() : null;
            return j && j.shards && j.shards.length ? j : null;
        }, 10000 * SLOW, "the room's shard");
        session = room.shards[0].session;
    }
    let victim = -1;
    try {
        await sleep(KILL_AT_MS);
        victim = await owner(ports, session);
        assert.ok(victim >= 0, "no reflector lists the session live");
        await reflectors[victim].stop("SIGKILL");
        const results = await Promise.all([a, b]);
        try {
            const now = await owner(ports, session);
            for (const r of results) {
                assert.ok(r.result, `no RESULT from ${r.name}`);
                const res = r.result;
                assert.equal(r.code, 0, `${r.name} exit ${r.code}: ${res.error}`);
                assert.equal(res.sent, SENDS, `${r.name} published ${res.sent} of ${SENDS}`);
                assert.ok(res.stats.seamless_rejoins >= 1, `${r.name}: ${res.stats.seamless_rejoins} seamless rejoins`);
                assert.equal(res.stats.rebuilds, 0, `${r.name}: rebuilt its replica`);
                assert.equal(res.stats.divergences, 0, `${r.name}: divergence reported`);
                assert.ok(res.model_time > KILL_AT_MS, `${r.name}: model time ${res.model_time} did not go on`);
            }
            const [ra, rb] = results.map(r => r.result);
            if (seats) {
                assert.equal(ra.session_name, session, "A's seat is not in the room's shard");
                assert.equal(rb.session_name, session, "B's seat is not in the room's shard");
            }
            assert.ok(ra.stats.snapshots_uploaded + rb.stats.snapshots_uploaded >= 1, "no snapshot uploaded");
            assert.equal(ra.session_id, rb.session_id, "the replicas ended in different sessions");
            assert.equal(ra.count, rb.count, "the replicas differ in count");
            assert.equal(ra.digest, rb.digest, "the replicas differ in state");
            const lost = 2 * SENDS - ra.count;
            assert.ok(lost >= 0 && lost <= 2, `count ${ra.count} of ${2 * SENDS}`);
            // Checkpoints are [model_time, clock, count, views, digest]; every one both
            // replicas recorded at the same model time must be equal.
            const byTime = new Map(rb.checkpoints.map(c => [c[0], JSON.stringify(c)]));
            const shared = ra.checkpoints.filter(c => byTime.has(c[0]));
            assert.ok(shared.some(c => c[0] > KILL_AT_MS), "no common checkpoint after the kill");
            for (const c of shared) assert.equal(JSON.stringify(c), byTime.get(c[0]), `checkpoint at ${c[0]} differs`);
            console.log(`SDK FAILOVER (${seats ? "router seat URLs" : "reflector URL"}) kill -9 of r${victim + 1}, session now on r${now + 1}: count ${ra.count} of ` +
                `${2 * SENDS}, ${shared.length} common checkpoints, model time ${ra.model_time} ms`);
        } catch (e) {
            e.message += `\n${results.map(r => tail(r)).join("\n")}`;
            throw e;
        }
    } finally {
        await cluster.stop();
    }
}

test("the C++ SDK counter keeps its session across a kill -9 of its reflector (3 reflectors, Redis, HAProxy)",
    { timeout: 150000 * SLOW }, () => sdkFailover({ seats: false }));

test("router seat URLs name the balancer and still work after a kill -9 of the session's reflector",
    { timeout: 150000 * SLOW }, () => sdkFailover({ seats: true }));
