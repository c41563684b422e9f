// Browser tests of the pages the reflector serves (issue 14), in headless Debian
// Chromium driven by puppeteer-core:
//   - the demo page at /: two pages and a late third agree on the count after clicks,
//     on the real @multisynq/client bundle served by the reflector itself;
//   - the admin page at /admin lists that live session and closes its clients;
//   - static files: content types, HEAD, 405, no path traversal, --web-root.
// Usage: node pages-test.mjs <lockstep-reflector> [screenshot dir]
// Starts its own reflectors on free loopback ports; every wait is bounded; the
// reflectors and the browser are stopped on every exit path.
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { mkdtempSync, mkdirSync, writeFileSync, rmSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import http from "node:http";
import assert from "node:assert/strict";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, "../compat/package.json"));
const puppeteer = require("puppeteer-core");
const bin = process.argv[2];
const shots = process.argv[3] || "";
if (!bin) { console.error("usage: node pages-test.mjs <lockstep-reflector> [screenshot dir]"); process.exit(2); }

const work = mkdtempSync(join(tmpdir(), "lockstep-pages-"));
const children = [];
let browser = null;

function startReflector(tag, extra = []) {
  return new Promise((resolve, reject) => {
    const log = [];
    const p = spawn(bin, ["--bind", "127.0.0.1", "--port", "0", "--data-dir", join(work, tag),
                          "--drain-timeout-ms", "500", "--threads", "2", ...extra],
                    { stdio: ["ignore", "pipe", "pipe"] });
    children.push(p);
    const timer = setTimeout(() => reject(new Error(`${tag}: no port within 10 s:\n${log.join("")}`)), 10000);
    const onData = d => {
      log.push(d.toString());
      const m = log.join("").match(/listening on 127\.0\.0\.1:(\d+)/);
      if (m && !p.port) { p.port = Number(m[1]); clearTimeout(timer); resolve(p); }
    };
    p.stdout.on("data", onData);
    p.stderr.on("data", onData);
    p.log = log;
    p.on("exit", code => { p.exited = true; if (!p.port) { clearTimeout(timer); reject(new Error(`${tag} exited ${code}:\n${log.join("")}`)); } });
  });
}

async function stopAll() {
  if (browser) { await Promise.race([browser.close().catch(() => {}), sleep(5000)]); browser?.process()?.kill("SIGKILL"); browser = null; }
  for (const p of children) {
    if (p.exited) continue;
    p.kill("SIGTERM");
    for (let i = 0; i < 50 && !p.exited; i++) await sleep(100);
    if (!p.exited) p.kill("SIGKILL");
  }
  rmSync(work, { recursive: true, force: true });
}
const sleep = ms => new Promise(r => setTimeout(r, ms));

/// A raw HTTP request (no URL normalisation, so "/../" reaches the server as sent).
function raw(port, method, path) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: "127.0.0.1", port, method, path }, res => {
      const chunks = [];
      res.on("data", c => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.setTimeout(5000, () => req.destroy(new Error(`${method} ${path}: timeout`)));
    req.on("error", reject);
    req.end();
  });
}

async function staticChecks(port) {
  let r = await raw(port, "GET", "/");
  assert.equal(r.status, 200);
  assert.match(r.headers["content-type"], /^text\/html/);
  assert.match(r.body, /id="increment"/);
  r = await raw(port, "GET", "/vendor/multisynq-client.min.js");
  assert.equal(r.status, 200, "the client bundle is served (scripts/web-deps.sh)");
  assert.match(r.headers["content-type"], /^text\/javascript/);
  const size = Number(r.headers["content-length"]);
  assert.ok(size > 100000);
  r = await raw(port, "HEAD", "/vendor/multisynq-client.min.js");
  assert.equal(r.status, 200);
  assert.equal(Number(r.headers["content-length"]), size);
  assert.equal(r.body, "");
  r = await raw(port, "POST", "/index.html");
  assert.equal(r.status, 405);
  assert.equal(r.headers.allow, "GET, HEAD");
  r = await raw(port, "GET", "/admin");
  assert.equal(r.status, 301);
  assert.equal(r.headers.location, "/admin/");
  r = await raw(port, "GET", "/admin/");
  assert.equal(r.status, 200);
  assert.match(r.body, /id="sessions"/);
  for (const bad of ["/../CMakeLists.txt", "/vendor/../../CMakeLists.txt", "/%2e%2e/CMakeLists.txt",
                     "/vendor%2f..%2f..%2fCMakeLists.txt", "/.git/config", "/%ff", "/%zz", "/a%00b"]) {
    r = await raw(port, "GET", bad);
    assert.ok(r.status === 400 || r.status === 404, `${bad}: ${r.status}`);
    assert.doesNotMatch(r.body, /cmake_minimum_required|\[core\]/, bad);
  }
  r = await raw(port, "GET", "/no-such-page.html");
  assert.equal(r.status, 404);
  r = await raw(port, "GET", "/admin/api/drain");
  assert.equal(r.status, 405, "drain only by POST");
  r = await raw(port, "GET", "/healthz");
  assert.equal(r.status, 200);
}

