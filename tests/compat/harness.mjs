// Shared by the Node scenario tests (run-restart.mjs, run-failover.mjs): free ports,
// readiness waits, counter-app.mjs processes, and cleanup of every child process.
import { spawn } from "node:child_process";
import { createWriteStream } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import net from "node:net";

const HERE = dirname(fileURLToPath(import.meta.url));

/** Every child started through here; killed by killAll() (call it from after()). */
export const children = new Set();
export function killAll() { for (const c of children) { try { c.kill("SIGKILL"); } catch { /* gone */ } } }

export const sleep = ms => new Promise(r => setTimeout(r, ms));

export function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.on("error", reject);
        s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
    });
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
