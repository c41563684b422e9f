// The session router: rooms of bounded size split into shards (sessions), seats with
// an expiry that real membership confirms, overflow shards, child sessions, and
// placement on reflectors by region and load.
//
// This is the embedded directory: all state in this process, one mutex. Every
// operation is a short critical section, so concurrent joins from any thread never
// over-fill a shard or create a shard twice.
//
// @par Thread safety
// All public members may be called from any thread.
#pragma once

#include "reflector/clock.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
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

/// Where router state lives: this process (`router`, the embedded default) or Redis
/// (`redis_directory`, shared by a cluster of reflectors). Same rules either way.
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

/// The embedded directory: all state in this process.
class router final : public directory {
public:
    router(clock_source const& clock, options opts, std::uint32_t heartbeat_ttl_ms = 10000);

    std::optional<seat_answer> join(std::string const& room, std::string const& user, std::string const& region,
                                    api_error& err) override;
    bool leave(std::string const& room, std::string const& user) override;
    std::optional<nlohmann::json> room_info(std::string const& room) override;
    std::optional<nlohmann::json> create_child(std::string const& parent, std::string const& purpose,
                                               std::string const& region, api_error& err) override;
    nlohmann::json children(std::string const& parent) override;
    void register_reflector(reflector_info r) override;
    nlohmann::json reflectors() override;
    bool member_joined(std::string const& token, std::string const& name, std::string const& conn) override;
    void member_left(std::string const& token, bool left, std::string const& conn) override;
    bool seat_live(std::string const& token) override;

    /// The reflector URL a seated user connects to: the seat token travels in the path
    /// (`<reflector>/r/<token>`); the client appends `/<sessionId>`.
    static std::string seat_url(std::string const& reflector_url, std::string const& token);
    /// Extracts a seat token from a WebSocket path `.../r/<token>/<sessionId>`.
    static std::string token_from_path(std::string_view path);

private:
    struct seat {
        std::string user;
        std::string token;
        bool confirmed = false;
        std::set<std::string> conns;  // connections in the session through this seat
        std::int64_t expires_us = 0;  // while not confirmed
    };
    struct shard {
        std::uint32_t index = 0;
        std::string session;
        std::string reflector_id;
        std::map<std::string, seat> seats;  // by user
        std::int64_t empty_since_us = 0;
    };
    struct room {
        policy pol;
        std::vector<shard> shards;
        std::uint32_t next_index = 1;
    };
    struct child {
        std::string session, purpose, reflector_id;
    };

    struct seat_ref {
        room* r;
        shard* sh;
        std::map<std::string, seat>::iterator s;
    };

    std::optional<seat_ref> find_by_token(std::string const& token);
    void free_seat(shard& sh, std::map<std::string, seat>::iterator s);
    void sweep(room& r, std::int64_t now);
    shard& spawn(std::string const& name, room& r, std::string const& region);
    reflector_info const* place(std::string const& region);
    reflector_info const* reflector_by_id(std::string const& id) const;

    clock_source const& clock_;
    options opts_;
    std::int64_t heartbeat_ttl_us_;
    mutable std::mutex mu_;
    std::map<std::string, room> rooms_;
    std::map<std::string, std::pair<std::string, std::string>> tokens_;  // token -> (room, user)
    std::map<std::string, std::vector<child>> children_;
    std::map<std::string, reflector_info> reflectors_;
};

}  // namespace lockstep::router
