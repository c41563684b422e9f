#include "server/config.hpp"

#include <charconv>
#include <cstdlib>
#include <functional>
#include <map>
#include <thread>

namespace lockstep {

std::string
usage()
{
    return R"(lockstep-reflector: a Croquet/Multisynq-compatible reflector

Usage: lockstep-reflector [options]

Network
  --bind ADDR               listen address (default 127.0.0.1)
  --port N                  WebSocket + HTTP port (default 9090)
  --public-url URL          URL clients use to reach this reflector
                            (default ws://BIND:PORT)
  --region NAME             region name reported to clients (default local)
  --threads N               worker threads, sessions are sharded over them
                            (default: number of cores)
Storage
  --data-dir DIR            snapshots, persistent data (default ./data)
  --max-blob-bytes N        largest PUT /files/... body (default 268435456)
Limits
  --max-frame-bytes N       largest client frame; larger closes with 1009
                            (default 4194304)
  --max-queue-bytes N       unsent bytes per client; more closes it with
                            1013 and the client rejoins (default 8388608)
  --join-timeout-ms N       close sockets that send no JOIN with 4121
                            (default 30000)
  --session-linger-ms N     keep a session after its last client left
                            (default 10000)
  --log-requ-threshold N    message-log length from which clients are asked
                            for a snapshot (REQU, INFO) (default 60000)
  --log-max N               message-log length at which new events are
                            refused until a snapshot arrives (default 100000)
  --default-tick-ms N       tick interval for a session whose creating JOIN
                            names none (default 200)
  --drain-timeout-ms N      on SIGTERM/SIGINT, time given to clients to leave
                            before exit (default 5000)
Router (docs/router.md)
  --reflector-id ID         this reflector's id (default REGION-PORT)
  --room-capacity N         seats per room shard (default 50)
  --room-overflow F         open a new shard when every shard is this full,
                            0 < F <= 1 (default 0.8)
  --seat-ttl-ms N           a reserved seat is held this long for its user to
                            join (default 30000)
  --shard-retire-ms N       an empty overflow shard is removed after this long
                            (default 60000)
  --room-policy P=C[:F]     capacity C (and overflow F) for rooms whose name
                            matches the glob P; repeatable, first match wins
  --redis URL               cluster mode: keep router state in the Redis at
                            redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (AUTH,
                            SELECT), shared by every reflector pointed at it
                            (default: in this process)
  --heartbeat-ttl-ms N      a reflector that has not refreshed its registration
                            for this long gets no new sessions (default 10000;
                            each reflector refreshes every TTL/5, at most 2 s)
Access control (docs/security.md)
  --auth-secret SECRET      require a JWT signed HS256 with SECRET on every
                            WebSocket upgrade, /files and /v1 request (also
                            from $LOCKSTEP_AUTH_SECRET); tokens travel as a
                            path pair t/<jwt>, Authorization: Bearer or ?token=
  --auth-public-key FILE    the same with RS256/ES256 JWTs checked against the
                            PEM public key in FILE
  --admin-token TOKEN       Bearer token for /sessions, /metrics and admin /v1
                            operations (also from $LOCKSTEP_ADMIN_TOKEN)
  --metrics-open            serve /metrics without the admin token
  --allowed-origins LIST    comma-separated Origin values allowed to open
                            WebSockets and use HTTP from a browser; others get
                            403 (default: any)
TLS
  --tls-cert FILE           serve wss:// and https:// on the port with this PEM
                            certificate chain (reloaded on SIGHUP)
  --tls-key FILE            its PEM private key
Edge limits (loopback peers are not limited per address)
  --max-connections N       open sockets (HTTP and WebSocket) before new ones get
                            503 (default: the file-descriptor limit minus 64)
  --max-connections-per-ip N  open sockets per client address (default 1000;
                            0 = no limit)
  --trust-proxy             the client address is the last X-Forwarded-For entry
                            (only behind a proxy that sets it)
  --max-http-rate N         /v1 and /files requests per second per address,
                            bursts of 2N; more get 429 (default 100; 0 = none)
  --max-uploads N           PUT /files bodies received at once; more get 503
                            (default 64; 0 = none)
  --max-disk-bytes N        blob store size; a PUT that would exceed it gets
                            507 (default 0 = no limit)
  --max-files-depth N       path segments of a /files path; deeper get 400
                            (default 32)
Performance
  --max-coalesce-us N       while a worker thread is busy (>60% CPU), output to
                            each client is gathered for up to this long so one
                            system call carries many frames; idle workers write
                            at once. 0 disables it (default 20000)
  --max-tick-stretch PCT    overload protection: when a worker stays over 90%
                            CPU with coalescing at its maximum, its sessions'
                            tick intervals are stretched, up to PCT percent of
                            the interval the clients asked for, so events keep
                            their latency; they return to normal below 75%.
                            100 disables it (default 400)
  --busy-poll-us N          a worker with nothing to do polls for new work for
                            up to N microseconds before it sleeps. Costs a core
                            while traffic flows; cuts the wake-up delay a
                            sleeping thread pays (ms on some VMs) from ticks
                            and events. Counted as idle by the load controls.
                            0 = sleep at once (default 0)
Logging
  --log-level LEVEL         trace|debug|info|warn|error|critical|off (default info)
  --log-format FMT          text|json (default text)
  --help                    show this text

HTTP on the same port: /health/live, /health/ready, /metrics, /sessions,
PUT/GET /files/<path>. WebSocket: ws://HOST:PORT/<sessionId> or any
prefix, e.g. ws://HOST:PORT/reflector/<sessionId>.
)";
}

namespace {

template <class T>
bool
parse_uint(std::string const& s, T& out)
{
    unsigned long long v = 0;
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec != std::errc{} || r.ptr != s.data() + s.size())
        return false;
    if (v > static_cast<unsigned long long>(std::numeric_limits<T>::max()))
        return false;
    out = static_cast<T>(v);
    return true;
}

}  // namespace

