// Error codes of the client SDK. Asynchronous failures (a dropped connection, a snapshot
// that cannot be downloaded) are reported as std::error_code with this category.
#pragma once

#include <system_error>

namespace lockstep::client {

enum class errc {
    bad_options = 1,         // join_options incomplete or malformed (message says which)
    connect_failed,          // TCP connect or WebSocket upgrade to the reflector failed
    join_timeout,            // not in sync within join_options::join_timeout
    wrong_password,          // the session's tove does not decrypt with our password
    rejected,                // the reflector closed with a code >= 4100 (no reconnect)
    protocol_error,          // a reflector message we cannot follow (gap, time going back)
    snapshot_unavailable,    // SYNC named a snapshot that could not be fetched or read
    decrypt_failed,          // an event or snapshot failed its HMAC check
    left,                    // the session was left (leave() was called)
    router_failed,           // the router refused or could not be reached
    model_failed,            // model code threw: the replica can no longer be trusted
};

std::error_category const&
error_category() noexcept;

inline std::error_code
make_error_code(errc e) noexcept
{
    return {static_cast<int>(e), error_category()};
}

}  // namespace lockstep::client

template <>
struct std::is_error_code_enum<lockstep::client::errc> : std::true_type {};
