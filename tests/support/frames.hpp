// Client frames and HTTP calls that many tests send: a JOIN like the real clients', a
// SEND, and a JSON POST.
#pragma once

#include "support/ws_client.hpp"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace lockstep::test {

inline nlohmann::json
join_msg(std::string const& user, int tick = 50, int leave_delay = 300)
{
    return {{"id", "ignored"},
            {"action", "JOIN"},
            {"args",
             {{"name", "it/demo"},
              {"apiKey", "none"},
              {"appId", "it"},
              {"persistentId", "pid"},
              {"version", 1},
              {"user", user},
              {"ticks", {{"tick", tick}, {"delay", 0}}},
              {"tove", "tv"},
              {"leaveDelay", leave_delay}}}};
}

inline nlohmann::json
send_msg(std::string const& payload)
{
    return {{"id", "ignored"}, {"action", "SEND"}, {"args", {0, 0, payload, 5}}};
}

/// POSTs `body` as JSON; the answer's body as JSON (discarded if it is not JSON).
inline nlohmann::json
post_json(std::uint16_t port, std::string const& target, nlohmann::json const& body, int* status = nullptr)
{
    auto r = http_request(port, "POST", target, body.dump(), "Content-Type: application/json\r\n");
    if (status)
        *status = r.status;
    return nlohmann::json::parse(r.body, nullptr, false);
}

}  // namespace lockstep::test
