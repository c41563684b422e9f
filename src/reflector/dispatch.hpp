// Protocol dispatch: which client action calls which session method, the membership
// rules (who may act on a session), JOIN handling and router seat reports. One function
// over a small host interface, so any transport (the server's WebSocket connections, a
// test's in-memory peer) drives sessions the same way.
//
// @par Thread safety
// None: the host, its sessions, the membership and the peer belong to one thread.
#pragma once

#include "protocol/json_scan.hpp"
#include "reflector/ports.hpp"
#include "reflector/session.hpp"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace lockstep {

/// Limits the dispatch applies to every connection (docs/operations.md, "Limits"). 0
/// turns a limit off.
struct dispatch_limits {
    std::size_t max_join_bytes = 64u << 10;           // JOIN args (user, tove, names...); more: 4102
    std::uint32_t max_clients_per_session = 5000;     // connected members; one more: 4007
    std::uint32_t message_rate = 100;                 // frames per second per connection (refill)
    std::uint32_t message_burst = 200;                // frames at once (bucket size); over: 4005
};

/// Session ids are the last segment of the upgrade URL: 1 to this many bytes of `A-Z a-z
/// 0-9 - _ . ~ % ! $ & ' ( ) * + , ; = : @` (the characters of a URL path segment; the
/// real client's ids are 43 base64url characters). Others are refused at JOIN with 4100.
inline constexpr std::size_t max_session_id_bytes = 128;
bool
valid_session_id(std::string_view id) noexcept;

/// A per-connection token bucket on the host's clock, in integer micro-tokens: a couple
/// of integer operations per frame.
class rate_bucket {
public:
    /// Takes one token at `now_us`; false when none is left.
    bool
    take(std::int64_t now_us, std::uint32_t rate, std::uint32_t burst) noexcept
    {
        constexpr std::int64_t one = 1'000'000;
        std::int64_t const full = static_cast<std::int64_t>(burst) * one;
        if (last_us_ < 0) {
            tokens_ = full;
        } else {
            // Clamped so that a long idle time cannot overflow: it only refills the bucket.
            std::int64_t elapsed = std::min<std::int64_t>(now_us - last_us_, 3'600'000'000);
            tokens_ = std::min(full, tokens_ + std::max<std::int64_t>(elapsed, 0) * rate);
        }
        last_us_ = now_us;
        if (tokens_ < one)
            return false;
        tokens_ -= one;
        return true;
    }

private:
    std::int64_t tokens_ = 0;
    std::int64_t last_us_ = -1;  // not used yet: starts full
};

/// The runtime that owns sessions (a server worker; a fake in tests), as the dispatch
/// sees it.
class session_host {
public:
    virtual ~session_host() = default;
    /// The live session with this id, or null.
    virtual session* find_session(std::string const& id) = 0;
    /// Finds or creates the session (creation only records the id; the first JOIN sets
    /// it up).
    virtual session& session_for(std::string const& id) = 0;
    /// Called by the dispatch after each call into a session that may change its
    /// deadlines: the host re-arms the session's timer, or deletes the session when it
    /// has expired (the dispatch does not touch `s` afterwards).
    virtual void touched(session& s) = 0;
    /// Router membership. A connection that came through seat `token` joined the session
    /// named `name` (JOIN's `appId/name`); `conn` names the connection uniquely in the
    /// cluster. Asynchronous: the host confirms the seat in the directory when the
    /// directory answers; the dispatch never waits for it.
    virtual void seat_joined(std::string const& token, std::string const& name, std::string const& conn) = 0;
    /// That connection is gone: `normal` (close 1000 from the client) frees the seat, a
    /// drop keeps it reserved for a reconnect.
    virtual void seat_left(std::string const& token, bool normal, std::string const& conn) = 0;
    /// Where the dispatch counts its refusals (null: not counted).
    virtual session_counters* counters() noexcept { return nullptr; }
    /// The limits to apply, and the clock the message rate is measured on (µs).
    virtual dispatch_limits const& limits() const noexcept = 0;
    virtual std::int64_t now_us() const noexcept = 0;
    /// Whether a JOIN may create one more session (--max-sessions, over every worker).
    virtual bool may_create_session() noexcept { return true; }
};

/// One connection's standing with its session: kept by the transport, read and written
/// only by the dispatch.
struct membership {
    std::string session_id;     // the session the URL path names
    std::string seat_token;     // router seat from the URL path (/r/<token>/<id>); may be empty
    std::string conn_key;       // the connection's name in the router
    session* joined = nullptr;  // set once a JOIN was answered with SYNC: a member from then on
    bool join_seen = false;     // a JOIN arrived (whether or not it succeeded)
    bool seat_reported = false; // seat_joined() was called: seat_left() follows
    rate_bucket rate;           // --max-message-rate
    std::vector<json_scan::member> scratch;
    /// Admission of a JOIN (access control), set by the transport: `s` is the session the
    /// JOIN is for, `args` its arguments. False refuses it: the connection is closed with
    /// 4103 and `why`. Unset: every JOIN is admitted.
    std::function<bool(session& s, std::string_view args, std::string& why)> admit_join;
};

/// Handles one text frame that `p` sent: parses it, applies the membership rules and
/// calls the session. Bad input closes `p` with the documented code; nothing thrown
/// escapes (a failure is logged and closes `p` with 1011).
void
dispatch(session_host& host, membership& m, peer& p, std::string_view text);

/// The connection is gone: it leaves its session (announced after the session's
/// leaveDelay) and its seat is reported. Idempotent.
void
hang_up(session_host& host, membership& m, peer& p, bool normal_close);

}  // namespace lockstep
