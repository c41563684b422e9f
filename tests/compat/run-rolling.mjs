#!/usr/bin/env node
// A rolling restart of a cluster under a live session (docs/operations.md, "Rolling
// deploy"): three lockstep-reflector processes share a real redis-server, behind a real
// HAProxy that hashes the URL path and health-checks /health/ready. Two counter-app.mjs
// processes (unmodified @multisynq/client) play one session through HAProxy while every
// reflector in turn is stopped with SIGTERM (a drain: clients asked to reconnect, their
// sessions written to Redis once they left and the leases released), started again on its port and data dir, and waited for until HAProxy has
// it back UP. The session's own reflector is among them (each is restarted). Afterwards:
//   - the drain of every reflector exited 0;
//   - both replicas hold the same state and no increment is missing (each sender's every
//     event counted once, also one sent as its reflector began to drain);
//   - one timeline, model time went on, and every move was a seamless rejoin: no view
//     torn down or rebuilt, init() ran once;
//   - the session moved at least twice (its reflector is restarted first);
//   - the pause in reflected events at each move of the session is measured and printed.
//
//   LOCKSTEP_REFLECTOR_BIN=build/bin/lockstep-reflector node --test tests/compat/run-rolling.mjs
//
// Environment: LOCKSTEP_REFLECTOR_BIN (required), COMPAT_LOG_DIR (default: a fresh temp
// dir), COMPAT_SLOW (factor >= 1 for the timeouts). Needs redis-server and haproxy.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { killAll, sleep, scenarioEnv, startCluster, haproxyStatus, owner, runClient, tails, assertContinued,
    assertSeamless, assertAgree, assertEventsResumed, assertSendsArrived } from "./harness.mjs";

const { BIN, SLOW, LOG_DIR } = scenarioEnv("rolling");
const SENDS = 80;         // per client, one every SEND_MS: 20 s, the whole rolling restart
const SEND_MS = 250;
const ROLL_AT_MS = 6000;  // after the snapshot at model time 5.2 s
const GOAL_MS = 1000;     // a drained owner's clients rejoin within the client's rejoinLimit
after(killAll);

async function rolling() {
    assert.ok(BIN, "LOCKSTEP_REFLECTOR_BIN must name the reflector binary");
    const cluster = await startCluster({ bin: BIN, logDir: LOG_DIR, args: ["--drain-timeout-ms", "3000"] });
    const { ports, reflectors, socket } = cluster;
    const session = `rolling-${Date.now()}`;
    const env = {
        ...cluster.env, SESSION: session, SENDS: String(SENDS), SEND_MS: String(SEND_MS), RUN_MS: "22000",
        EXPECT_COUNT: String(2 * SENDS), SETTLE_MS: "8000", HARD_TIMEOUT_MS: String(90000 * SLOW),
    };
    const a = runClient("A", { ...env, SNAPSHOT_AT: "5200" }, LOG_DIR);
    await sleep(300);
    const b = runClient("B", env, LOG_DIR);
    const moves = [];  // {from, at, took}: a restart of the session's reflector
    try {
        await sleep(ROLL_AT_MS);
        // The session's reflector first, so that the one it moves to is restarted later too.
        const first = await owner(ports, session);
        assert.ok(first >= 0, "no reflector lists the session live");
        for (const i of [first, ...ports.keys()].filter((x, k, all) => all.indexOf(x) === k)) {
            const before = await owner(ports, session);
            assert.ok(before >= 0, `before restarting r${i + 1}: no reflector lists the session live`);
            const stopAt = Date.now();
            const stopped = await reflectors[i].stop("SIGTERM", 10000 * SLOW);
            assert.equal(stopped.code, 0, `r${i + 1}: the drain exits with 0`);
            const drained = Date.now() - stopAt;
            await haproxyStatus(socket, i, "DOWN");  // so that UP below is the new process
            await reflectors[i].start();
            await haproxyStatus(socket, i, "UP");
            const took = Date.now() - stopAt;
            if (before === i) moves.push({ from: i, at: stopAt });
            console.log(`ROLLING r${i + 1}${before === i ? " (the session's reflector)" : ""}: drained in ` +
                `${drained} ms, back in service after ${took} ms`);
            await sleep(1000);
        }
        const [ra, rb] = await Promise.all([a, b]);
        try {
            assert.ok(moves.length >= 2, `the session moved ${moves.length} time(s), want 2 or more`);
            for (const r of [ra, rb]) {
                assertContinued(r, ROLL_AT_MS);
                assertSeamless(r.result, moves.length);
                assert.equal(r.result.dups, 0, `${r.result.name}: an event counted twice`);
            }
            // Also a SEND a client wrote in the instant its reflector asked it to reconnect
            // goes into the session (read until the close reply); only what its own closing
            // WebSocket discarded never reached a reflector.
            const missing = assertSendsArrived([ra, rb], [["A", ra], ["B", rb]], SENDS, moves.length, "ROLLING");
            assertAgree([ra, rb], 2 * SENDS, missing);
            // How long reflected events stopped at each move: from the SIGTERM to the next RECV.
            for (const m of moves)
                assertEventsResumed([ra, rb], m.at, `ROLLING move off r${m.from + 1}`, GOAL_MS, SLOW);
        } catch (e) {
            e.message += `\n${tails([ra, rb])}`;
            throw e;
        }
    } finally {
        await cluster.stop();
    }
}

test("real clients play on seamlessly through a rolling restart of the cluster (3 reflectors, Redis, HAProxy)",
    { timeout: 180000 * SLOW }, rolling);