async function webRootChecks() {
  const root = join(work, "site");
  mkdirSync(join(root, "sub"), { recursive: true });
  writeFileSync(join(root, "index.html"), "<p>operator app</p>");
  writeFileSync(join(root, "sub", "app.css"), "p{}");
  writeFileSync(join(work, "secret.txt"), "secret");
  const p = await startReflector("webroot", ["--web-root", root]);
  let r = await raw(p.port, "GET", "/");
  assert.equal(r.status, 200);
  assert.equal(r.body, "<p>operator app</p>");
  r = await raw(p.port, "GET", "/sub/app.css");
  assert.equal(r.headers["content-type"], "text/css; charset=utf-8");
  r = await raw(p.port, "GET", "/../secret.txt");
  assert.notEqual(r.status, 200);
  r = await raw(p.port, "GET", "/sub/");
  assert.equal(r.status, 404, "a directory without index.html");
  r = await raw(p.port, "GET", "/admin/");
  assert.equal(r.status, 200, "the admin page stays with --web-root");
  assert.match(r.body, /id="sessions"/);
}

/// Waits until fn() (evaluated in the page) is truthy.
async function until(page, what, fn, arg, ms = 30000) {
  try {
    await page.waitForFunction(fn, { timeout: ms, polling: 100 }, arg);
  } catch (e) {
    throw new Error(`${what}: not within ${ms} ms (${e.message})`);
  }
}

