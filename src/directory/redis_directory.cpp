#include "directory/redis_directory.hpp"

#include "directory/router_lua.hpp"

#include <spdlog/spdlog.h>


namespace lockstep::router {

using nlohmann::json;

namespace {

/// cjson encodes an empty Lua table as {}: where a list is meant, make it [].
json
as_list(json j)
{
    if (j.is_object() && j.empty())
        return json::array();
    return j;
}

}  // namespace

redis_directory::redis_directory(std::string const& url, options opts, std::uint32_t heartbeat_ttl_ms)
    : link_(url), opts_(std::move(opts)), heartbeat_ttl_ms_(heartbeat_ttl_ms)
{
}

redis_directory::~redis_directory() = default;

bool
redis_directory::eval(std::vector<std::string> const& args, std::string& out_str, long long& out_int, bool& is_nil)
{
    std::string ttl = std::to_string(heartbeat_ttl_ms_);
    redis::command_args argv{"EVAL", router_lua, "0", args[0], ttl};
    for (std::size_t i = 1; i < args.size(); ++i)
        argv.push_back(args[i]);
    // A retry after a broken connection may run the script twice: every operation is
    // idempotent for that reason (seat reports name their connection).
    auto r = link_.command(argv);
    if (!r)
        return false;
    is_nil = false;
    switch (r->type) {
    case redis::value::kind::string:
    case redis::value::kind::status: out_str = std::move(r->str); break;
    case redis::value::kind::integer: out_int = r->integer; break;
    case redis::value::kind::nil: is_nil = true; break;
    case redis::value::kind::error: spdlog::error("redis script error: {}", r->str); return false;
    default: break;
    }
    return true;
}

std::optional<seat_answer>
redis_directory::join(std::string const& room, std::string const& user, std::string const& region, api_error& err)
{
    auto pol = policy_for(opts_, room);
    std::string s;
    long long n = 0;
    bool nil = false;
    if (!eval({"join", room, user, region, random_token(), std::to_string(pol.capacity), std::to_string(pol.overflow),
               std::to_string(pol.seat_ttl_ms), std::to_string(pol.retire_ms)},
              s, n, nil)) {
        err = {503, state_unavailable, "room"};
        return std::nullopt;
    }
    auto j = json::parse(s, nullptr, false);
    if (!j.is_object()) {
        err = {500, "bad router state", "room"};
        return std::nullopt;
    }
    if (j.contains("error")) {
        err = {j.value("status", 500), j.value("error", ""), j.value("field", "")};
        return std::nullopt;
    }
    seat_answer a;
    a.room = j.value("room", "");
    a.session = j.value("session", "");
    a.shard = j.value("shard", 0u);
    a.reflector = j.value("reflector", "");
    a.files = j.value("files", "");
    a.expires_in_ms = j.value("expires_in_ms", std::int64_t{0});
    return a;
}

bool
redis_directory::leave(std::string const& room, std::string const& user)
{
    std::string s;
    long long n = 0;
    bool nil = false;
    return eval({"leave", room, user}, s, n, nil) && n == 1;
}

std::optional<json>
redis_directory::room_info(std::string const& room)
{
    std::string s;
    long long n = 0;
    bool nil = false;
    if (!eval({"room", room}, s, n, nil) || nil || s.empty())
        return std::nullopt;
    auto j = json::parse(s, nullptr, false);
    if (!j.is_object())
        return std::nullopt;
    j["shards"] = as_list(j["shards"]);
    return j;
}

json
redis_directory::rooms(std::size_t limit)
{
    std::string s;
    long long n = 0;
    bool nil = false;
    if (!eval({"rooms", std::to_string(limit)}, s, n, nil) || nil || s.empty())
        return json::array();
    auto list = as_list(json::parse(s, nullptr, false));
    if (!list.is_array())
        return json::array();
    for (auto& room : list)
        if (room.is_object())
            room["shards"] = as_list(room["shards"]);
    return list;
}

std::optional<json>
redis_directory::create_child(std::string const& parent, std::string const& purpose, std::string const& region,
                              api_error& err)
{
    std::string s;
    long long n = 0;
    bool nil = false;
    if (!eval({"child", parent, purpose, region}, s, n, nil)) {
        err = {503, state_unavailable, "name"};
        return std::nullopt;
    }
    auto j = json::parse(s, nullptr, false);
    if (j.contains("error")) {
        err = {j.value("status", 500), j.value("error", ""), j.value("field", "")};
        return std::nullopt;
    }
    return j;
}

json
redis_directory::children(std::string const& parent)
{
    std::string s;
    long long n = 0;
    bool nil = false;
    if (!eval({"children", parent}, s, n, nil))
        return json::array();
    return as_list(json::parse(s, nullptr, false));
}

void
redis_directory::register_reflector(reflector_info r)
{
    json info = {{"region", r.region}, {"url", r.url}, {"peer", r.peer_url}, {"files", r.files_url}, {"load", r.load},
                 {"draining", r.draining}, {"instance", r.instance}};
    std::string s;
    long long n = 0;
    bool nil = false;
    eval({"register", r.id, info.dump()}, s, n, nil);
}

json
redis_directory::reflectors()
{
    std::string s;
    long long n = 0;
    bool nil = false;
    if (!eval({"reflectors"}, s, n, nil))
        return json::array();
    return as_list(json::parse(s, nullptr, false));
}

bool
redis_directory::member_joined(std::string const& token, std::string const& name, std::string const& conn)
{
    std::string s;
    long long n = 0;
    bool nil = false;
    return eval({"mjoin", token, name, conn}, s, n, nil) && n == 1;
}

void
redis_directory::member_left(std::string const& token, bool left, std::string const& conn)
{
    std::string s;
    long long n = 0;
    bool nil = false;
    eval({"mleft", token, left ? "1" : "0", conn}, s, n, nil);
}

bool
redis_directory::seat_live(std::string const& token)
{
    std::string s;
    long long n = 0;
    bool nil = false;
    return eval({"seat", token}, s, n, nil) && n == 1;
}

}  // namespace lockstep::router
