// Server internals shared by the listener, HTTP sessions and WebSocket connections.
// Includes Asio/Beast: only the networking translation units include this.
#pragma once

#include "auth/access.hpp"
#include "limits/edge_limits.hpp"
#include "reflector/clock.hpp"
#include "router/router.hpp"
#include "reflector/session.hpp"
#include "server/config.hpp"
#include "server/metrics.hpp"
#include "server/server.hpp"
#include "store/file_store.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace lockstep {

namespace tls {
class front;
}

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = net::ip::tcp;
using error_code = boost::system::error_code;

class connection;
struct worker;

/// A session plus the timer that drives it, owned by one worker.
struct session_slot {
    session_slot(worker& w, std::string const& id);
    worker& w;
    session s;
    net::steady_timer timer;
    std::int64_t armed_us = std::numeric_limits<std::int64_t>::max();
};

/// Something with queued output to write at the end of the current batch of handlers.
class flushable {
public:
    virtual ~flushable() = default;
    virtual void flush() = 0;
};

/// One thread, one io_context; owns the sessions whose id hashes to it.
struct worker {
    worker(struct server_state& st, unsigned index);
    server_state& st;
    unsigned index;
    net::io_context ioc{1};
    worker_metrics metrics;
    steady_clock_source clock;
    std::unordered_map<std::string, std::unique_ptr<session_slot>> sessions;
    std::unordered_map<connection*, std::weak_ptr<connection>> connections;
    std::thread thread;

    /// Corking: connections with new output register here and are written once, after
    /// every handler that was ready in this turn of the event loop has run, so frames
    /// for one socket from many events go out in one system call.
    std::vector<std::shared_ptr<flushable>> to_flush;
    bool flush_posted = false;
    /// `urgent`: at the end of this loop turn even while coalescing (ticks).
    void schedule_flush(std::shared_ptr<flushable> f, bool urgent = false);

    /// Adaptive coalescing: while this worker is busy, output is written at most once
    /// per `coalesce_us` per connection (all pending connections on one timer), so
    /// each write carries more frames; idle, it is written at once (no added latency).
    std::int64_t coalesce_us = 0;
    std::vector<std::shared_ptr<flushable>> deferred;
    net::steady_timer coalesce_timer{ioc};
    bool coalesce_armed = false;
    net::steady_timer load_timer{ioc};
    std::int64_t load_cpu_ns = 0, load_wall_ns = 0;
    std::int64_t spin_ns = 0, load_spin_ns = 0;  // time polled in vain (--busy-poll-us)
    void start_load_sampling();

    /// Runs the event loop on the calling thread until it is stopped (busy-polling
    /// for --busy-poll-us before each sleep).
    void run();
    void run_loop();

    /// Finds or creates the session (creation only records the id; the first JOIN
    /// sets it up).
    session_slot& session_for(std::string const& id);
    session_slot* find_session(std::string const& id);
    /// Re-arms the session's timer and deletes it when it has expired. Call after
    /// every call into the session.
    void after(session_slot& slot);
};

/// State shared by all workers. Immutable after start except where noted.
struct server_state {
    config cfg;
    session_options sopts;
    store::file_store files;
    store::file_persistence persistence;
    std::vector<std::unique_ptr<worker>> workers;
    net::thread_pool disk{1};                  // blocking file I/O off the event loops
    close_counter closes;
    std::atomic<std::uint64_t> http_requests{0};
    std::atomic<bool> draining{false};
    std::atomic<std::uint64_t> next_conn_id{1};
    steady_clock_source router_clock;
    std::unique_ptr<router::directory> rtr;  // embedded or Redis (docs/router.md)
    std::string self_id;                      // this reflector's router id (set before serving)
    std::string instance;                     // random per process: tells a restart apart
    std::unique_ptr<auth::gate> gate;         // access control (docs/security.md)
    std::unique_ptr<limits::edge_limits> limits;  // connection, request, upload and disk limits
    std::shared_ptr<tls::front> tls;          // --tls-cert: TLS on this port (tls/tls_front.hpp)

    explicit server_state(config c);
    /// Registers this reflector with the router and refreshes its load (heartbeat).
    void heartbeat(std::uint16_t port);
    worker& worker_for(std::string_view session_id);
    std::vector<worker_metrics const*> metrics() const;
};

/// Starts serving a WebSocket upgrade on the worker that owns `session_id` (the
/// socket is moved there if needed).
void
start_websocket(server_state& st, worker& from, tcp::socket sock, http::request<http::string_body> req,
                std::string session_id, auth::admission adm = {}, limits::ticket ticket = {});

/// Closes every WebSocket connection of the worker (drain). Call on its thread.
void
close_all_connections(worker& w, protocol::close_code code, std::string_view reason);

/// Serves plain HTTP on an accepted socket.
void
start_http(server_state& st, worker& w, tcp::socket sock, limits::ticket ticket = {});

}  // namespace lockstep
