// Reflector configuration: one plain struct, defaults in class, parsed and validated once.
//
// | flag                     | field                | default      |
// |--------------------------|----------------------|--------------|
// | --bind ADDR              | bind                 | 127.0.0.1    |
// | --port N                 | port                 | 9090         |
// | --data-dir DIR           | data_dir             | ./data       |
// | --threads N              | threads              | cores        |
// | --region NAME            | region               | local        |
// | --public-url URL         | public_url           | ws://bind:port |
// | --log-level LEVEL        | log_level            | info         |
// | --log-format text|json   | log_format           | text         |
// | --max-frame-bytes N      | max_frame_bytes      | 4 MiB        |
// | --max-queue-bytes N      | max_queue_bytes      | 8 MiB        |
// | --max-blob-bytes N       | max_blob_bytes       | 256 MiB      |
// | --join-timeout-ms N      | join_timeout_ms      | 30000        |
// | --session-linger-ms N    | session_linger_ms    | 10000        |
// | --log-requ-threshold N   | log_requ_threshold   | 60000        |
// | --log-max N              | log_max              | 100000       |
// | --default-tick-ms N      | default_tick_ms      | 200          |
// | --drain-timeout-ms N     | drain_timeout_ms     | 5000         |
// | --max-coalesce-us N      | max_coalesce_us      | 20000        |
// | --max-tick-stretch PCT   | max_tick_stretch_pct | 400          |
// | --busy-poll-us N         | busy_poll_us         | 0            |
// | --reflector-id ID        | reflector_id         | REGION-PORT  |
// | --room-capacity N        | room_capacity        | 50           |
// | --room-overflow F        | room_overflow        | 0.8          |
// | --seat-ttl-ms N          | seat_ttl_ms          | 30000        |
// | --shard-retire-ms N      | shard_retire_ms      | 60000        |
// | --room-policy P=C[:F]    | room_policies        | (none)       |
// | --redis URL              | redis                | (embedded)   |
// | --heartbeat-ttl-ms N     | heartbeat_ttl_ms     | 10000        |
// | --auth-secret SECRET     | auth_secret          | (none)       |
// | --auth-public-key FILE   | auth_public_key      | (none)       |
// | --admin-token TOKEN      | admin_token          | (none)       |
// | --metrics-open           | metrics_open         | off          |
// | --allowed-origins LIST   | allowed_origins      | (any)        |
// | --max-connections N      | max_connections      | NOFILE - 64  |
// | --max-connections-per-ip N | max_connections_per_ip | 1000     |
// | --trust-proxy            | trust_proxy          | off          |
// | --max-http-rate N        | max_http_rate        | 100          |
// | --max-uploads N          | max_uploads          | 64           |
// | --max-disk-bytes N       | max_disk_bytes       | 0 (none)     |
// | --max-files-depth N      | max_files_depth      | 32           |
// | --tls-cert FILE          | tls_cert             | (none)       |
// | --tls-key FILE           | tls_key              | (none)       |
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
    unsigned threads = 0;                 // worker threads; 0 = number of cores
    std::string region = "local";         // reported in SYNC "reflector" and /sessions
    std::string public_url;               // how clients reach this reflector (router answers)
    std::string log_level = "info";       // trace|debug|info|warn|error|critical|off
    std::string log_format = "text";      // text for people, json (one object per line) for machines
    std::size_t max_frame_bytes = 4u << 20;   // larger client frames close with 1009
    std::size_t max_queue_bytes = 8u << 20;   // unsent bytes per client before 1013 close
    std::size_t max_blob_bytes = 256u << 20;  // larger PUT /files bodies get 413
    std::uint32_t join_timeout_ms = 30000;    // socket without JOIN is closed with 4121
    std::uint32_t session_linger_ms = 10000;  // session kept after its last client left
    std::uint32_t log_requ_threshold = 60000; // log length from which REQU/INFO are sent
    std::uint32_t log_max = 100000;           // log length at which SENDs are refused
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
    // TLS on this port (wss://, https://); reloaded on SIGHUP
    std::string tls_cert;                     // PEM certificate chain
    std::string tls_key;                      // PEM private key
};

/// Parses argv. Returns nullopt and fills `message` for --help (exit 0) or an error
/// (exit 2); `help` tells which.
std::optional<config>
parse_config(int argc, char const* const* argv, std::string& message, bool& help);

/// The --help text.
std::string
usage();

}  // namespace lockstep
