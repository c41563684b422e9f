// Server internals shared by the listener, HTTP connections and WebSocket connections.
// Includes Asio/Beast: only the networking translation units include this.
#pragma once

#include "auth/access.hpp"
#include "limits/edge_limits.hpp"
#include "common/clock.hpp"
#include "http/service.hpp"
#include "reflector/dispatch.hpp"
#include "reflector/session.hpp"
#include "router/directory.hpp"
#include "server/cluster.hpp"
#include "server/directory_thread.hpp"
#include "server/config.hpp"
#include "common/unique_function.hpp"
#include "server/durability.hpp"
#include "server/metrics.hpp"
#include "server/server.hpp"
#include "store/file_store.hpp"

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <atomic>
#include <functional>
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
///
/// @par Thread safety
/// Only on the owning worker's thread.
struct session_slot final : session {
    session_slot(worker& w, std::string const& id);
    ~session_slot();
    session_slot(session_slot const&) = delete;
    session_slot& operator=(session_slot const&) = delete;
    worker& w;
    net::steady_timer timer;
    std::int64_t armed_us = std::numeric_limits<std::int64_t>::max();
};

/// Something with queued output to write at the end of the current batch of handlers.
class flushable {
public:
    virtual ~flushable() = default;
    virtual void flush() = 0;
};

/// One thread, one io_context; owns the sessions whose id hashes to it and their
/// connections. It is the dispatch's session host.
///
/// @par Thread safety
/// defer() may be called from any thread: it is the only way into the worker from
/// outside. `metrics` and `load` are written by the worker and read from any thread
/// (atomics); `st` and `index` are immutable. Every other member is used only on the
/// worker's own thread.
struct worker final : session_host {
    worker(struct server_state& st, unsigned index);
    server_state& st;
    unsigned index;
    net::io_context ioc{1};
    worker_metrics metrics;
    load_signal load;  // fed by start_load_sampling(), read by the sessions
    steady_clock_source clock;
    std::unordered_map<std::string, std::unique_ptr<session_slot>> sessions;
    std::unordered_map<connection*, std::weak_ptr<connection>> connections;
    std::thread thread;
    /// Session journals (null with --journal none). Write before show: journal_barrier()
    /// runs before any output reaches a socket.
    std::unique_ptr<session_journal> journal;
    net::steady_timer sweep_timer{ioc};
    /// Cluster sessions (null unless --redis with --journal-sync redis): ownership and the
    /// journal in Redis. Output waits for the batch holding its records.
    std::unique_ptr<cluster_sessions> cluster;
    net::steady_timer cluster_timer{ioc};
    /// Lease checks and retries of failed Redis writes, every 100 ms.
    void start_cluster_timer();
    void
    journal_barrier()
    {
        if (journal)
            journal->barrier();
        if (cluster)
            cluster->barrier();
    }
    /// Deletes a session from memory now (its lease was lost). Its connections must be
    /// detached from it first (abandon_session_connections).
    void drop_session(std::string const& id);
    /// Runs `then` on this thread once session `id` is in memory or known not to be
    /// stored: at once when it is in memory or there is no file journal; else after its
    /// journal was read on the disk pool, off this loop (one read for every JOIN that
    /// arrives meanwhile; the first of them restores the session).
    void load_session(std::string const& id, unique_function<void()> then);
    /// While load_session answers its JOINs: the id it read and found nothing stored for.
    std::string not_stored;
    std::unordered_map<std::string, std::vector<unique_function<void()>>> loading;
    /// Retention sweep of the stored sessions this worker owns, then every few minutes.
    void start_journal_sweep(std::chrono::milliseconds first);

    /// The one entry point into this worker: runs `f` on its thread, after the handlers
    /// already queued. Nothing else posts into `ioc`.
    template <class F>
    void
    defer(F&& f)
    {
        net::post(ioc, std::forward<F>(f));
    }

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
    std::int64_t load_demand_ns = 0, load_wall_ns = 0;
    std::int64_t spin_ns = 0, load_spin_ns = 0;  // time polled in vain (--busy-poll-us)
    void start_load_sampling();

    /// Runs the event loop on the calling thread until it is stopped (busy-polling
    /// for --busy-poll-us before each sleep).
    void run();
    void run_loop();

    /// Summaries of this worker's live sessions (for /sessions). Call on its thread.
    nlohmann::json session_list() const;

    // ---- session_host (the dispatch's view of the worker) ----
    session* find_session(std::string const& id) override;
    session& session_for(std::string const& id) override;
    /// Re-arms the session's timer and deletes it when it has expired.
    void touched(session& s) override;
    void seat_joined(std::string const& token, std::string const& name, std::string const& conn) override;
    void seat_left(std::string const& token, bool normal, std::string const& conn) override;
    session_counters* counters() noexcept override { return &metrics; }
    dispatch_limits const& limits() const noexcept override;
    std::int64_t now_us() const noexcept override { return clock.now_us(); }
    bool may_create_session() noexcept override;
    /// may_create_session reserved the session slot that session_for is about to fill.
    bool slot_reserved = false;
};

