// The router's directory: rooms of bounded size split into shards (sessions), seats with
// an expiry that real membership confirms, overflow shards, child sessions, and
// placement on reflectors by region and load (docs/router.md).
//
// One interface, two implementations with the same rules, checked by one conformance
// suite (tests/unit/directory_conformance_test.cpp): memory_directory (all state in
// this process, the embedded default) and redis_directory (state in Redis, shared by a
// cluster). Implementations may block (Redis): the server calls them only on its
// directory thread, never on an event loop.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lockstep::router {

struct policy {
    std::uint32_t capacity = 50;        // seats per shard
    double overflow = 0.8;              // spawn a new shard when every shard is this full
    std::uint32_t seat_ttl_ms = 30000;  // a reserved seat is held this long for its user to join
    std::uint32_t retire_ms = 60000;    // an empty overflow shard is removed after this long
};

struct options {
    policy defaults;
    /// Per room-name pattern (shell glob, first match wins).
    std::vector<std::pair<std::string, policy>> patterns;
};

/// A reflector that sessions can be placed on.
struct reflector_info {
    std::string id;
    std::string region;
    std::string url;        // WebSocket base URL clients use, e.g. ws://host:9090
    std::string files_url;  // e.g. http://host:9090/files
    double load = 0;        // open connections
    bool draining = false;  // registered but taking no new sessions
    std::int64_t heartbeat_us = 0;
    std::string instance;   // changes when the reflector process restarts
    std::string peer_url = {};  // how the other reflectors reach this one (forwarding), e.g. ws://10.0.0.1:9090
};

struct seat_answer {
    std::string room, session, reflector, files;
    std::uint32_t shard = 0;
    std::int64_t expires_in_ms = 0;
    nlohmann::json to_json() const;
};

/// The 503 message while the state store (Redis, in cluster mode) cannot be reached.
inline constexpr char const* state_unavailable = "router state (Redis) unavailable";

/// An API error: HTTP status, message, and the offending field.
struct api_error {
    int status;
    std::string message;
    std::string field;
};

/// The policy of a room: the first --room-policy pattern that matches, else defaults.
policy
policy_for(options const& opts, std::string const& room);

/// An unguessable seat token (a token lets its holder take the seat): 128 random bits
/// as 32 hex digits.
std::string
random_token();

/// Where router state lives: this process (`memory_directory`, the embedded default) or
/// Redis (`redis_directory`, shared by a cluster of reflectors). Same rules either way.
///
/// @par Thread safety
/// Implementations accept calls from any thread.
class directory {
public:
    virtual ~directory() = default;

    /// Reserves (or returns) `user`'s seat in `room`.
    virtual std::optional<seat_answer> join(std::string const& room, std::string const& user,
                                            std::string const& region, api_error& err) = 0;
    /// Frees `user`'s seat early. False if the user had none.
    virtual bool leave(std::string const& room, std::string const& user) = 0;
    /// Shards of a room, or nullopt if the room is unknown.
    virtual std::optional<nlohmann::json> room_info(std::string const& room) = 0;
    /// The first `limit` rooms by name, each as room_info gives it (a JSON array).
    virtual nlohmann::json rooms(std::size_t limit) = 0;

    /// Creates (or returns, per purpose) a child session of `parent`.
    virtual std::optional<nlohmann::json> create_child(std::string const& parent, std::string const& purpose,
                                                       std::string const& region, api_error& err) = 0;
    virtual nlohmann::json children(std::string const& parent) = 0;

    /// Registers or refreshes (heartbeat) a reflector.
    virtual void register_reflector(reflector_info r) = 0;
    virtual nlohmann::json reflectors() = 0;

    // ---- membership, reported by the reflector's connections ----
    /// A connection that came through seat `token` joined the session named `name`
    /// (JOIN's `appId/name`): if that is the seat's session, the seat is confirmed and
    /// held while the connection is in.
    /// `conn` names the connection uniquely in the cluster ("<reflector id>:<serial>"),
    /// so a repeated report counts once and a dead reflector's connections can be
    /// dropped. Returns true when the seat was confirmed (the caller then reports the
    /// leave).
    virtual bool member_joined(std::string const& token, std::string const& name, std::string const& conn) = 0;
    /// That connection is gone. After a normal leave (`left` = close code 1000) the
    /// seat is freed; after a drop it goes back to reserved with a fresh expiry, so a
    /// reconnect can take it again, and is freed if nobody does.
    virtual void member_left(std::string const& token, bool left, std::string const& conn) = 0;
    /// Whether `token` names a seat that is confirmed or reserved and not expired: such
    /// a seat URL admits its holder when tokens are required (docs/security.md).
    virtual bool seat_live(std::string const& token) = 0;

    /// False while the state store cannot be reached (the API then answers 503).
    virtual bool available() const { return true; }
};

/// The reflector URL a seated user connects to: the seat token travels in the path
/// (`<reflector>/r/<token>`); the client appends `/<sessionId>`.
std::string
seat_url(std::string const& reflector_url, std::string const& token);
/// Extracts a seat token from a WebSocket path `.../r/<token>/<sessionId>`.
std::string
token_from_path(std::string_view path);

}  // namespace lockstep::router
