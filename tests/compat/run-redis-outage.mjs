#!/usr/bin/env node
// A Redis outage in a cluster (docs/durability.md, "Redis outages"): two
// lockstep-reflector processes share a real redis-server behind a real HAProxy that
// hashes the URL path. Two counter-app.mjs processes (unmodified @multisynq/client) play
// a session; then redis-server is frozen with SIGSTOP for 5 s. Meanwhile a third app C
// joins the same session directly at the other reflector (a takeover attempted during the
// outage). After SIGCONT, and some seconds later, the reflector now serving the session
// is killed with SIGKILL, so the apps end on the other one, which takes the session over
// from Redis: whatever the outage's events did not bring to Redis would be missing there.
// Afterwards:
//   - events kept flowing while Redis was stopped (reflected events at A and B during the
//     outage, and the longest pause in them is measured and bounded);
//   - A and B did not reconnect (nor rebuild) until the kill;
//   - C's JOIN waited instead of splitting the session: one timeline, and C agrees with A
//     at every checkpoint it has;
//   - nothing is lost: every increment of A, B and C is counted, once, by all three, also
//     after the takeover from Redis;
//   - the owner logged that it kept its sessions running, and Redis' outage rule fired.
//
//   LOCKSTEP_REFLECTOR_BIN=build/bin/lockstep-reflector node --test tests/compat/run-redis-outage.mjs
//
// Environment: LOCKSTEP_REFLECTOR_BIN (required), COMPAT_LOG_DIR (default: a fresh temp
// dir), COMPAT_SLOW (factor >= 1 for the timeouts). Needs redis-server and haproxy.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { killAll, sleep, scenarioEnv, startCluster, owner, metric, runClient, tails, assertAgree, waitForMarker }
    from "./harness.mjs";

const { BIN, SLOW, LOG_DIR } = scenarioEnv("redis-outage");
const SENDS = 56;          // per client A and B, one every SEND_MS: 14 s (past the outage)
const SEND_MS = 250;
const C_SENDS = 8;
const STOP_AT_MS = 7000;   // after A's snapshot at model time 5.2 s
const OUTAGE_MS = 5000;
const KILL_AFTER_MS = 2500; // after SIGCONT, and once every app sent all it sends
// The owner holds output until Redis has been silent for half a lease (1 s with the
// default --lease-ms 2000) and it asked its peer; then output flows without Redis.
const MAX_PAUSE_MS = 2500;
after(killAll);

function logOf(i, run = 1) {
    return readFileSync(join(LOG_DIR, `reflector-r${i + 1}-${run}.log`), "utf8");
}

