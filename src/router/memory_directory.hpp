// The embedded directory: all router state in this process, one mutex. Every
// operation is a short critical section, so concurrent joins from any thread never
// over-fill a shard or create a shard twice.
//
// @par Thread safety
// All public members may be called from any thread.
#pragma once

#include "common/clock.hpp"
#include "router/directory.hpp"

#include <map>
#include <mutex>
#include <set>

namespace lockstep::router {

/// The embedded directory: all state in this process.
class memory_directory final : public directory {
public:
    memory_directory(clock_source const& clock, options opts, std::uint32_t heartbeat_ttl_ms = 10000);

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