/// State shared by all workers, the directory thread, the disk pool and the signal
/// thread. Implements the HTTP routes' service interface.
///
/// @par Thread safety
/// Every thread reads it. Members are immutable once run() starts serving unless their
/// comment says otherwise.
struct server_state final : http_routes::service {
    config cfg;
    session_options sopts;
    dispatch_limits dlimits;                   // per-connection limits the dispatch applies
    byte_budget sync_budget;                   // --max-sync-bytes: any thread; outlives the workers
    std::atomic<std::uint64_t> session_slots{0};  // sessions in memory over all workers (--max-sessions)
    std::uint64_t journal_tails_recovered = 0; // torn WAL tails start-up dropped (worker 0 counts them)
    store::file_store files;                   // stateless paths: any thread
    store::file_persistence persistence;       // any thread (own mutex)
    // Before the workers, so they outlive them: connections a worker's io_context still
    // holds when it is destroyed give their limit tickets back to limits_.
    std::unique_ptr<auth::gate> gate;         // access control (docs/security.md)
    std::unique_ptr<limits::edge_limits> limits_;  // connection, request, upload and disk limits
    std::vector<std::unique_ptr<worker>> workers;  // the vector is fixed; see worker for its members
    net::thread_pool disk{1};                  // blocking file I/O off the event loops; any thread
                                               // posts; after the workers: goes first
    close_counter closes;                      // any thread (own mutex)
    std::atomic<std::uint64_t> http_requests{0};   // any thread
    std::atomic<bool> draining_{false};        // set by drain() on any thread, read everywhere
    std::atomic<std::uint64_t> next_conn_id{1};    // any worker
    steady_clock_source router_clock;          // stateless: any thread
    std::string self_id;                      // this reflector's router id (set before serving)
    std::string instance;                     // random per process: tells a restart apart (same)
    std::shared_ptr<tls::front> tls;          // --tls-cert: TLS on this port (tls/tls_front.hpp)
    std::unique_ptr<lease_keeper> cluster;    // cluster sessions in Redis (null without); directory thread only
    directory_thread directory;               // embedded or Redis (docs/router.md): post from any
                                              // thread; declared last, so its thread stops first

    explicit server_state(config c);
    /// This reflector as the router should list it now (heartbeat).
    router::reflector_info self_info(std::uint16_t port) const;
    worker& worker_for(std::string_view session_id);
    std::vector<worker_metrics const*> metrics() const;
    /// Runs `question` on the directory thread and waits for its answer at most
    /// `timeout` (false without one). Only for access checks that must be answered before
    /// a connection goes on (router seats with access control on); bounded, so a frozen
    /// Redis delays those connections, never the event loop for longer than `timeout`.
    bool ask_directory(std::function<bool(router::directory&)> question, std::chrono::milliseconds timeout);

    // ---- http_routes::service ----
    bool draining() const override { return draining_.load(); }
    std::optional<bool> redis_reachable() const override;
    void count_request() override { http_requests.fetch_add(1, std::memory_order_relaxed); }
    std::string metrics_text() const override;
    void list_sessions(unique_function<void(nlohmann::json)> done) override;
    void with_directory(unique_function<void(router::directory&)> task) override;
    store::file_store const& blobs() const override { return files; }
    limits::edge_limits& limits() override { return *limits_; }
    std::uint32_t max_files_depth() const override { return cfg.max_files_depth; }
    std::uint64_t max_disk_bytes() const override { return cfg.max_disk_bytes; }
    void run_blocking(unique_function<void()> task) override;
    void shared_blob_put(std::string path, std::string bytes, unique_function<void(bool)> done) override;
    void shared_blob_get(std::string path, unique_function<void(std::optional<std::string>)> done) override;
    std::filesystem::path const& web_root() const override { return web_root_; }
    std::filesystem::path const& builtin_web_root() const override { return builtin_web_root_; }
    void close_session_clients(std::string const& session_id, unique_function<void(std::size_t)> done) override;
    void start_drain() override
    {
        if (drain_hook)
            drain_hook();
    }

    std::filesystem::path web_root_, builtin_web_root_;  // fixed at construction
    std::function<void()> drain_hook;                   // server::drain (set before serving)
};

/// Starts serving a WebSocket upgrade on the worker that owns `session_id` (the
/// socket is moved there if needed).
void
start_websocket(server_state& st, worker& from, tcp::socket sock, http::request<http::string_body> req,
                std::string session_id, auth::admission adm = {}, limits::ticket ticket = {});

/// Closes every WebSocket connection of the worker (drain). Call on its thread. With
/// `for_move` output not shown yet is dropped and what joined clients send until their
/// close reply still goes into their sessions (their next reflector's SYNC has it all).
void
close_all_connections(worker& w, protocol::close_code code, std::string_view reason, bool for_move = false);

/// Closes the worker's connections to one session; returns how many. Call on its thread.
std::size_t
close_session_connections(worker& w, std::string const& session_id, protocol::close_code code, std::string_view reason);

/// Closes the worker's connections to one session for a move (hand-off, drain): output
/// not shown yet is dropped, and what the joined ones send until their close reply still
/// goes into the session; each of those reports cluster_sessions::client_left() when it
/// is done. Returns how many will. Call on its thread.
std::size_t
close_session_connections_for_move(worker& w, std::string const& session_id, protocol::close_code code,
                                   std::string_view reason);

/// Detaches the worker's connections from one session (they leave it now) and closes
/// them, dropping output not shown yet. Call on its thread; returns how many.
std::size_t
abandon_session_connections(worker& w, std::string const& session_id, protocol::close_code code,
                            std::string_view reason);

/// Serves plain HTTP on an accepted socket (server/http_connection.cpp).
void
start_http(server_state& st, worker& w, tcp::socket sock, limits::ticket ticket = {});

}  // namespace lockstep