async function main() {
  const r1 = await startReflector("main");
  const port = r1.port;
  const base = `http://127.0.0.1:${port}`;
  await staticChecks(port);
  await webRootChecks();
  console.log("ok - static files, HEAD, 405, no traversal, --web-root");

  browser = await puppeteer.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", headless: true,
    // Tabs behind the front one count as hidden and get frozen; the client also goes to
    // sleep in a hidden tab. Real users put windows side by side: keep every tab running.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-timer-throttling",
           "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows",
           "--disable-features=CalculateNativeWinOcclusion,IntensiveWakeUpThrottling"],
    protocolTimeout: 60000 });
  const session = "browser-test-" + process.pid;
  const url = `${base}/?session=${session}`;
  // Each page in its own browser context: its own window (so the front tab, never frozen
  // as a background tab), and its own storage, like two users.
  const open = async () => {
    const page = await (await browser.createBrowserContext()).newPage();
    await page.setViewport({ width: 900, height: 560 });
    page.on("pageerror", e => console.log("page error:", e.message));
    await page.evaluateOnNewDocument(() => {
      Object.defineProperty(document, "hidden", { get: () => false });
      Object.defineProperty(document, "visibilityState", { get: () => "visible" });
    });
    await page.goto(url, { waitUntil: "load", timeout: 30000 });
    await until(page, "join", () => window.session && !document.getElementById("increment").disabled);
    return page;
  };
  const agree = async (pages, n) => {
    for (const [i, p] of pages.entries()) {
      try {
        await until(p, `page ${i + 1} shows ${n}`, n => document.getElementById("count").textContent === String(n), n);
      } catch (e) {
        const shown = await Promise.all(pages.map(q => q.evaluate(() => document.getElementById("count").textContent)));
        throw new Error(`${e.message}; pages show ${JSON.stringify(shown)}`);
      }
    }
  };
  // A click on the button (a DOM click: synthetic mouse input into a window that is not the
  // focused one can be dropped by the browser, which is not what this test is about).
  const click = page => page.$eval("#increment", b => b.click());
  const a = await open(), b = await open();
  console.log("two demo pages joined");
  await agree([a, b], 0);
  for (let i = 0; i < 3; i++) await click(a);
  for (let i = 0; i < 2; i++) await click(b);
  await agree([a, b], 5);
  const c = await open();                       // the late joiner
  await agree([c], 5);
  await click(c);
  await agree([a, b, c], 6);
  const ids = await Promise.all([a, b, c].map(p => p.evaluate(() => window.session.id)));
  assert.equal(new Set(ids).size, 1, "one session");
  console.log("ok - two demo pages and a late third agree on the count (6)");
  if (shots) await a.screenshot({ path: join(shots, "demo.png") });

  // The admin page lists the live session with its three clients.
  const admin = await (await browser.createBrowserContext()).newPage();
  await admin.setViewport({ width: 1200, height: 900 });
  admin.on("pageerror", e => console.log("admin page error:", e.message));
  await admin.goto(`${base}/admin`, { waitUntil: "load", timeout: 30000 });
  const row = ([name, clients]) => [...document.querySelectorAll("#sessions tbody tr")]
    .some(tr => tr.cells[0].textContent !== name ? false : tr.querySelector(".clients")?.textContent === String(clients));
  // The session's name is the client's hash of app id and name; /sessions shows what the JOIN named.
  const listed = await (await fetch(`${base}/sessions`)).json();
  const mine = listed.find(s => s.id === ids[0]);
  assert.ok(mine, "/sessions has the demo session");
  await until(admin, "admin lists the session with 3 clients", row, [mine.name, 3]);
  await until(admin, "admin shows metrics", () => document.querySelectorAll("#metrics .metric").length >= 5);
  await until(admin, "admin lists this reflector", () => document.querySelectorAll("#reflectors tbody tr td.good").length === 1);
  // A room made through the router shows under "Rooms and shards", with its reserved seat.
  const roomName = "admin-room-" + process.pid;
  const seat = await fetch(`${base}/v1/rooms/${roomName}/join`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ user: "u1" }) });
  assert.equal(seat.status, 200, "router join");
  await until(admin, "admin lists the room and its shard", name => [...document.querySelectorAll("#rooms tbody tr")]
    .some(tr => tr.dataset.room === name && tr.cells[1].textContent === "1" && tr.cells[4].textContent === "1"), roomName);
  if (shots) await admin.screenshot({ path: join(shots, "admin.png"), fullPage: true });
  console.log("ok - the admin page lists the live session, metrics, the room's shard and this reflector");

  // With an admin token configured the API answers 401 (emulated here by interception: the
  // reflector under test runs without one; tests/integration/auth_test.cpp checks the real
  // refusals): the page asks for the token and sends it as a Bearer header.
  const guarded = await (await browser.createBrowserContext()).newPage();
  await guarded.setRequestInterception(true);
  const authorized = [];
  guarded.on("request", req => {
    const path = new URL(req.url()).pathname;
    if (!/^\/(sessions|metrics|v1\/|health\/|admin\/api\/)/.test(path)) return req.continue();
    if (req.headers().authorization !== "Bearer s3cret")
      return req.respond({ status: 401, contentType: "application/json", body: '{"error":"admin token required"}' });
    authorized.push(path);
    req.continue();
  });
  await guarded.goto(`${base}/admin/`, { waitUntil: "load", timeout: 30000 });
  await until(guarded, "the page asks for a token", () => getComputedStyle(document.getElementById("token-box")).display !== "none");
  await guarded.type("#token", "s3cret");
  await guarded.click("#token-save");
  await until(guarded, "with the token, the session is listed", row, [mine.name, 3]);
  assert.ok(authorized.includes("/sessions") && authorized.includes("/metrics"), "calls carry the Bearer token");
  await guarded.close();
  console.log("ok - on 401 the admin page asks for a token and sends it as Bearer");

  // Close the session's clients from the admin page: the POST closes 3 connections.
  admin.on("dialog", d => d.accept());
  const answer = admin.waitForResponse(r => r.url().includes(`/admin/api/sessions/`) && r.request().method() === "POST",
                                       { timeout: 15000 });
  await admin.evaluate(id => document.querySelector(`#sessions tr[data-id="${id}"] button.close`).click(), ids[0]);
  const res = await answer;
  assert.equal(res.status(), 200);
  assert.equal((await res.json()).closed, 3);
  // The clients reconnect (1001) and the count survives.
  let back = null;
  for (let i = 0; i < 150 && !back; i++) {
    const s = (await (await fetch(`${base}/sessions`)).json()).find(s => s.id === ids[0]);
    if (s && s.clients === 3) back = s; else await sleep(100);
  }
  assert.ok(back, "the three clients reconnect within 15 s");
  await agree([a, b, c], 6);
  await until(c, "page 3 can click again", () => !document.getElementById("increment").disabled);
  await click(c);
  await agree([a, b, c], 7);
  console.log("ok - close clients from the admin page; they reconnect and keep the count");
}

const deadline = setTimeout(() => { console.error("not ok - overall timeout (150 s)"); stopAll().finally(() => process.exit(1)); }, 150000);
main().then(async () => { clearTimeout(deadline); await stopAll(); console.log("browser pages: all passed"); process.exit(0); },
  async e => {
    clearTimeout(deadline);
    console.error("not ok -", e.stack || e);
    for (const p of children) console.error(`---- reflector log ----\n${p.log.join("").split("\n").slice(-40).join("\n")}`);
    await stopAll();
    process.exit(1);
  });
