// Joining through the lockstep router: ask any reflector's router API for a seat in a
// room (docs/router.md), then join the room shard it names. Blocking calls; any thread.
#pragma once

#include <lockstep/client/session.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <system_error>

namespace lockstep::client {

/// A reserved seat: where to connect, and for how long the reservation holds.
struct room_seat {
    std::string room;
    std::string session;    // the shard's session name
    int shard = 0;
    std::string reflector;  // seat URL ws://host:port/r/<token>; the SDK appends the session id
    std::string files;      // files URL of that reflector
    std::int64_t expires_in_ms = 0;
};

/// POST <router>/v1/rooms/<room>/join {user, region}. `router` is a reflector's HTTP base
/// URL, e.g. "http://127.0.0.1:9090" or "https://eu.example.com". Calling it again for
/// the same user returns the same seat. On failure sets `ec` (errc::router_failed) and
/// logs the router's answer. `tls_ca_file`: as join_options::tls_ca_file.
room_seat reserve_seat(std::string const& router, std::string const& room, std::string const& user,
                       std::error_code& ec, std::string const& region = {}, std::string const& tls_ca_file = {});

/// Frees the user's seat at once (leaving the session also frees it, when the connection
/// closes with 1000). Returns whether a seat was freed.
bool release_seat(std::string const& router, std::string const& room, std::string const& user, std::error_code& ec,
                  std::string const& tls_ca_file = {});

/// reserve_seat (with options.tls_ca_file), then session::join with `options.reflector`
/// and `options.session_name` set from the seat (and `options.files`, unless already
/// set). `seat`, if given, receives the seat.
std::unique_ptr<session> join_room(std::string const& router, std::string const& room, std::string const& user,
                                   join_options options, std::error_code& ec, std::string const& region = {},
                                   room_seat* seat = nullptr);

}  // namespace lockstep::client
