#include "server/metrics.hpp"

#include "server/process_metrics.hpp"

#include <lockstep/version.hpp>

#include <fmt/format.h>

#include <algorithm>

namespace lockstep {

std::string
render_metrics(std::vector<worker_metrics const*> const& workers, close_counter const& closes,
               std::uint64_t http_requests, bool draining)
{
    std::string out;
    auto sum = [&](auto member) {
        long double s = 0;
        for (auto const* w : workers)
            s += static_cast<long double>((w->*member).load(std::memory_order_relaxed));
        return s;
    };
    out += fmt::format("# HELP lockstep_build_info The running build: its version (always 1).\n"
                       "# TYPE lockstep_build_info gauge\n"
                       "lockstep_build_info{{version=\"{}\"}} 1\n",
                       version);
    auto max_of = [&](auto member) {
        long double m = 0;
        for (auto const* w : workers)
            m = std::max<long double>(m, static_cast<long double>((w->*member).load(std::memory_order_relaxed)));
        return m;
    };
    auto metric = [&](char const* name, char const* type, char const* help, long double v) {
        out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name,
                           static_cast<double>(v));
    };
    metric("lockstep_connections", "gauge", "Open WebSocket connections.", sum(&worker_metrics::connections));
    metric("lockstep_sessions", "gauge", "Live sessions.", sum(&worker_metrics::sessions));
    metric("lockstep_outbound_queue_bytes", "gauge", "Unsent outbound bytes over all connections.",
           sum(&worker_metrics::queue_bytes));
    metric("lockstep_write_coalesce_seconds", "gauge",
           "Largest current write-coalescing interval over the workers (0 = write at once).",
           max_of(&worker_metrics::coalesce_us) / 1e6);
    metric("lockstep_tick_stretch_percent", "gauge",
           "Largest current tick-interval stretch over the workers (100 = ticks as requested; more under overload).",
           max_of(&worker_metrics::tick_stretch_pct));
    metric("lockstep_events_in_total", "counter", "Events reflected: client SENDs and TUTTI first messages, plus reflector-generated users and tally events.",
           sum(&worker_metrics::events_in));
    metric("lockstep_events_out_total", "counter", "RECV frames queued to clients (one per event and recipient).", sum(&worker_metrics::events_out));
    metric("lockstep_frames_in_total", "counter", "Client frames read.", sum(&worker_metrics::frames_in));
    metric("lockstep_bytes_in_total", "counter", "Client frame bytes read.", sum(&worker_metrics::bytes_in));
    metric("lockstep_bytes_out_total", "counter", "Bytes written to client sockets.", sum(&worker_metrics::bytes_out));
    metric("lockstep_ticks_total", "counter", "TICK frames queued to clients.", sum(&worker_metrics::ticks));
    metric("lockstep_socket_writes_total", "counter", "Gathered socket writes.", sum(&worker_metrics::writes));
    metric("lockstep_debounced_total", "counter", "SENDs dropped by their debounce tag.",
           sum(&worker_metrics::debounced));
    metric("lockstep_refused_total", "counter", "SENDs refused because the message log is full.",
           sum(&worker_metrics::refused));
    metric("lockstep_http_requests_total", "counter", "Plain HTTP requests served.",
           static_cast<long double>(http_requests));
    metric("lockstep_draining", "gauge", "1 while the reflector drains.", draining ? 1 : 0);

    out += "# HELP lockstep_tick_lateness_seconds How late ticks fire against their schedule.\n"
           "# TYPE lockstep_tick_lateness_seconds histogram\n";
    std::uint64_t cum = 0;
    for (std::size_t i = 0; i <= tick_late_buckets_ms.size(); ++i) {
        for (auto const* w : workers)
            cum += w->tick_late[i].load(std::memory_order_relaxed);
        if (i < tick_late_buckets_ms.size())
            out += fmt::format("lockstep_tick_lateness_seconds_bucket{{le=\"{}\"}} {}\n",
                               tick_late_buckets_ms[i] / 1000, cum);
        else
            out += fmt::format("lockstep_tick_lateness_seconds_bucket{{le=\"+Inf\"}} {}\n", cum);
    }
    double lsum = 0;
    std::uint64_t lcount = 0;
    for (auto const* w : workers) {
        lsum += w->tick_late_sum_ms.load(std::memory_order_relaxed);
        lcount += w->tick_late_count.load(std::memory_order_relaxed);
    }
    out += fmt::format("lockstep_tick_lateness_seconds_sum {}\nlockstep_tick_lateness_seconds_count {}\n",
                       lsum / 1000, lcount);

    out += "# HELP lockstep_closes_total WebSocket closes sent by the reflector, by code.\n"
           "# TYPE lockstep_closes_total counter\n";
    for (auto const& [code, n] : closes.snapshot())
        out += fmt::format("lockstep_closes_total{{code=\"{}\"}} {}\n", code, n);
    out += render_process_metrics();
    return out;
}

}  // namespace lockstep
