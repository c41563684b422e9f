// Reflector configuration: one plain struct, defaults in class. The options that fill it
// (flags, LOCKSTEP_<NAME> environment variables, --config TOML file) are defined once, in
// define() of config.cpp; docs/operations.md's table is generated from them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace lockstep {

struct config {
    std::string bind = "127.0.0.1";       // listen address; 0.0.0.0 to serve other hosts
    std::uint16_t port = 9090;            // one port serves WebSocket and HTTP
    std::string data_dir = "./data";      // blobs (files/) and persistence records (persist/)
    std::string web_root;                 // static pages at / (empty: the install's or source tree's web/)
    unsigned threads = 0;                 // worker threads; 0 = number of cores
    std::string region = "local";         // reported in SYNC "reflector" and /sessions
    std::string public_url;               // how clients reach this reflector (router answers)
    std::string peer_url;                 // how other reflectors reach this one (cluster forwarding)
    std::string log_level = "info";       // trace|debug|info|warn|error|critical|off
    std::string log_format = "text";      // text for people, json (one object per line) for machines
    std::size_t max_frame_bytes = 4u << 20;   // larger client frames close with 1009
    std::size_t max_queue_bytes = 8u << 20;   // unsent bytes per client before 1013 close
    std::size_t max_blob_bytes = 256u << 20;  // larger PUT /files bodies get 413
    std::uint32_t join_timeout_ms = 30000;    // socket without JOIN is closed with 4121
    std::uint32_t session_linger_ms = 10000;  // session kept after its last client left
    std::uint32_t log_requ_threshold = 60000; // log length from which REQU/INFO are sent
    std::uint32_t log_max = 100000;           // log length at which SENDs are refused
    std::uint64_t log_max_bytes = 64ull << 20;  // the same in bytes of logged events; 0: count only
    std::uint64_t max_sync_bytes = 1ull << 30;  // SYNC bytes in flight over all joiners; over: 4008; 0: none
    std::uint32_t sync_timeout_ms = 120000;   // a SYNC not written by then drops its joiner; 0: none
    std::uint32_t default_tick_ms = 200;      // tick of a session whose JOIN had no ticks
    std::uint32_t drain_timeout_ms = 5000;    // SIGTERM: time given to clients to go
    std::uint32_t max_coalesce_us = 20000;    // upper bound of adaptive write coalescing; 0 = off
    std::uint32_t max_tick_stretch_pct = 400; // overload: ticks at most this % of their interval; 100 = off
    std::uint32_t busy_poll_us = 0;           // idle workers poll this long before sleeping; 0 = off
    // Router (docs/router.md)
    std::string reflector_id;                 // this reflector's id in the router; default region-port
    std::uint32_t room_capacity = 50;         // seats per room shard
    double room_overflow = 0.8;               // open a new shard when all are this full
    std::uint32_t seat_ttl_ms = 30000;        // reserved seat held this long for its user
    std::uint32_t shard_retire_ms = 60000;    // empty overflow shard removed after this long
    std::vector<std::string> room_policies;   // "PATTERN=CAPACITY[:OVERFLOW]" per room-name glob
    std::string redis;                        // redis://host:port: cluster mode (shared router state)
    std::uint32_t heartbeat_ttl_ms = 10000;   // a reflector silent this long gets no placements
    std::string journal_sync = "redis";       // cluster mode: redis (journal in Redis, write before show) | none
    std::uint32_t lease_ms = 2000;            // cluster mode: session owner lease
    std::uint32_t takeover_wait_ms = 3000;    // cluster mode: a JOIN waits this long for a held session
    std::uint32_t handoff_min_interval_ms = 30000;  // cluster mode: a session moves on a JOIN at most this often
    // Durability (docs/durability.md)
    std::string journal = "file";             // file: session journals in <data-dir>/journal; none: off
    std::uint32_t journal_fsync_ms = 100;     // group commit period; 0 = fsync before output is flushed
    std::string session_retention = "30d";    // --session-retention as given (s, m, h or d)
    std::uint64_t session_retention_s = 30ull * 24 * 3600;  // the same in seconds: stored sessions unused this long are deleted
    // Access control (docs/security.md)
    std::string auth_secret;                  // HS256 secret: JWTs required on upgrades, /files, /v1
    std::string auth_public_key;              // PEM file: RS256/ES256 JWTs instead
    std::string admin_token;                  // Bearer token for /sessions, /metrics, admin /v1
    bool metrics_open = false;                // /metrics without the admin token
    std::vector<std::string> allowed_origins; // Origin values accepted (empty: any)
    // Edge limits (docs/operations.md, "Limits"); loopback peers are not limited per address
    std::uint64_t max_connections = 0;        // open sockets; 0: the file-descriptor limit minus 64
    std::uint32_t max_connections_per_ip = 1000;  // open sockets per client address; 0: none
    bool trust_proxy = false;                 // client address from X-Forwarded-For
    std::uint32_t max_http_rate = 100;        // /v1 + /files requests per second per address; 0: none
    std::uint32_t max_uploads = 64;           // PUT /files bodies received at once; 0: none
    std::uint64_t max_disk_bytes = 0;         // blob store size; 0: none
    std::uint32_t max_files_depth = 32;       // segments of a /files path
    // Session limits (docs/operations.md, "Limits"); 0 turns one off
    std::uint64_t max_sessions = 100000;      // sessions in memory; a JOIN creating one more: 4006
    std::uint32_t max_clients_per_session = 5000;  // connected members of one session; one more: 4007
    std::uint32_t max_message_rate = 100;     // client frames per second per connection (refill rate)
    std::uint32_t max_message_burst = 200;    // client frames at once per connection; over the rate: 4005
    std::size_t max_join_bytes = 64u << 10;   // JOIN args (user, tove, names...); more: 4102
    // TLS on this port (wss://, https://); reloaded on SIGHUP
    std::string tls_cert;                     // PEM certificate chain
    std::string tls_key;                      // PEM private key
};

/// Parses argv, the environment and --config. Returns nullopt and fills `message` for
/// --help, --version or --print-config (exit 0) or an error (exit 2); `help` tells which.
std::optional<config>
parse_config(int argc, char const* const* argv, std::string& message, bool& help);

}  // namespace lockstep
