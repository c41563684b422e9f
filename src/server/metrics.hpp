// Prometheus metrics. Each worker thread owns one `worker_metrics` block and is its only
// writer (relaxed atomics, no shared cache lines on the hot path); /metrics sums them.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace lockstep {

/// Upper bounds (ms) of the tick lateness histogram buckets.
inline constexpr std::array<double, 10> tick_late_buckets_ms = {0.5, 1, 2, 5, 10, 20, 50, 100, 250, 1000};
/// Upper bounds (seconds) of the journal fsync latency histogram buckets.
inline constexpr std::array<double, 10> fsync_buckets_s = {0.0005, 0.001, 0.002, 0.005, 0.01,
                                                           0.02,   0.05,  0.1,   0.25,  1};

struct alignas(64) worker_metrics {
    using counter = std::atomic<std::uint64_t>;
    using gauge = std::atomic<std::int64_t>;

    gauge connections{0};        // open WebSocket connections
    gauge sessions{0};           // live sessions
    gauge queue_bytes{0};        // unsent outbound bytes over all connections
    gauge coalesce_us{0};        // current write-coalescing interval
    gauge tick_stretch_pct{100}; // tick intervals are stretched to this % under overload
    counter events_in{0};        // SEND/TUTTI-first messages accepted
    counter events_out{0};       // RECV frames queued to clients
    counter frames_in{0};        // client frames read
    counter bytes_in{0};         // client frame payload bytes
    counter bytes_out{0};        // bytes written to client sockets
    counter ticks{0};            // TICK frames queued
    counter writes{0};           // gathered socket writes
    counter debounced{0};        // SENDs dropped by tags debounce
    counter refused{0};          // SENDs refused at --log-max
    std::array<counter, tick_late_buckets_ms.size() + 1> tick_late{};  // last = +Inf
    counter tick_late_count{0};
    std::atomic<double> tick_late_sum_ms{0};
    // Journal (docs/durability.md). Written by the worker; the fsync histogram by the
    // journal's fsync thread (or the worker when --journal-fsync-ms is 0), never both.
    counter journal_bytes{0};         // bytes written to session journals
    counter journal_writes{0};        // write(2) calls to session journals
    counter journal_write_errors{0};  // failed journal writes (records kept, retried)
    counter journal_tails_dropped{0}; // torn or corrupt journal tails found on resume
    counter sessions_resumed{0};      // sessions brought back from their journal
    gauge journal_disk_bytes{0};      // bytes in this worker's journals (at the last sweep)
    std::array<counter, fsync_buckets_s.size() + 1> fsync{};  // last = +Inf
    counter fsync_count{0};
    std::atomic<double> fsync_sum_s{0};

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
    void observe_tick_late(double ms) noexcept;
    void observe_fsync(double seconds) noexcept;
};

/// Close codes are counted from any thread (closes are rare), under a mutex.
class close_counter {
public:
    void
    add(std::uint16_t code)
    {
        std::lock_guard lock(mu_);
        ++counts_[code];
    }
    std::map<std::uint16_t, std::uint64_t>
    snapshot() const
    {
        std::lock_guard lock(mu_);
        return counts_;
    }

private:
    mutable std::mutex mu_;
    std::map<std::uint16_t, std::uint64_t> counts_;
};

/// Renders Prometheus text exposition format for all workers.
std::string
render_metrics(std::vector<worker_metrics const*> const& workers, close_counter const& closes,
               std::uint64_t http_requests, bool draining);

}  // namespace lockstep
