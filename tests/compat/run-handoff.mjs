#!/usr/bin/env node
// Hand-off on JOIN (docs/operations.md, "Hand-off on JOIN"): a reflector added to the
// balancer mid-session takes the session over while its owner is alive. Two
// lockstep-reflector processes share a real redis-server behind a real HAProxy with
// `balance first` and r2 listed first but in maintenance, so two counter-app.mjs processes
// (unmodified @multisynq/client) play a session on r1. Then r2 is put in service through
// HAProxy's admin socket (new connections now go to r2) and a third app C joins: its JOIN
// reaches r2, which asks r1 for the session; r1 hands it off (clients closed with 1001,
// last records in Redis, lease released), r2 takes it over from Redis and A and B,
// reconnecting through HAProxy, rejoin there. Then r2 goes back into maintenance (its
// clients stay) and a fourth app D reaches r1: within --handoff-min-interval-ms the
// session may not move back, so r1 forwards D's connection to r2. Afterwards:
//   - the session moved exactly once: r1 counts one hand-off, r2 none, r2 took one session
//     over from Redis, r1 logged one hand-off; r1 forwarded one connection, r2 none;
//   - C and D joined once each (no reconnect) and all their events arrived;
//   - the three replicas agree (A and B at the end, C at each of its checkpoints) and no
//     increment is missing;
//   - A and B: one timeline, model time went on, the rejoin was seamless (no view rebuilt);
//   - the pause in reflected events at A and B around the move is measured and bounded.
//
//   LOCKSTEP_REFLECTOR_BIN=build/bin/lockstep-reflector node --test tests/compat/run-handoff.mjs
//
// Environment: LOCKSTEP_REFLECTOR_BIN (required), COMPAT_LOG_DIR (default: a fresh temp
// dir), COMPAT_SLOW (factor >= 1 for the timeouts). Needs redis-server and haproxy.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { killAll, sleep, scenarioEnv, startCluster, haproxyAdmin, haproxyStatus, owner, metric, runClient, tails,
    assertContinued, assertSeamless, assertAgree, assertEventsResumed, assertSendsArrived } from "./harness.mjs";

const { BIN, SLOW, LOG_DIR } = scenarioEnv("handoff");
const SENDS = 60;         // per client A and B, one every SEND_MS: 15 s
const SEND_MS = 250;
const C_SENDS = 12;      // each of C and D
const ADD_AT_MS = 6000;   // after the snapshot at model time 5.2 s
const GOAL_MS = 1000;     // the old owner's clients rejoin within the client's rejoinLimit
after(killAll);

/** Polls `probe` every 50 ms until it returns true (bounded by `ms`); resolves when it did, or null. */
async function until(probe, ms) {
    const end = Date.now() + ms;
    while (Date.now() < end) {
        if (await probe()) return Date.now();
        await sleep(50);
    }
    return null;
}

