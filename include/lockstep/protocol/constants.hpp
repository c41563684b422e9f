// Wire-protocol constants shared by the reflector and the client SDK.
// See docs/protocol.md for the meaning of each value.
#pragma once

#include <cstdint>
#include <string_view>

namespace lockstep::protocol {

/// Sequence counter of a fresh session; its first event gets seq_start + 1 (0xFFFFFFF1).
/// Must match the JavaScript client's constant.
inline constexpr std::uint32_t seq_start = 0xFFFFFFF0u;

/// "a is before b" for wrap-around uint32 sequence numbers, as the client compares them.
constexpr bool
seq_before(std::uint32_t a, std::uint32_t b) noexcept
{
    std::uint32_t d = b - a;
    return d != 0 && d < (1u << 27);
}

/// Reflector messages longer than this many bytes are sent as _CHUNK frames (the
/// reference counts UTF-16 units; bytes are never fewer, so we chunk no later).
inline constexpr std::size_t chunk_threshold = 1'000'000;

/// Close codes (docs/protocol.md, "Close codes"). Clients reconnect on codes below 4100.
enum class close_code : std::uint16_t {
    normal = 1000,
    going_away = 1001,          // reflector shutting down / draining: reconnect elsewhere
    unsupported_data = 1003,    // binary frame
    invalid_payload = 1007,     // text frame that is not UTF-8
    too_big = 1009,             // frame over --max-frame-bytes
    internal_error = 1011,      // the reflector failed to handle a message (logged)
    try_again_later = 1013,     // outbound queue over --max-queue-bytes (slow consumer)
    unknown_session = 4000,
    client_unresponsive = 4001,
    client_inactive = 4002,
    please_reconnect = 4003,
    too_many_messages = 4005,   // over the per-connection message rate (--max-message-rate)
    too_many_sessions = 4006,   // a JOIN would create a session over --max-sessions
    session_full = 4007,        // the session has --max-clients-per-session members
    sync_budget = 4008,         // SYNC bytes in flight over --max-sync-bytes
    outdated_protocol = 4100,
    bad_app_id = 4101,
    malformed_message = 4102,
    bad_api_key = 4103,
    unknown_error = 4109,
    never_joined = 4121,
};

/// Whether the real client reconnects by itself after this close code.
constexpr bool
client_reconnects(close_code c) noexcept
{
    auto v = static_cast<std::uint16_t>(c);
    return v != 1000 && v < 4100;
}

}  // namespace lockstep::protocol
