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
