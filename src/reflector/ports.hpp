// The reflector core's ports: what a session needs from the world around it, as small
// interfaces and plain counters that the runtime (the server's workers, or a test)
// provides. Nothing here knows sockets, threads, metrics exposition or storage.
#pragma once

#include "protocol/frame.hpp"

#include <lockstep/protocol/constants.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lockstep {

/// A connection as a session sees it.
///
/// @par Thread safety
/// Called only on the thread that owns the session (and the connection).
class peer {
public:
    virtual ~peer() = default;
    /// Queues a message. Never drops it: a peer that cannot keep up closes itself.
    virtual void deliver(out_ptr const& m) = 0;
    /// Queues a SYNC. It is not counted against the peer's queue limit: a session's
    /// log may legitimately be larger than the limit, and refusing it would make the
    /// joiner reconnect forever.
    virtual void deliver_sync(out_ptr const& m) { deliver(m); }
    /// Queues a TICK: a time beacon is worth little late, so it is written at the end
    /// of the current loop turn even while output is being coalesced.
    virtual void deliver_tick(out_ptr const& m) { deliver(m); }
    /// True while the connection's socket is full and output waits for it (ticks are
    /// skipped then).
    virtual bool backlogged() const noexcept = 0;
    /// Closes the connection with a WebSocket close code.
    virtual void close(protocol::close_code code, std::string_view reason) = 0;
    /// Short text for logs ("c17 127.0.0.1:5555").
    virtual std::string const& tag() const noexcept = 0;
};

/// Where SAVE records live: (appId, persistentId) -> URL of the persistent data.
///
/// @par Thread safety
/// Implementations must accept calls from every worker thread at once.
class persistence_index {
public:
    virtual ~persistence_index() = default;
    virtual std::optional<std::string> lookup(std::string const& app_id, std::string const& persistent_id) = 0;
    virtual void record(std::string const& app_id, std::string const& persistent_id, std::string const& url) = 0;
};

/// Upper bounds (ms) of the tick lateness histogram buckets.
inline constexpr std::array<double, 10> tick_late_buckets_ms = {0.5, 1, 2, 5, 10, 20, 50, 100, 250, 1000};

/// Why the core refused a client's input, for `lockstep_limit_refusals_total{limit=...}`
/// (docs/operations.md, "Limits"). Each has a documented close code or outcome
/// (docs/protocol.md, section 16).
enum class refusal : std::uint8_t {
    not_member,           // TUTTI/SNAP/SAVE/TICKS from a connection that did not JOIN: close 4000
    repeated_join,        // a JOIN on a connection that is a member already: ignored
    snapshot,             // SNAP in the future, after the current seq, or with a long URL: ignored
    url,                  // SAVE with a URL over the limit: ignored
    sync_bytes,           // a JOIN whose SYNC would go over --max-sync-bytes in flight: close 4008
    sync_timeout,         // a SYNC not written within --sync-timeout-ms (the joiner does not read): connection dropped
    session_id,           // JOIN on a URL whose session id is too long or has other characters: close 4100
    join_args,            // JOIN args over --max-join-bytes, or a name over 1024 bytes: close 4102
    message_rate,         // frames over --max-message-rate: close 4005
    sessions,             // a JOIN that would create a session over --max-sessions: close 4006
    clients_per_session,  // a JOIN into a session with --max-clients-per-session members: close 4007
    count_
};

inline constexpr char const*
refusal_name(refusal r) noexcept
{
    switch (r) {
    case refusal::not_member: return "not_member";
    case refusal::repeated_join: return "repeated_join";
    case refusal::snapshot: return "snapshot";
    case refusal::url: return "url";
    case refusal::sync_bytes: return "sync_bytes";
    case refusal::sync_timeout: return "sync_timeout";
    case refusal::session_id: return "session_id";
    case refusal::join_args: return "join_args";
    case refusal::message_rate: return "message_rate";
    case refusal::sessions: return "sessions";
    case refusal::clients_per_session: return "clients_per_session";
    case refusal::count_: break;
    }
    return "?";
}

/// What sessions count. One block per owning thread.
///
/// @par Thread safety
/// Written only by the thread that owns the sessions (relaxed atomics, no
/// read-modify-write); read from any thread (the metrics exposition sums the blocks).
struct session_counters {
    using counter = std::atomic<std::uint64_t>;
    using gauge = std::atomic<std::int64_t>;

    gauge sessions{0};           // live sessions
    counter events_in{0};        // SEND/TUTTI-first messages accepted
    counter events_out{0};       // RECV frames queued to clients
    counter ticks{0};            // TICK frames queued
    counter debounced{0};        // SENDs dropped by tags debounce
    counter refused{0};          // SENDs refused at --log-max
    std::array<counter, static_cast<std::size_t>(refusal::count_)> refusals{};  // by refusal
    std::array<counter, tick_late_buckets_ms.size() + 1> tick_late{};  // last = +Inf
    counter tick_late_count{0};
    std::atomic<double> tick_late_sum_ms{0};

    void
    add(counter& c, std::uint64_t n = 1) noexcept
    {
        c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    void
    add(gauge& g, std::int64_t n) noexcept
    {
        g.store(g.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    }
    void
    refused_for(refusal r) noexcept
    {
        add(refusals[static_cast<std::size_t>(r)]);
    }
    void
    observe_tick_late(double ms) noexcept
    {
        std::size_t i = 0;
        while (i < tick_late_buckets_ms.size() && ms > tick_late_buckets_ms[i])
            ++i;
        add(tick_late[i]);
        add(tick_late_count);
        tick_late_sum_ms.store(tick_late_sum_ms.load(std::memory_order_relaxed) + ms, std::memory_order_relaxed);
    }
};

/// A byte budget shared by every thread (--max-sync-bytes: SYNC bytes in flight over the
/// process). A limit of 0 never refuses but still counts.
///
/// @par Thread safety
/// Any thread.
class byte_budget {
public:
    explicit byte_budget(std::uint64_t limit = 0) noexcept : limit_(limit) {}
    void set_limit(std::uint64_t limit) noexcept { limit_ = limit; }
    /// Takes `n` bytes; false (nothing taken) when that would go over the limit.
    bool
    try_take(std::uint64_t n) noexcept
    {
        auto used = used_.load(std::memory_order_relaxed);
        do {
            if (limit_ != 0 && used + n > limit_)
                return false;
        } while (!used_.compare_exchange_weak(used, used + n, std::memory_order_relaxed));
        return true;
    }
    void give_back(std::uint64_t n) noexcept { used_.fetch_sub(n, std::memory_order_relaxed); }
    std::uint64_t used() const noexcept { return used_.load(std::memory_order_relaxed); }
    std::uint64_t limit() const noexcept { return limit_; }

private:
    std::uint64_t limit_;  // set before any thread uses it
    std::atomic<std::uint64_t> used_{0};
};

/// The load control input the owner of a set of sessions feeds (the server's worker
/// from its CPU samples; tests by hand): while the thread is overloaded, ticks are
/// stretched to this percentage of their interval. Sessions read it; they never read
/// a metric.
///
/// @par Thread safety
/// Written by the owning thread; readable from any thread (the /metrics gauge).
class load_signal {
public:
    std::int64_t
    tick_stretch_pct() const noexcept
    {
        return stretch_pct_.load(std::memory_order_relaxed);
    }
    void
    set_tick_stretch_pct(std::int64_t pct) noexcept
    {
        stretch_pct_.store(pct < 100 ? 100 : pct, std::memory_order_relaxed);
    }

private:
    std::atomic<std::int64_t> stretch_pct_{100};
};

}  // namespace lockstep