std::optional<config>
parse_config(int argc, char const* const* argv, std::string& message, bool& help)
{
    config c;
    help = false;
    using setter = std::function<bool(std::string const&)>;
    auto str = [](std::string& f) { return setter([&f](std::string const& v) { f = v; return !v.empty(); }); };
    auto num = [](auto& f) { return setter([&f](std::string const& v) { return parse_uint(v, f); }); };
    std::map<std::string, setter> flags = {
        {"--bind", str(c.bind)},
        {"--port", num(c.port)},
        {"--data-dir", str(c.data_dir)},
        {"--threads", num(c.threads)},
        {"--region", str(c.region)},
        {"--public-url", str(c.public_url)},
        {"--log-level", str(c.log_level)},
        {"--log-format", str(c.log_format)},
        {"--max-frame-bytes", num(c.max_frame_bytes)},
        {"--max-queue-bytes", num(c.max_queue_bytes)},
        {"--max-blob-bytes", num(c.max_blob_bytes)},
        {"--join-timeout-ms", num(c.join_timeout_ms)},
        {"--session-linger-ms", num(c.session_linger_ms)},
        {"--log-requ-threshold", num(c.log_requ_threshold)},
        {"--log-max", num(c.log_max)},
        {"--default-tick-ms", num(c.default_tick_ms)},
        {"--drain-timeout-ms", num(c.drain_timeout_ms)},
        {"--max-coalesce-us", num(c.max_coalesce_us)},
        {"--max-tick-stretch", num(c.max_tick_stretch_pct)},
        {"--busy-poll-us", num(c.busy_poll_us)},
        {"--reflector-id", str(c.reflector_id)},
        {"--room-capacity", num(c.room_capacity)},
        {"--room-overflow", setter([&c](std::string const& v) {
             char* end = nullptr;
             double d = std::strtod(v.c_str(), &end);
             c.room_overflow = d;
             return end && *end == '\0' && d > 0 && d <= 1;
         })},
        {"--seat-ttl-ms", num(c.seat_ttl_ms)},
        {"--redis", str(c.redis)},
        {"--heartbeat-ttl-ms", num(c.heartbeat_ttl_ms)},
        {"--shard-retire-ms", num(c.shard_retire_ms)},
        {"--auth-secret", str(c.auth_secret)},
        {"--auth-public-key", str(c.auth_public_key)},
        {"--admin-token", str(c.admin_token)},
        {"--allowed-origins", setter([&c](std::string const& v) {
             std::size_t start = 0;
             while (start <= v.size()) {
                 auto comma = v.find(',', start);
                 auto item = v.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
                 if (item.empty())
                     return false;
                 c.allowed_origins.push_back(item);
                 if (comma == std::string::npos)
                     break;
                 start = comma + 1;
             }
             return true;
         })},
        {"--tls-cert", str(c.tls_cert)},
        {"--tls-key", str(c.tls_key)},
        {"--max-connections", num(c.max_connections)},
        {"--max-connections-per-ip", num(c.max_connections_per_ip)},
        {"--max-http-rate", num(c.max_http_rate)},
        {"--max-uploads", num(c.max_uploads)},
        {"--max-disk-bytes", num(c.max_disk_bytes)},
        {"--max-files-depth", num(c.max_files_depth)},
        {"--room-policy", setter([&c](std::string const& v) {
             auto eq = v.find('=');
             if (eq == std::string::npos || eq == 0 || eq + 1 == v.size())
                 return false;
             c.room_policies.push_back(v);
             return true;
         })},
    };
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            help = true;
            message = usage();
            return std::nullopt;
        }
        if (arg == "--metrics-open") {
            c.metrics_open = true;
            continue;
        }
        if (arg == "--trust-proxy") {
            c.trust_proxy = true;
            continue;
        }
        std::string value;
        bool has_value = false;
        if (auto eq = arg.find('='); eq != std::string::npos) {
            value = arg.substr(eq + 1);
            arg = arg.substr(0, eq);
            has_value = true;
        }
        auto it = flags.find(arg);
        if (it == flags.end()) {
            message = "unknown option " + arg + " (see --help)";
            return std::nullopt;
        }
        if (!has_value) {
            if (i + 1 >= argc) {
                message = "option " + arg + " needs a value";
                return std::nullopt;
            }
            value = argv[++i];
        }
        if (!it->second(value)) {
            message = "bad value for " + arg + ": '" + value + "'";
            return std::nullopt;
        }
    }
    if (c.threads == 0)
        c.threads = std::max(1u, std::thread::hardware_concurrency());
    if (c.log_format != "text" && c.log_format != "json") {
        message = "--log-format must be text or json";
        return std::nullopt;
    }
    static char const* const levels[] = {"trace", "debug", "info", "warn", "error", "critical", "off"};
    if (std::find(std::begin(levels), std::end(levels), c.log_level) == std::end(levels)) {
        message = "--log-level must be one of trace|debug|info|warn|error|critical|off";
        return std::nullopt;
    }
    if (c.log_max == 0 || c.log_requ_threshold == 0 || c.log_requ_threshold > c.log_max) {
        message = "--log-requ-threshold must be between 1 and --log-max";
        return std::nullopt;
    }
    if (c.max_frame_bytes < 1024) {
        message = "--max-frame-bytes must be at least 1024";
        return std::nullopt;
    }
    if (c.default_tick_ms == 0) {
        message = "--default-tick-ms must be positive";
        return std::nullopt;
    }
    if (!c.redis.empty() && c.redis.rfind("redis://", 0) != 0) {
        message = "--redis must look like redis://[:PASSWORD@]HOST[:PORT][/DB]";
        return std::nullopt;
    }
    if (c.heartbeat_ttl_ms < 100) {
        message = "--heartbeat-ttl-ms must be at least 100";
        return std::nullopt;
    }
    if (c.room_capacity == 0 || c.room_capacity > 1'000'000) {
        message = "--room-capacity must be between 1 and 1000000";
        return std::nullopt;
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
            message = "bad --room-policy '" + p + "' (want PATTERN=CAPACITY[:OVERFLOW])";
            return std::nullopt;
        }
    }
    // Secrets may come from the environment, out of the process list.
    if (char const* e = std::getenv("LOCKSTEP_AUTH_SECRET"); e && *e && c.auth_secret.empty())
        c.auth_secret = e;
    if (char const* e = std::getenv("LOCKSTEP_ADMIN_TOKEN"); e && *e && c.admin_token.empty())
        c.admin_token = e;
    if (!c.auth_secret.empty() && !c.auth_public_key.empty()) {
        message = "use either --auth-secret or --auth-public-key, not both";
        return std::nullopt;
    }
    if (c.max_files_depth == 0) {
        message = "--max-files-depth must be at least 1";
        return std::nullopt;
    }
    if (c.tls_cert.empty() != c.tls_key.empty()) {
        message = "--tls-cert and --tls-key go together";
        return std::nullopt;
    }
    if (c.public_url.empty())
        c.public_url = (c.tls_cert.empty() ? "ws://" : "wss://") + c.bind + ":" + std::to_string(c.port);
    return c;
}

}  // namespace lockstep
