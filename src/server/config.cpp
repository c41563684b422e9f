#include "server/config.hpp"

#include "common/options.hpp"

#include <algorithm>
#include <charconv>
#include <limits>
#include <cstdlib>
#include <thread>

namespace lockstep {

namespace {

/// Every option of the reflector, once: flag, field, --help line, and the notes the
/// table of docs/operations.md adds (tests/ops/options_doc.sh keeps that table equal to
/// `lockstep-reflector --options-markdown`).
void
define(cli::options& o, config& c)
{
    o.group("Network");
    o.add("--bind", c.bind, "listen address",
          "The default only serves the local host: use `0.0.0.0` (or an interface address) to serve other "
          "machines, and always inside a container");
    o.add("--port", c.port, "the one port for WebSocket and HTTP", "`0` picks a free port (logged at start)");
    o.add("--public-url", c.public_url, "URL clients use to reach this reflector (default ws://BIND:PORT)",
          "The router hands it out (as `<url>/r/<seat>`, and `http(s)://…/files` for files). Set it whenever "
          "clients reach the reflector through another name, port or a TLS proxy");
    o.add("--peer-url", c.peer_url,
          "URL the other reflectors of a cluster use to reach this one (default ws://BIND:PORT, or the host "
          "name for a bind-all address)",
          "A JOIN that reaches a reflector which may not take the session over is forwarded to the owner at "
          "this URL. Behind a balancer `--public-url` names the balancer, so set this to the reflector's own "
          "address on the cluster's network (e.g. `ws://reflector-1:9090`)");
    o.add("--region", c.region, "region name reported to clients",
          "Sent to clients as SYNC `reflector` (they only log it) and shown in the start-up log line. Set it "
          "per deployment");
    o.add("--threads", c.threads, "worker threads, sessions are sharded over them (0 = number of cores)",
          "See [section 7](#7-threads-and-sharding). Lower it to share a machine");
    o.group("Storage");
    o.add("--data-dir", c.data_dir, "snapshots and persistent data",
          "Root of the blob store and SAVE records ([section 3](#3-data-directory)). Point it at persistent "
          "storage");
    o.add("--web-root", c.web_root, "directory served at / (default: the demo and admin pages in web/)",
          "Static files (GET/HEAD) from this directory, on the reflector's own origin: put your app here and "
          "connect it with `box: location.origin`. Default: `share/lockstep/web` of the install or the source "
          "tree's `web/`. `/admin` stays the admin page");
    o.add("--max-blob-bytes", c.max_blob_bytes, "largest PUT /files/... body (larger: 413)",
          "Bodies are held in memory while uploading, so this also bounds per-upload memory. Snapshots of "
          "typical apps are KB–MB");
    o.add("--journal", c.journal, "file: journal every session in DATA-DIR/journal so restarts and crashes resume it; none: memory only",
          "Each loop turn's events are written before any client sees them ([docs/durability.md](durability.md)); "
          "`none` gives the old behaviour (a restart starts every session afresh)")
        ->check(CLI::IsMember({"file", "none"}));
    o.add("--journal-fsync-ms", c.journal_fsync_ms,
          "fsync the journals every N ms (group commit) off the event loops; 0 = before output is sent",
          "Bounds what a machine crash can lose; a process crash loses nothing a client saw");
    o.add("--session-retention", c.session_retention,
          "delete the journal of a session nobody used for this long (seconds, or 90m, 12h, 30d)",
          "Sessions leave memory after `--session-linger-ms` but stay stored until then. The blobs only that "
          "session referenced (its snapshots, its persisted data) are deleted with it")
        ->type_name("D");
    o.group("Limits");
    o.add("--max-frame-bytes", c.max_frame_bytes, "largest client frame; larger closes with 1009 (minimum 1024)",
          "Client events are at most 16 KiB; raise only for unusual clients");
    o.add("--max-queue-bytes", c.max_queue_bytes,
          "unsent bytes per client; more closes it with 1013 and the client rejoins",
          "The connection's queue is dropped. A **SYNC does not count** against it, so a late joiner always "
          "receives the whole message log, however large; only what is queued besides the SYNC counts. Raise "
          "it for clients on slow links that fall behind during bursts");
    o.add("--join-timeout-ms", c.join_timeout_ms, "close sockets that send no JOIN with 4121",
          "Real clients JOIN immediately; lower it to shed idle sockets faster");
    o.add("--session-linger-ms", c.session_linger_ms, "keep a session after its last client left",
          "Clients reconnecting within this time continue the same session seamlessly; longer values help "
          "flaky networks at the cost of memory");
    o.add("--log-requ-threshold", c.log_requ_threshold,
          "message-log length from which clients are asked for a snapshot (REQU, INFO)",
          "Events since the last snapshot. Must be between 1 and `--log-max`");
    o.add("--log-max", c.log_max, "message-log length at which new events are refused until a snapshot arrives",
          "Lower both limits to bound memory per session (each logged event costs its JSON size, and every "
          "SYNC being sent holds a copy of the whole log)");
    o.add("--log-max-bytes", c.log_max_bytes,
          "the same limit in bytes of logged events: REQU, INFO and refusals come at whichever of the two is "
          "reached first (0 = count only)",
          "The byte size is scaled to a length (this many bytes count as `--log-max` events), so REQU starts at "
          "the same fraction of it. Refused events are not reflected and not logged, exactly as at `--log-max`: "
          "the session stays consistent and goes on once a snapshot trims the log. Bounds one session's memory "
          "and its SYNC. Metric: `lockstep_refused_total`");
    o.add("--max-sync-bytes", c.max_sync_bytes,
          "SYNC bytes queued to joiners and not yet written, over the process; a JOIN whose SYNC does not fit "
          "closes with 4008 (0 = no limit)",
          "Joiners of a session that arrive while nothing changed share one SYNC buffer, counted once. The "
          "client reconnects with back-off. Must be at least twice `--log-max-bytes`. Metric: "
          "`{limit=\"sync_bytes\"}`, `lockstep_sync_bytes_in_flight`");
    o.add("--sync-timeout-ms", c.sync_timeout_ms,
          "a joiner whose SYNC is not all written by then is disconnected (0 = no limit)",
          "So a joiner that does not read cannot hold `--max-sync-bytes` for long. A 64 MiB SYNC takes about a "
          "minute at 1 MB/s: lower it only with a smaller `--log-max-bytes`. Its socket is full, so the TCP connection is closed without a close frame: the client sees 1006 and reconnects. Metric: "
          "`{limit=\"sync_timeout\"}`");
    o.add("--default-tick-ms", c.default_tick_ms, "tick interval for a session whose creating JOIN names none",
          "Real clients always name one. Must be > 0");
    o.add("--drain-timeout-ms", c.drain_timeout_ms, "on SIGTERM/SIGINT, time given to clients to leave before exit",
          "See [section 6](#6-graceful-drain). Keep the service manager's stop timeout above it");
    o.group("Router (docs/router.md)");
    o.add("--reflector-id", c.reflector_id, "this reflector's id in the router (default REGION-PORT)",
          "Must be unique within a cluster");
    o.add("--room-capacity", c.room_capacity, "seats per room shard");
    o.add("--room-overflow", c.room_overflow, "open a new shard when every shard is this full (0 < F <= 1)")
        ->check(CLI::Range(0.0, 1.0));
    o.add("--seat-ttl-ms", c.seat_ttl_ms, "a reserved seat is held this long for its user to join",
          "And for a dropped user to come back");
    o.add("--shard-retire-ms", c.shard_retire_ms, "an empty overflow shard is removed after this long");
    o.add("--room-policy", c.room_policies,
          "PATTERN=CAPACITY[:OVERFLOW]: capacity (and overflow) for rooms whose name matches the glob; "
          "repeatable, first match wins")
        ->type_name("P=C[:F]");
    o.add("--redis", c.redis,
          "cluster mode: keep router state in the Redis at redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (AUTH, SELECT)",
          "Shared by every reflector given the same URL; without it the state lives in this process. With a "
          "password the reflector sends `AUTH` (with USER: Redis 6 ACL users), with `/DB` a `SELECT`, on every "
          "connection; percent-encode `@`, `:` and `/` in the password. A wrong or missing password stops the "
          "start (exit 1; the log says `AUTH failed` or `NOAUTH`, never the password). Redis "
          "must answer at start-up; a URL not starting with `redis://` exits with 2, and one with a bad port "
          "or no host is refused at start-up (exit 1)");
    o.secret([](std::string const& url) { return url.find('@') != std::string::npos; });
    o.add("--heartbeat-ttl-ms", c.heartbeat_ttl_ms,
          "a reflector silent this long gets no new sessions (minimum 100)",
          "Nor does a draining one ([section 6](#6-graceful-drain)). Each reflector re-registers every "
          "min(2 s, N/5). In a cluster, give every reflector the same value");
    o.add("--journal-sync", c.journal_sync,
          "cluster mode: redis = journal sessions to Redis and show nothing before Redis has it; none = sessions stay on their reflector",
          "With `redis` (the default with `--redis`) a session survives the loss of its reflector: another one "
          "takes it over from Redis with nothing lost that any client saw; each loop turn's output waits for "
          "one pipelined Redis round trip, and while Redis is unreachable output waits. `none` keeps the local "
          "file journal only ([docs/durability.md](durability.md#cluster))")
        ->check(CLI::IsMember({"redis", "none"}));
    o.add("--lease-ms", c.lease_ms,
          "cluster mode: a session's owner lease; a dead owner's sessions are taken over within this time (minimum 300)",
          "Renewed every quarter of it; an owner that could not renew for three quarters of it stops serving "
          "the session (its clients reconnect with 4003) before another reflector may take it");
    o.add("--takeover-wait-ms", c.takeover_wait_ms,
          "cluster mode: how long a JOIN waits for a session held by another reflector before its client is asked to retry",
          "Keep it above `--lease-ms`, so a JOIN for a session whose owner died is served by the takeover");
    o.add("--handoff-min-interval-ms", c.handoff_min_interval_ms,
          "cluster mode: a JOIN at a reflector that does not own the session moves the session there, at most once per this interval (0: never)",
          "The owner closes the session's clients with 1001, journals the last events (also what they sent until "
          "their close reply) and releases the lease; they reconnect through the balancer and rejoin seamlessly where the JOIN arrived "
          "([section 2](#2-one-process-per-region), \"Hand-off on JOIN\"). Within the interval (or with 0) such a "
          "connection is forwarded to the owner's `--peer-url` instead. Give every reflector the same value");
    o.group("Access control (docs/security.md)");
    o.add("--auth-secret", c.auth_secret,
          "require a JWT signed HS256 with this secret on every WebSocket upgrade, /files and /v1 request",
          "See [security.md](security.md). Prefer the environment variable, which keeps it out of the process "
          "list. Tokens travel as a path pair `t/<jwt>`, `Authorization: Bearer` or `?token=`. Refusals: 401/403, "
          "JOIN outside the token's claims: close 4103");
    o.secret();
    o.add("--auth-public-key", c.auth_public_key, "the same with RS256/ES256 JWTs checked against this PEM public key",
          "Not together with `--auth-secret`. A file that is not an RSA or EC public key stops the start (exit 1)")
        ->type_name("FILE");
    o.add("--admin-token", c.admin_token, "Bearer token for /sessions, /metrics and /v1/reflectors",
          "401 without, 403 with another. With user auth on and no admin token these endpoints answer 403. "
          "Prefer the environment variable");
    o.secret();
    o.add("--metrics-open", c.metrics_open, "serve /metrics without the admin token",
          "For a scraper that cannot send one");
    o.add("--allowed-origins", c.allowed_origins,
          "comma-separated Origin values allowed (default: any); an upgrade or HTTP request with another Origin "
          "gets 403",
          "Requests without `Origin` are not affected. Repeatable")
        ->type_name("LIST");
    o.group("TLS");
    o.add("--tls-cert", c.tls_cert, "serve wss:// and https:// on the port with this PEM certificate chain",
          "TLS 1.2 and 1.3; with `--tls-key`, both or neither. `--public-url` then defaults to `wss://BIND:PORT` "
          "and the router hands out `https://…/files`. `kill -HUP` re-reads both files (log: `tls: certificate "
          "reloaded`); new connections use the new certificate, open ones keep theirs, and files that cannot be "
          "used leave the current certificate in place (logged as an error). Plain `ws://`/`http://` is not "
          "served on a TLS port. TLS clients cost one extra copy per byte")
        ->type_name("FILE");
    o.add("--tls-key", c.tls_key, "the PEM private key of --tls-cert")->type_name("FILE");
    o.group("Edge limits (loopback peers are not limited per address)");
    o.add("--max-connections", c.max_connections,
          "open sockets (HTTP and WebSocket together); 0 = the file-descriptor limit minus 64",
          "Over it a new socket gets a short `503 {\"error\":\"too many connections\"}` and is closed, instead of "
          "accept() failing for lack of descriptors. At start the soft `RLIMIT_NOFILE` is raised to the hard "
          "limit (logged). Metric: `lockstep_limit_refusals_total{limit=\"connections\"}`, "
          "`lockstep_open_sockets`");
    o.add("--max-connections-per-ip", c.max_connections_per_ip, "open sockets per client address (0 = no limit)",
          "More get `503 too many connections from this address`. Loopback peers are not counted (benchmarks, a "
          "local proxy). Metric: `{limit=\"connections_per_ip\"}`");
    o.add("--trust-proxy", c.trust_proxy,
          "take the client address from the last X-Forwarded-For entry, for the per-address limits",
          "Only behind a proxy that sets it: otherwise clients choose their own address");
    o.add("--max-http-rate", c.max_http_rate,
          "/v1 and /files requests per second per address (bursts of 2N); more get 429 (0 = no limit)",
          "Health, metrics and WebSocket upgrades are not counted; loopback peers are not limited. Metric: "
          "`{limit=\"http_rate\"}`");
    o.add("--max-uploads", c.max_uploads, "PUT /files requests received or being stored at once; more get 503 (0 = no limit)",
          "With `--max-blob-bytes` this bounds upload memory. Metric: `{limit=\"uploads\"}`, "
          "`lockstep_uploads_in_progress`");
    o.add("--max-disk-bytes", c.max_disk_bytes, "size of the blob store; a PUT that would exceed it gets 507 (0 = none)",
          "`DATA/files`, counted at start and on every write. Blobs already stored stay intact, and replacing a "
          "blob counts only the difference. Metric: `{limit=\"disk\"}`, `lockstep_blob_store_bytes`");
    o.add("--max-files-depth", c.max_files_depth, "path segments of a /files path; deeper gets 400 (minimum 1)",
          "The real client uses 6. Metric: `{limit=\"files_depth\"}`");
    o.group("Session limits (0 turns one off)");
    o.add("--max-sessions", c.max_sessions, "sessions in memory; a JOIN that would create one more is closed with 4006",
          "Over all worker threads; a lingering session counts until it leaves memory. The client reconnects "
          "(with back-off) and gets in once sessions end. Metric: `{limit=\"sessions\"}`, `lockstep_sessions`");
    o.add("--max-clients-per-session", c.max_clients_per_session,
          "connected members of one session; a JOIN beyond it is closed with 4007",
          "Each member receives every event, so fan-out cost grows with it; the router's rooms keep sessions "
          "far smaller. The client reconnects with back-off. Metric: `{limit=\"clients_per_session\"}`");
    o.add("--max-message-rate", c.max_message_rate,
          "client frames per second per connection, averaged (token bucket); over it closes with 4005",
          "The real client sends at most 20 events/s by default (60 at most) plus a PULSE per 25 s and its "
          "snapshot votes, so this is far above what it sends. Metric: `{limit=\"message_rate\"}`");
    o.add("--max-message-burst", c.max_message_burst,
          "client frames a connection may send at once before --max-message-rate applies",
          "The bucket's size: a connection may send this many frames back to back, then the rate");
    o.add("--max-join-bytes", c.max_join_bytes,
          "size of a JOIN's args (user, tove, names); larger closes with 4102",
          "Real JOINs are under 1 KiB plus the app's `viewData`. `name`, `appId` and `persistentId` are also "
          "limited to 1024 bytes each, and session ids to 128 URL path characters (4100, "
          "[protocol.md](protocol.md#31-join)). Metric: `{limit=\"join_args\"}`, `{limit=\"session_id\"}`");
    o.group("Performance");
    o.add("--max-coalesce-us", c.max_coalesce_us,
          "upper bound of adaptive write coalescing under load (0 = off)",
          "While a worker thread is over 85 % busy (running, or runnable and waiting for a CPU) its output to "
          "each client is gathered for up to this long so one system call carries many frames (ticks "
          "excepted); below 60 % it writes at once. See "
          "docs/performance.md");
    o.add("--max-tick-stretch", c.max_tick_stretch_pct,
          "overload: stretch tick intervals up to this % of the requested one (100 = off)",
          "When a worker stays over 90 % busy with coalescing already at its maximum, the tick interval of "
          "its sessions is stretched by a quarter per 100 ms, up to PCT % of what the clients asked for (400: "
          "a 50 ms tick becomes at most 200 ms). Below 75 % busy it shrinks back. Events are never delayed "
          "by it. Watch `lockstep_tick_stretch_percent`")
        ->type_name("PCT");
    o.add("--busy-poll-us", c.busy_poll_us,
          "idle workers poll for new work this long before sleeping (0 = sleep at once)",
          "On VMs a sleeping thread can take milliseconds to run again; polling keeps that delay out of ticks "
          "and events at the price of a core kept busy while traffic flows. Counted as idle by the load "
          "controls. Use it on hosts where the reflector owns its cores");
    o.group("Logging");
    o.add("--log-level", c.log_level, "trace|debug|info|warn|error|critical|off",
          "`debug` logs every connect, disconnect and SYNC")
        ->check(CLI::IsMember({"trace", "debug", "info", "warn", "error", "critical", "off"}));
    o.add("--log-format", c.log_format, "text for people, json (one object per line) for machines",
          "See [section 5](#5-logs)")
        ->check(CLI::IsMember({"text", "json"}));
}

char const footer[] = R"(
HTTP on the same port: /health/live, /health/ready, /metrics, /sessions,
PUT/GET /files/<path>. WebSocket: ws://HOST:PORT/<sessionId> or any
prefix, e.g. ws://HOST:PORT/reflector/<sessionId>.
Every option is also read from the environment variable shown, and from
the TOML file given with --config (key = option name without --);
a flag beats the environment, which beats the file.)";

/// "3600", "90s", "90m", "12h", "30d" -> seconds (positive).
bool
parse_duration_s(std::string const& s, std::uint64_t& out)
{
    if (s.empty())
        return false;
    std::uint64_t unit = 1;
    std::string_view digits = s;
    switch (s.back()) {
    case 's': unit = 1; digits.remove_suffix(1); break;
    case 'm': unit = 60; digits.remove_suffix(1); break;
    case 'h': unit = 3600; digits.remove_suffix(1); break;
    case 'd': unit = 86400; digits.remove_suffix(1); break;
    default: break;
    }
    std::uint64_t n = 0;
    auto r = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (r.ec != std::errc{} || r.ptr != digits.data() + digits.size() || n == 0 ||
        n > std::numeric_limits<std::uint64_t>::max() / unit / 1000)
        return false;
    out = n * unit;
    return true;
}

/// Checks what the parser cannot, fills computed defaults; an error message or "".
std::string
validate(config& c)
{
    for (auto* s : {&c.bind, &c.data_dir, &c.region})
        if (s->empty())
            return "--bind, --data-dir and --region must not be empty";
    if (!(c.room_overflow > 0 && c.room_overflow <= 1))
        return "--room-overflow must be above 0 and at most 1";
    if (!parse_duration_s(c.session_retention, c.session_retention_s))
        return "--session-retention must be a positive number of seconds, or end in s, m, h or d";
    if (c.threads == 0)
        c.threads = std::max(1u, std::thread::hardware_concurrency());
    if (c.log_format != "text" && c.log_format != "json") {
        return "--log-format must be text or json";
    }
    static char const* const levels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
    if (std::find(std::begin(levels), std::end(levels), c.log_level) == std::end(levels)) {
        return "--log-level must be one of trace|debug|info|warn|error|critical|off";
    }
    if (c.log_max == 0 || c.log_requ_threshold == 0 || c.log_requ_threshold > c.log_max) {
        return "--log-requ-threshold must be between 1 and --log-max";
    }
    if (c.max_sync_bytes != 0 && (c.log_max_bytes == 0 || c.max_sync_bytes < 2 * c.log_max_bytes))
        return "--max-sync-bytes must be at least twice --log-max-bytes (and needs a --log-max-bytes)";
    if (c.max_frame_bytes < 1024) {
        return "--max-frame-bytes must be at least 1024";
    }
    if (c.default_tick_ms == 0) {
        return "--default-tick-ms must be positive";
    }
    if (!c.redis.empty() && c.redis.rfind("redis://", 0) != 0) {
        return "--redis must look like redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]";
    }
    if (c.lease_ms < 300) {
        return "--lease-ms must be at least 300";
    }
    if (c.heartbeat_ttl_ms < 100) {
        return "--heartbeat-ttl-ms must be at least 100";
    }
    if (c.room_capacity == 0 || c.room_capacity > 1'000'000) {
        return "--room-capacity must be between 1 and 1000000";
    }
    for (auto const& p : c.room_policies) {
        auto rest = p.substr(p.find('=') + 1);
        char* end = nullptr;
        auto cap = std::strtoul(rest.c_str(), &end, 10);
        bool ok = end != rest.c_str() && rest[0] != '-' && cap > 0 && cap <= 1'000'000;
        if (ok && *end == ':') {
            char* end2 = nullptr;
            double f = std::strtod(end + 1, &end2);
            ok = end2 && *end2 == '\0' && f > 0 && f <= 1;
        } else if (ok) {
            ok = *end == '\0';
        }
        if (!ok) {
            return "bad --room-policy '" + p + "' (want PATTERN=CAPACITY[:OVERFLOW])";
        }
    }
    // Secrets may come from the environment (LOCKSTEP_AUTH_SECRET, LOCKSTEP_ADMIN_TOKEN),
    // out of the process list: the option definitions read them.
    if (!c.auth_secret.empty() && !c.auth_public_key.empty())
        return "use either --auth-secret or --auth-public-key, not both";
    std::vector<std::string> origins;  // "a,b" and repeated flags alike
    for (auto const& list : c.allowed_origins) {
        for (std::size_t start = 0;;) {
            auto comma = list.find(',', start);
            auto item = list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
            if (item.empty())
                return "--allowed-origins must not have empty entries";
            origins.push_back(std::move(item));
            if (comma == std::string::npos)
                break;
            start = comma + 1;
        }
    }
    c.allowed_origins = std::move(origins);
    if (c.max_message_rate != 0 && c.max_message_burst == 0)
        return "--max-message-burst must be at least 1 while --max-message-rate is on";
    if (c.max_files_depth == 0)
        return "--max-files-depth must be at least 1";
    if (c.tls_cert.empty() != c.tls_key.empty())
        return "--tls-cert and --tls-key go together";
    if (c.public_url.empty())
        c.public_url = (c.tls_cert.empty() ? "ws://" : "wss://") + c.bind + ":" + std::to_string(c.port);
    return {};
}

}  // namespace

std::optional<config>
parse_config(int argc, char const* const* argv, std::string& message, bool& help)
{
    config c;
    help = false;
    cli::options o("lockstep-reflector", "lockstep-reflector: a Croquet/Multisynq-compatible reflector", "LOCKSTEP_");
    define(o, c);
    o.app().footer(footer);
    if (int status = o.parse(argc, argv, message); status >= 0) {
        help = status == 0;
        return std::nullopt;
    }
    if (auto error = validate(c); !error.empty()) {
        message = "lockstep-reflector: " + error + " (see --help)";
        return std::nullopt;
    }
    if (o.finish(message) == 0) {
        help = true;
        return std::nullopt;
    }
    return c;
}

}  // namespace lockstep
