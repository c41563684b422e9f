#!/usr/bin/env node
// Mints an HS256 JWT the way an app's backend would, with Node's own crypto (no npm
// package). Usage: LOCKSTEP_AUTH_SECRET=... node mint-token.mjs '{"sub":"alice","scope":"files"}' [ttl_s]
// Prints the token. `exp` is set to now + ttl_s (default 3600) unless the claims name one.
import { createHmac } from "node:crypto";

const secret = process.env.LOCKSTEP_AUTH_SECRET;
if (!secret) {
    console.error("set LOCKSTEP_AUTH_SECRET");
    process.exit(2);
}
const claims = JSON.parse(process.argv[2] || "{}");
const ttl = Number(process.argv[3] || 3600);
if (claims.exp === undefined) claims.exp = Math.floor(Date.now() / 1000) + ttl;
const b64 = obj => Buffer.from(JSON.stringify(obj)).toString("base64url");
const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
const sig = createHmac("sha256", secret).update(body).digest("base64url");
console.log(`${body}.${sig}`);