async function outage() {
    assert.ok(BIN, "LOCKSTEP_REFLECTOR_BIN must name the reflector binary");
    // No hand-off on JOIN (C's JOIN is forwarded to the owner instead), so the outage is
    // the only thing that could make A and B reconnect before the kill.
    const cluster = await startCluster({ bin: BIN, logDir: LOG_DIR, n: 2,
        args: ["--drain-timeout-ms", "2000", "--handoff-min-interval-ms", "0"] });
    const { ports, reflectors, redis } = cluster;
    const session = `outage-${Date.now()}`;
    const total = 2 * SENDS + C_SENDS;
    const env = {
        ...cluster.env, SESSION: session, SENDS: String(SENDS), SEND_MS: String(SEND_MS), RUN_MS: "23000",
        EXPECT_COUNT: String(total), SETTLE_MS: "10000", HARD_TIMEOUT_MS: String(90000 * SLOW),
    };
    const a = runClient("A", { ...env, SNAPSHOT_AT: "5200" }, LOG_DIR);
    await sleep(300);
    const b = runClient("B", env, LOG_DIR);
    let c = null;
    try {
        await sleep(STOP_AT_MS);
        const first = await owner(ports, session);
        assert.ok(first >= 0, "no reflector lists the session live");
        const other = 1 - first;
        redis.proc.kill("SIGSTOP");
        const stopAt = Date.now();
        await sleep(1000);
        // A takeover attempt: C's JOIN reaches the reflector that does not own the session.
        c = runClient("C", {
            ...env, SENDS: String(C_SENDS), SEND_START_MS: "300", RUN_MS: "14000",
            REFLECTOR: `ws://127.0.0.1:${ports[other]}/reflector`, FILES: `http://127.0.0.1:${ports[other]}/files`,
        }, LOG_DIR);
        await sleep(OUTAGE_MS - 2000);
        const outageGauge = await metric(ports[first], "lockstep_cluster_outage");
        await sleep(1000);
        redis.proc.kill("SIGCONT");
        const contAt = Date.now();
        console.log(`REDIS OUTAGE: redis-server stopped for ${contAt - stopAt} ms; session on r${first + 1}`);
        await sleep(KILL_AFTER_MS);
        // The kill tests what reached Redis of the outage's events, not a SEND in flight
        // at the kill (that one is lost with the process: the client does not resend
        // it, and nobody saw it reflected). So every app has sent all it sends, and half
        // a second later it is reflected and in Redis.
        for (const who of ["A", "B", "C"])
            await waitForMarker(LOG_DIR, session, who, "SENDS_DONE", 10000 * SLOW);
        await sleep(500);
        const victim = await owner(ports, session);
        assert.ok(victim >= 0, "no reflector lists the session live after the outage");
        const killAt = Date.now();
        await reflectors[victim].stop("SIGKILL");
        const [ra, rb, rc] = await Promise.all([a, b, c]);
        try {
            for (const r of [ra, rb, rc])
                assert.equal(r.code, 0, `${r.result && r.result.name} exit ${r.code}: ${r.result && r.result.error}`);
            // Events flowed during the outage, with a bounded pause.
            for (const r of [ra, rb]) {
                const during = r.result.recvAt.filter(t => t > stopAt && t < contAt);
                const marks = [stopAt, ...during, contAt];
                let pause = 0;
                for (let i = 1; i < marks.length; i++) pause = Math.max(pause, marks[i] - marks[i - 1]);
                console.log(`REDIS OUTAGE: ${r.result.name} got ${during.length} reflected events while Redis was ` +
                    `stopped; longest pause ${pause} ms`);
                assert.ok(during.length >= 8, `${r.result.name}: only ${during.length} events during the outage`);
                assert.ok(pause <= MAX_PAUSE_MS * SLOW, `${r.result.name}: events stopped for ${pause} ms`);
                // The outage made neither A nor B reconnect (so nothing was rebuilt): one
                // SYNC before the kill.
                const before = r.result.syncs.filter(s => s.at < killAt);
                assert.equal(before.length, 1, `${r.result.name}: ${before.length} SYNCs before the kill`);
            }
            // One session: one timeline for everybody, C agrees with A wherever both looked.
            const timelines = new Set([ra, rb, rc].flatMap(r => r.result.syncs.map(s => s.timeline)));
            assert.equal(timelines.size, 1, `timelines: ${[...timelines].join(", ")}`);
            const common = rc.result.checkpoints.filter(cp => ra.result.checkpoints.some(x => x[0] === cp[0]));
            assert.ok(common.length >= 3, `C: only ${common.length} checkpoints in common with A`);
            for (const cp of common)
                assert.deepEqual(ra.result.checkpoints.find(x => x[0] === cp[0]), cp, `C and A at model time ${cp[0]}`);
            // Nothing lost, nothing twice, also after the takeover from Redis.
            for (const r of [ra, rb, rc]) {
                for (const who of ["A", "B"])
                    assert.equal(r.result.perSender[who], SENDS, `${r.result.name}: events of ${who}`);
                assert.equal(r.result.perSender.C, C_SENDS, `${r.result.name}: events of C`);
                assert.equal(r.result.dups, 0, `${r.result.name}: an event counted twice`);
            }
            assertAgree([ra, rb], total, 0);
            assert.equal(rc.result.count, total, "C: count");
            // What the reflectors said about it.
            const logs = [0, 1].map(i => logOf(i)).join("\n");
            assert.match(logs, /keep running; their records go to Redis when it is back/,
                "no owner logged that it kept its sessions running");
            assert.match(logs, /nobody reached it for \d+ ms/, "Redis' outage rule did not fire");
            assert.equal(outageGauge, 1, "lockstep_cluster_outage at the owner during the outage");
            assert.equal(await metric(ports[1 - victim], "lockstep_cluster_outage"), 0, "lockstep_cluster_outage after it");
        } catch (e) {
            e.message += `\n${tails([ra, rb, rc])}`;
            throw e;
        }
    } finally {
        try { redis.proc.kill("SIGCONT"); } catch { /* gone */ }
        await cluster.stop();
    }
}

test("a 5 s Redis outage (SIGSTOP): events keep flowing, a takeover meanwhile waits, nothing is lost (real clients)",
    { timeout: 150000 * SLOW }, outage);
