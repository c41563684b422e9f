#include <lockstep/client/router.hpp>

#include "client/json_field.hpp"
#include "client/net.hpp"

#include <spdlog/spdlog.h>

namespace lockstep::client {

namespace {

using namespace std::chrono_literals;

std::string
url_encode(std::string const& s)
{
    static char const hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

std::string
base_of(std::string router)
{
    while (!router.empty() && router.back() == '/')
        router.pop_back();
    return router;
}

// POSTs `body` to the router; the JSON answer, or sets ec.
json
call(std::string const& url, json const& body, std::error_code& ec, std::string const& ca_file)
{
    ec.clear();
    auto r = detail::http_request("POST", url, body.dump(), "application/json", 10s, {ca_file});
    if (r.ec) {
        spdlog::error("lockstep: router {}: {}", url, r.ec.message());
        ec = errc::router_failed;
        return {};
    }
    auto answer = json::parse(r.body, nullptr, false);
    if (r.status != 200 || answer.is_discarded() || !answer.is_object()) {
        spdlog::error("lockstep: router {} answered {}: {}", url, r.status, r.body.substr(0, 300));
        ec = errc::router_failed;
        return {};
    }
    return answer;
}

}  // namespace

room_seat
reserve_seat(std::string const& router, std::string const& room, std::string const& user, std::error_code& ec,
             std::string const& region, std::string const& tls_ca_file)
{
    json body = {{"user", user}};
    if (!region.empty())
        body["region"] = region;
    auto a = call(base_of(router) + "/v1/rooms/" + url_encode(room) + "/join", body, ec, tls_ca_file);
    if (ec)
        return {};
    room_seat s;
    s.room = detail::field(a, "room", room);
    s.session = detail::field(a, "session", "");
    s.shard = detail::field(a, "shard", 0);
    s.reflector = detail::field(a, "reflector", "");
    s.files = detail::field(a, "files", "");
    s.expires_in_ms = detail::field(a, "expires_in_ms", std::int64_t(0));
    if (s.session.empty() || s.reflector.empty()) {
        spdlog::error("lockstep: router answer without session or reflector: {}", a.dump());
        ec = errc::router_failed;
        return {};
    }
    return s;
}

bool
release_seat(std::string const& router, std::string const& room, std::string const& user, std::error_code& ec,
             std::string const& tls_ca_file)
{
    auto a = call(base_of(router) + "/v1/rooms/" + url_encode(room) + "/leave", {{"user", user}}, ec, tls_ca_file);
    return !ec && detail::field(a, "freed", false);
}

std::unique_ptr<session>
join_room(std::string const& router, std::string const& room, std::string const& user, join_options options,
          std::error_code& ec, std::string const& region, room_seat* seat)
{
    auto s = reserve_seat(router, room, user, ec, region, options.tls_ca_file);
    if (ec)
        return nullptr;
    options.reflector = s.reflector;
    options.session_name = s.session;
    if (options.files.empty())
        options.files = s.files;
    if (seat)
        *seat = s;
    return session::join(std::move(options), ec);
}

}  // namespace lockstep::client
