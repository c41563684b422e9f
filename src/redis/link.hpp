// One blocking connection to Redis (hiredis): URL parsing, AUTH and SELECT on every
// (re)connection, commands and pipelines with short time-outs, one reconnect attempt
// when the connection broke. Shared by the router directory and the session store.
//
// @par Thread safety
// All members may be called from any thread (one connection, one mutex). Calls block
// for up to the time-out: the server makes them only on its directory thread, never on
// an event loop.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct redisContext;

namespace lockstep::redis {

/// A reply, copied out of hiredis.
struct value {
    enum class kind { nil, string, status, integer, array, error };
    kind type = kind::nil;
    std::string str;               // string, status, error
    long long integer = 0;
    std::vector<value> elements;   // array

    bool is_error() const noexcept { return type == kind::error; }
    bool is_nil() const noexcept { return type == kind::nil; }
};

using command_args = std::vector<std::string_view>;

class link {
public:
    /// Parses `url` (redis://[[user]:password@]host[:port][/db]) and connects. Throws
    /// std::runtime_error on a bad URL or when Redis cannot be reached (start-up only).
    explicit link(std::string const& url, std::chrono::milliseconds timeout = std::chrono::milliseconds(500));
    ~link();
    link(link const&) = delete;
    link& operator=(link const&) = delete;

    /// Runs one command; nullopt when Redis cannot be reached (a broken connection is
    /// re-opened once). A command may have run even when its reply was lost.
    std::optional<value> command(command_args const& args);
    /// Sends every command, then reads every reply (one round trip); nullopt when the
    /// connection broke before all replies were read (any prefix may have run). Not
    /// retried: the caller decides what is safe to repeat.
    std::optional<std::vector<value>> pipeline(std::vector<command_args> const& cmds);
    /// False after the last call found Redis unreachable. For `retry_after` after such a
    /// call, calls fail at once without trying the network: while Redis hangs (stopped,
    /// unreachable) one call in each interval waits for the time-out, not every call, so
    /// the thread making them keeps its cadence (lease renewal, peer checks).
    bool reachable() const noexcept { return reachable_.load(); }
    static constexpr std::chrono::milliseconds retry_after{200};
    /// Unreachable, or a call has been waiting for its reply longer than `longer_than`
    /// (Redis hangs). Any thread; never blocks.
    bool hanging(std::chrono::milliseconds longer_than) const noexcept;
    /// hanging() of any link of this process (the router's and the sessions' links share
    /// one thread, so one of them may hang while the other waits its turn). Any thread.
    static bool any_hanging(std::chrono::milliseconds longer_than);
    /// "host:port" for log lines (never the password).
    std::string endpoint() const { return host_ + ":" + std::to_string(port_); }

private:
    static std::mutex& registry_mu();
    static std::vector<link const*>& registry();  // every constructed link, for any_hanging()
    bool connect();
    bool backing_off() const;  // with mu_ held
    void failed();             // with mu_ held

    std::string host_;
    int port_ = 6379;
    std::string user_, password_;
    int db_ = 0;
    std::chrono::milliseconds timeout_;
    std::string last_error_;
    std::mutex mu_;
    redisContext* ctx_ = nullptr;
    std::atomic<bool> reachable_{true};
    std::chrono::steady_clock::time_point last_failure_{};
    std::atomic<std::int64_t> busy_since_{0};  // steady ms when the call in progress began; 0: none
};

}  // namespace lockstep::redis
