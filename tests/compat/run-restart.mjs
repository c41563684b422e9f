#!/usr/bin/env node
// Durable sessions with the real client: two counter-app.mjs processes (unmodified
// @multisynq/client, snapshots uploaded to the reflector's own /files) play in one
// session while the reflector process is stopped and started again on the same port
// and data dir — once with SIGKILL, once with SIGTERM (graceful drain). Afterwards:
//   - both replicas hold the same state (count, digest);
//   - no increment is missing except, at most, one per client that was in flight (sent,
//     not yet reflected, so seen by nobody) at the moment of a SIGKILL;
//   - the session kept its timeline and model time continued instead of restarting at 0;
//   - the reconnect was seamless: the library logged "seamless rejoin successful", and
//     no view was torn down and rebuilt.
// And: after everyone left and the linger time passed, a new client gets the old state.
//
//   LOCKSTEP_REFLECTOR_BIN=build/bin/lockstep-reflector node --test tests/compat/run-restart.mjs
//
// Environment: LOCKSTEP_REFLECTOR_BIN (required), COMPAT_LOG_DIR (default: a fresh temp
// dir), COMPAT_SLOW (factor >= 1 for the timeouts).

import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { killAll, sleep, freePort, scenarioEnv, Reflector as ReflectorProcess, runClient as runApp, tails,
    assertContinued, assertSeamless, assertAgree } from "./harness.mjs";

const { BIN, SLOW, LOG_DIR } = scenarioEnv("restart");
const SENDS = 24;        // per client, one every SEND_MS
const SEND_MS = 250;
const STOP_AT_MS = 7000; // after the snapshot at model time 5.2 s
after(killAll);

/** A standalone reflector on a fixed port and data dir. */
class Reflector extends ReflectorProcess {
    constructor(port, dir, more = []) { super(BIN, port, dir, ["--drain-timeout-ms", "3000", ...more], LOG_DIR); }
    stop(signal) { return super.stop(signal, 10000 * SLOW); }
}

const runClient = (name, env) => runApp(name, env, LOG_DIR);

async function scenario(signal) {
    assert.ok(BIN, "LOCKSTEP_REFLECTOR_BIN must name the reflector binary");
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "lockstep-restart-data-"));
    const refl = new Reflector(port, dir);
    await refl.start();
    const session = `restart-${signal}-${Date.now()}`;
    const env = {
        LIB: "multisynq", REFLECTOR: `ws://127.0.0.1:${port}/reflector`, FILES: `http://127.0.0.1:${port}/files`,
        SESSION: session, SENDS: String(SENDS), SEND_MS: String(SEND_MS), RUN_MS: "14000",
        EXPECT_COUNT: String(2 * SENDS), SETTLE_MS: "5000", HARD_TIMEOUT_MS: String(60000 * SLOW),
    };
    const a = runClient("A", { ...env, SNAPSHOT_AT: "5200" });
    await sleep(300);
    const b = runClient("B", env);
    await sleep(STOP_AT_MS);
    const stopped = await refl.stop(signal);
    await refl.start();  // at once: within the client's rejoinLimit (1 s)
    const [ra, rb] = await Promise.all([a, b]);
    await refl.stop("SIGTERM");
    try {
        if (signal === "SIGTERM") assert.equal(stopped.code, 0, "drain exits with 0");
        for (const r of [ra, rb]) {
            // The session came back, not a new one, and seamlessly: model and view kept.
            assertContinued(r, STOP_AT_MS);
            assertSeamless(r.result);
        }
        assertAgree([ra, rb], 2 * SENDS, 2);
        assert.ok(ra.result.snapsSent.length + rb.result.snapsSent.length >= 1, "no snapshot was taken before the stop");
    } catch (e) {
        e.message += `\n${tails([ra, rb])}`;
        throw e;
    } finally {
        rmSync(dir, { recursive: true, force: true });
    }
}

// Everyone leaves; past the linger time the session is only in the journal; a new client
// joining then gets the old state (from the snapshot and the log), not a fresh session.
async function emptyRoom() {
    assert.ok(BIN, "LOCKSTEP_REFLECTOR_BIN must name the reflector binary");
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), "lockstep-restart-data-"));
    const refl = new Reflector(port, dir, ["--session-linger-ms", "500"]);
    await refl.start();
    const env = {
        LIB: "multisynq", REFLECTOR: `ws://127.0.0.1:${port}/reflector`, FILES: `http://127.0.0.1:${port}/files`,
        SESSION: `linger-${Date.now()}`, SEND_MS: String(SEND_MS), HARD_TIMEOUT_MS: String(60000 * SLOW),
    };
    try {
        const first = await runClient("A", { ...env, SENDS: "12", RUN_MS: "7000", SNAPSHOT_AT: "5200", EXPECT_COUNT: "12" });
        assert.equal(first.code, 0, `first client: ${first.result && first.result.error}`);
        assert.equal(first.result.count, 12);
        let stored = false;
        for (let i = 0; i < 100 && !stored; i++) {  // bounded: 5 s
            await sleep(50);
            const list = await (await fetch(`http://127.0.0.1:${port}/sessions`)).json();
            stored = list.length > 0 && list.every(e => e.state === "stored");
        }
        assert.ok(stored, "the session did not leave memory after the linger time");
        const later = await runClient("L", { ...env, SENDS: "0", RUN_MS: "1500", EXPECT_COUNT: "12" });
        assert.equal(later.code, 0, `late client: ${later.result && later.result.error}`);
        assert.equal(later.result.count, 12, "the old state is not there");
        assert.ok(first.result.snapsSent.length >= 1, "no snapshot before everyone left");
        assert.equal(later.result.initRan, 0, "the late client ran init() instead of loading the old snapshot");
        assert.equal(later.result.firstSync.timeline, first.result.syncs[0].timeline, "a fresh session was made");
        assert.ok(later.result.modelTime > first.result.modelTime, "model time restarted");
    } finally {
        await refl.stop("SIGTERM");
        rmSync(dir, { recursive: true, force: true });
    }
}

test("real client joining a session everyone left long ago gets its state", { timeout: 120000 * SLOW }, emptyRoom);
test("real client across a SIGKILL restart of the reflector", { timeout: 120000 * SLOW }, () => scenario("SIGKILL"));
test("real client across a SIGTERM (drain) restart of the reflector", { timeout: 120000 * SLOW }, () => scenario("SIGTERM"));