async function handoff() {
    assert.ok(BIN, "LOCKSTEP_REFLECTOR_BIN must name the reflector binary");
    const cluster = await startCluster({ bin: BIN, logDir: LOG_DIR, n: 2, balance: "first", order: [1, 0],
        disabled: [1], args: ["--drain-timeout-ms", "2000"] });
    const { ports, socket } = cluster;
    const session = `handoff-${Date.now()}`;
    const total = 2 * SENDS + 2 * C_SENDS;
    const env = {
        ...cluster.env, SESSION: session, SENDS: String(SENDS), SEND_MS: String(SEND_MS), RUN_MS: "18000",
        EXPECT_COUNT: String(total), SETTLE_MS: "8000", HARD_TIMEOUT_MS: String(60000 * SLOW),
    };
    const a = runClient("A", { ...env, SNAPSHOT_AT: "5200" }, LOG_DIR);
    await sleep(300);
    const b = runClient("B", env, LOG_DIR);
    let c = null;
    try {
        await sleep(ADD_AT_MS);
        assert.equal(await owner(ports, session), 0, "before r2 is added the session is on r1");
        // r2 into service; with `balance first` and r2 listed first, every new connection goes there.
        await haproxyAdmin(socket, "set server reflectors/r2 state ready");
        await haproxyStatus(socket, 1, "UP");
        const addedAt = Date.now();
        c = runClient("C", { ...env, SENDS: String(C_SENDS), RUN_MS: "6000" }, LOG_DIR);
        const movedAt = await until(async () => await metric(ports[0], "lockstep_session_handoffs_total") >= 1,
            15000 * SLOW);
        assert.ok(movedAt, "r1 did not hand the session off");
        console.log(`HANDOFF r1 -> r2: ${movedAt - addedAt} ms after r2 was UP and C started`);
        const onR2 = await until(async () => await owner(ports, session) === 1, 5000 * SLOW);
        assert.ok(onR2, "the session is not live on r2 after the hand-off");
        console.log(`HANDOFF: A and B back on r2 ${onR2 - movedAt} ms after the hand-off was counted`);
        // Between moves a non-owner forwards: r2 out of service again (its clients stay),
        // so D's connection reaches r1, which relays it to r2 instead of taking the
        // session back within --handoff-min-interval-ms.
        await haproxyAdmin(socket, "set server reflectors/r2 state maint");
        await haproxyStatus(socket, 1, "MAINT");
        const d = runClient("D", { ...env, SENDS: String(C_SENDS), RUN_MS: "5000" }, LOG_DIR);
        const [ra, rb, rc, rd] = await Promise.all([a, b, c, d]);
        try {
            // Moved exactly once, from r1 to r2, and taken over from Redis there.
            assert.equal(await metric(ports[0], "lockstep_session_handoffs_total"), 1, "r1: hand-offs");
            assert.equal(await metric(ports[1], "lockstep_session_handoffs_total"), 0, "r2: hand-offs");
            assert.ok(await metric(ports[1], "lockstep_sessions_resumed_total") >= 1, "r2 took nothing over");
            assert.equal(await metric(ports[0], "lockstep_connections_forwarded_total"), 1, "r1: D forwarded");
            assert.equal(await metric(ports[1], "lockstep_connections_forwarded_total"), 0, "r2: forwarded");
            const r1log = readFileSync(join(LOG_DIR, "reflector-r1-1.log"), "utf8");
            const handedOff = r1log.split("\n").filter(l => l.includes("handed off"));
            assert.equal(handedOff.length, 1, "r1 logs one hand-off");
            const asked = readFileSync(join(LOG_DIR, "reflector-r2-1.log"), "utf8").split("\n")
                .find(l => l.includes("asked it to hand the session over"));
            assert.ok(asked, "r2 did not log asking r1 for the session");
            // Log lines start with their time (ISO 8601, ms): the move's exact moment.
            const closedAt = Date.parse(handedOff[0].split(" ")[0]);
            assert.ok(Number.isFinite(closedAt), `no time in ${handedOff[0]}`);
            console.log(`HANDOFF: r1 closed the session's clients ${closedAt - Date.parse(asked.split(" ")[0])} ms ` +
                "after r2 asked for it");
            for (const r of [ra, rb]) {
                assertContinued(r, ADD_AT_MS);
                assertSeamless(r.result, 1);
            }
            // A and B moved once: each SEND of theirs that reached a reflector arrived, also
            // one written as r1 closed them (read until their close reply).
            const missing = assertSendsArrived([ra, rb, rc, rd], [["A", ra], ["B", rb]], SENDS, 1, "HANDOFF");
            for (const r of [rc, rd]) {
                assert.equal(r.code, 0, `${r.result && r.result.name} exit ${r.code}: ${r.result && r.result.error}`);
                assert.equal(r.result.syncs.length, 1, `${r.result.name}: reconnected`);
            }
            for (const r of [ra, rb, rc, rd]) {
                for (const who of ["C", "D"])
                    assert.equal(r.result.perSender[who], C_SENDS, `${r.result.name}: events of ${who}`);
                assert.equal(r.result.dups, 0, `${r.result.name}: an event counted twice`);
            }
            // A and B leave together: same final state. C and D left earlier (their exits
            // are in A's and B's): each agrees with A at every checkpoint it has.
            assertAgree([ra, rb], total, missing);
            for (const r of [rc, rd]) {
                assert.equal(r.result.count, ra.result.count, `${r.result.name}: count (A has ${ra.result.count})`);
                assert.ok(r.result.checkpoints.length >= 3, `${r.result.name}: too few checkpoints`);
                for (const cp of r.result.checkpoints)
                    assert.deepEqual(ra.result.checkpoints.find(x => x[0] === cp[0]), cp,
                        `${r.result.name} and A at model time ${cp[0]}`);
            }
            assertEventsResumed([ra, rb], closedAt, "HANDOFF pause at A and B", GOAL_MS, SLOW);
        } catch (e) {
            e.message += `\n${tails([ra, rb, rc, rd])}`;
            throw e;
        }
    } finally {
        await cluster.stop();
    }
}

test("a reflector added to HAProxy mid-session takes the session over once (then forwards); real clients rejoin seamlessly",
    { timeout: 120000 * SLOW }, handoff);
