#!/usr/bin/env node
// A session survives the loss of its reflector (docs/durability.md, "Cluster"): three
// lockstep-reflector processes share a real redis-server, behind a real HAProxy that
// hashes the URL path and health-checks /health/ready. Two counter-app.mjs processes
// (unmodified @multisynq/client, snapshots uploaded through HAProxy's /files) join one
// session through HAProxy; the reflector serving it is killed with SIGKILL. Afterwards:
//   - both replicas hold the same state (count, digest);
//   - no increment reflected before the kill is lost (at most one per client that was
//     in flight, sent but not yet reflected, may be missing);
//   - the session kept its timeline and model time continued instead of restarting at 0;
//   - the time from the kill to the next reflected event is measured and printed
//     (goal: <= 3 s with the default --lease-ms 2000).
//
//   LOCKSTEP_REFLECTOR_BIN=build/bin/lockstep-reflector node --test tests/compat/run-failover.mjs
//
// Environment: LOCKSTEP_REFLECTOR_BIN (required), COMPAT_LOG_DIR (default: a fresh temp
// dir), COMPAT_SLOW (factor >= 1 for the timeouts). Needs redis-server and haproxy.

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { killAll, sleep, scenarioEnv, startCluster, owner, runClient, tails, assertContinued, assertAgree,
    assertEventsResumed }
    from "./harness.mjs";

const { BIN, SLOW, LOG_DIR } = scenarioEnv("failover");
const SENDS = 28;        // per client, one every SEND_MS
const SEND_MS = 250;
const KILL_AT_MS = 7000; // after the snapshot at model time 5.2 s
const GOAL_MS = 3000;
after(killAll);

async function failover() {
    assert.ok(BIN, "LOCKSTEP_REFLECTOR_BIN must name the reflector binary");
    const cluster = await startCluster({ bin: BIN, logDir: LOG_DIR, args: ["--drain-timeout-ms", "2000"] });
    const { ports, reflectors } = cluster;
    const session = `failover-${Date.now()}`;
    const env = {
        ...cluster.env, SESSION: session, SENDS: String(SENDS), SEND_MS: String(SEND_MS), RUN_MS: "16000",
        EXPECT_COUNT: String(2 * SENDS), SETTLE_MS: "8000", HARD_TIMEOUT_MS: String(60000 * SLOW),
    };
    const a = runClient("A", { ...env, SNAPSHOT_AT: "5200" }, LOG_DIR);
    await sleep(300);
    const b = runClient("B", env, LOG_DIR);
    try {
        await sleep(KILL_AT_MS);
        const victim = await owner(ports, session);
        assert.ok(victim >= 0, "no reflector lists the session live");
        const killAt = Date.now();
        await reflectors[victim].stop("SIGKILL");
        const [ra, rb] = await Promise.all([a, b]);
        try {
            for (const r of [ra, rb]) assertContinued(r, KILL_AT_MS);
            assertAgree([ra, rb], 2 * SENDS, 2);
            assert.ok(ra.result.snapsSent.length + rb.result.snapsSent.length >= 1, "no snapshot before the kill");
            // How long reflected events stopped: from the kill to each app's next RECV.
            const now = await owner(ports, session);
            assertEventsResumed([ra, rb], killAt, `FAILOVER kill -9 of r${victim + 1}, session now on r${now + 1}`,
                GOAL_MS, SLOW);
        } catch (e) {
            e.message += `\n${tails([ra, rb])}`;
            throw e;
        }
    } finally {
        await cluster.stop();
    }
}

test("real clients keep their session across a kill -9 of its reflector (3 reflectors, Redis, HAProxy)",
    { timeout: 120000 * SLOW }, failover);
