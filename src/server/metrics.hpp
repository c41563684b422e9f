// Prometheus metrics. Each worker thread owns one `worker_metrics` block and is its only
// writer (relaxed atomics, no shared cache lines on the hot path); /metrics sums them.
#pragma once

#include "reflector/ports.hpp"

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace lockstep {

/// Upper bounds (seconds) of the journal fsync latency histogram buckets.
inline constexpr std::array<double, 10> fsync_buckets_s = {0.0005, 0.001, 0.002, 0.005, 0.01,
                                                           0.02,   0.05,  0.1,   0.25,  1};

/// A worker's counters: the sessions' own (session_counters, a port of the reflector
/// core) plus the connection and write path's.
///
/// @par Thread safety
/// Written only by the owning worker thread (relaxed atomics); read by /metrics from
/// any thread.
struct alignas(64) worker_metrics : session_counters {
    gauge connections{0};        // open WebSocket connections
    gauge queue_bytes{0};        // unsent outbound bytes over all connections
    gauge coalesce_us{0};        // current write-coalescing interval
    gauge tick_stretch_pct{100}; // exposition of the worker's load_signal (tick stretch %)
    counter frames_in{0};        // client frames read
    counter bytes_in{0};         // client frame payload bytes
    counter bytes_out{0};        // bytes written to client sockets
    counter writes{0};           // gathered socket writes
    // Journal (docs/durability.md). Written by the worker; the fsync histogram by the
    // journal's fsync thread (or the worker when --journal-fsync-ms is 0), never both.
    counter journal_bytes{0};         // bytes written to session journals
    counter journal_writes{0};        // write(2) calls of the loop to its write-ahead log
    counter journal_catch_up_writes{0};  // segment writes by the journal thread (off the loop)
    counter journal_write_errors{0};  // failed journal writes (records kept, retried)
    counter journal_tails_dropped{0}; // torn or corrupt journal tails found on resume
    counter sessions_resumed{0};      // sessions brought back from their journal
    counter sessions_handed_off{0};   // cluster: sessions handed to the reflector a JOIN reached
    counter connections_forwarded{0}; // cluster: connections relayed to their session's owner
    gauge journal_disk_bytes{0};      // bytes in this worker's journals (at the last sweep)
    gauge cluster_outage{0};          // cluster: 1 while output is shown without Redis (an outage)
    std::array<counter, fsync_buckets_s.size() + 1> fsync{};  // last = +Inf
    counter fsync_count{0};
    std::atomic<double> fsync_sum_s{0};
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
