#include "server/metrics.hpp"

#include "server/process_metrics.hpp"

#include <lockstep/version.hpp>

#include <fmt/format.h>

#include <algorithm>

namespace lockstep {

void
worker_metrics::observe_fsync(double seconds) noexcept
{
    std::size_t i = 0;
    while (i < fsync_buckets_s.size() && seconds > fsync_buckets_s[i])
        ++i;
    add(fsync[i]);
    add(fsync_count);
    fsync_sum_s.store(fsync_sum_s.load(std::memory_order_relaxed) + seconds, std::memory_order_relaxed);
}

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

    metric("lockstep_journal_bytes_total", "counter", "Bytes written to session journals.",
           sum(&worker_metrics::journal_bytes));
    metric("lockstep_journal_writes_total", "counter",
           "write(2) calls of the event loops to their journal write-ahead logs (at most one per worker per loop turn).",
           sum(&worker_metrics::journal_writes));
    metric("lockstep_journal_catch_up_writes_total", "counter",
           "Writes of the journal threads copying write-ahead records into session journal files (off the loops).",
           sum(&worker_metrics::journal_catch_up_writes));
    metric("lockstep_journal_write_errors_total", "counter",
           "Journal writes that failed (disk full, I/O error); the records stay staged and are retried.",
           sum(&worker_metrics::journal_write_errors));
    metric("lockstep_journal_tails_dropped_total", "counter",
           "Torn or corrupt journal tails (or incomplete segments) left out when a session was resumed.",
           sum(&worker_metrics::journal_tails_dropped));
    metric("lockstep_sessions_resumed_total", "counter", "Sessions brought back from their journal by a JOIN.",
           sum(&worker_metrics::sessions_resumed));
    metric("lockstep_session_handoffs_total", "counter",
           "Cluster: sessions this reflector handed off because a JOIN for them reached another reflector.",
           sum(&worker_metrics::sessions_handed_off));
    metric("lockstep_connections_forwarded_total", "counter",
           "Cluster: WebSocket connections relayed to their session's owner because the session could not move yet.",
           sum(&worker_metrics::connections_forwarded));
    metric("lockstep_cluster_outage", "gauge",
           "Cluster: 1 while no reflector reaches Redis and this one shows its sessions' output without it.",
           max_of(&worker_metrics::cluster_outage));
    metric("lockstep_journal_disk_bytes", "gauge", "Bytes in session journals and their write-ahead logs (as of the last retention sweep).",
           sum(&worker_metrics::journal_disk_bytes));
    auto histogram = [&](char const* name, char const* help, auto const& bounds, auto buckets, auto sum_member,
                         auto count_member, double scale) {
        // scale: from the unit the workers count in to the exported base unit (seconds)
        out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
        std::uint64_t cum = 0;
        for (std::size_t i = 0; i <= bounds.size(); ++i) {
            for (auto const* w : workers)
                cum += (w->*buckets)[i].load(std::memory_order_relaxed);
            if (i < bounds.size())
                out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds[i] * scale, cum);
            else
                out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, cum);
        }
        double total = 0;
        std::uint64_t count = 0;
        for (auto const* w : workers) {
            total += (w->*sum_member).load(std::memory_order_relaxed);
            count += (w->*count_member).load(std::memory_order_relaxed);
        }
        out += fmt::format("{}_sum {}\n{}_count {}\n", name, total * scale, name, count);
    };
    histogram("lockstep_journal_fsync_seconds", "Time taken by each journal fdatasync.", fsync_buckets_s,
              &worker_metrics::fsync, &worker_metrics::fsync_sum_s, &worker_metrics::fsync_count, 1.0);
    histogram("lockstep_tick_lateness_seconds", "How late ticks fire against their schedule.", tick_late_buckets_ms,
              &worker_metrics::tick_late, &worker_metrics::tick_late_sum_ms, &worker_metrics::tick_late_count, 0.001);

    out += "# HELP lockstep_closes_total WebSocket closes sent by the reflector, by code.\n"
           "# TYPE lockstep_closes_total counter\n";
    for (auto const& [code, n] : closes.snapshot())
        out += fmt::format("lockstep_closes_total{{code=\"{}\"}} {}\n", code, n);
    out += render_process_metrics();
    return out;
}

}  // namespace lockstep
