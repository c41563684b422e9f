// The cluster directory: router state in Redis, shared by every reflector pointed at
// the same server (--redis redis://host:port, see redis/link.hpp). Every operation is one EVAL of
// src/directory/router.lua, so it is atomic across the whole cluster: two reflectors
// never hand out the same seat or create the same shard twice.
//
// @par Thread safety
// All members may be called from any thread (one connection, one mutex). Calls block
// for up to the Redis time-out: the server makes them only on its directory thread
// (server/directory_thread.hpp), never on an event loop.
#pragma once

#include "router/directory.hpp"

#include "redis/link.hpp"

#include <string>

namespace lockstep::router {

class redis_directory final : public directory {
public:
    /// Connects to `url` (redis://[[user]:password@]host[:port][/db]; AUTH and SELECT on
    /// every connection). Throws std::runtime_error if it cannot (start-up only).
    redis_directory(std::string const& url, options opts, std::uint32_t heartbeat_ttl_ms);
    ~redis_directory() override;

    std::optional<seat_answer> join(std::string const& room, std::string const& user, std::string const& region,
                                    api_error& err) override;
    bool leave(std::string const& room, std::string const& user) override;
    std::optional<nlohmann::json> room_info(std::string const& room) override;
    nlohmann::json rooms(std::size_t limit) override;
    std::optional<nlohmann::json> create_child(std::string const& parent, std::string const& purpose,
                                               std::string const& region, api_error& err) override;
    nlohmann::json children(std::string const& parent) override;
    void register_reflector(reflector_info r) override;
    nlohmann::json reflectors() override;
    bool member_joined(std::string const& token, std::string const& name, std::string const& conn) override;
    void member_left(std::string const& token, bool left, std::string const& conn) override;
    bool seat_live(std::string const& token) override;
    bool available() const override { return link_.reachable(); }

private:
    struct reply;
    /// Runs the script; returns false (and logs) if Redis is unreachable.
    bool eval(std::vector<std::string> const& args, std::string& out_str, long long& out_int, bool& is_nil);

    redis::link link_;
    options opts_;
    std::uint32_t heartbeat_ttl_ms_;
};

}  // namespace lockstep::router
