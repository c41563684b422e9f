// What the HTTP routes need from the server, as an interface that http/ owns and the
// server implements (server_state). The routes know nothing of workers, sessions'
// threads or sockets; the server knows the routes only through http_routes::handle().
//
// @par Thread safety
// Every member may be called from any thread.
#pragma once

#include "common/unique_function.hpp"
#include "limits/edge_limits.hpp"
#include "router/directory.hpp"
#include "store/file_store.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <filesystem>
#include <optional>
#include <cstdint>
#include <string>

namespace lockstep::http_routes {

class service {
public:
    virtual ~service() = default;

    /// True while the reflector drains (readiness 503, no new seats).
    virtual bool draining() const = 0;
    /// Cluster sessions only (nullopt otherwise): false while this reflector cannot reach
    /// Redis (its last call failed, or one has waited past a short bound). Peers ask it
    /// before they keep a session running through a Redis outage (/health/redis).
    virtual std::optional<bool> redis_reachable() const = 0;
    /// Counts one HTTP request (a metric).
    virtual void count_request() = 0;
    /// The Prometheus text exposition.
    virtual std::string metrics_text() const = 0;
    /// Gathers a summary of every live session from the threads that own them and
    /// calls `done` once with the JSON array (on any thread).
    virtual void list_sessions(unique_function<void(nlohmann::json)> done) = 0;
    /// Runs `task` on the directory's thread: it may block (Redis), so never on an
    /// event loop.
    virtual void with_directory(unique_function<void(router::directory&)> task) = 0;
    /// The blob store under the data directory.
    virtual store::file_store const& blobs() const = 0;
    /// Connection, request, upload and disk limits (--max-*; limits/edge_limits.hpp).
    virtual limits::edge_limits& limits() = 0;
    /// --max-files-depth: path segments of a /files path.
    virtual std::uint32_t max_files_depth() const = 0;
    /// --max-disk-bytes: blob store size (0: none), for log lines.
    virtual std::uint64_t max_disk_bytes() const = 0;
    /// Runs blocking I/O (file writes) off the event loops.
    virtual void run_blocking(unique_function<void()> task) = 0;
    /// Cluster mode: blobs are also kept where every reflector can read them (Redis),
    /// for the session retention time. `done(true)` once stored (at once without a
    /// cluster); false when the shared store cannot take it. Off the event loops; `done`
    /// runs on another thread.
    virtual void shared_blob_put(std::string path, std::string bytes, unique_function<void(bool)> done) = 0;
    /// A blob this reflector does not have: from the shared store, or nullopt (at once
    /// without a cluster).
    virtual void shared_blob_get(std::string path, unique_function<void(std::optional<std::string>)> done) = 0;

    // ---- pages and the admin API (docs/operations.md) ----

    /// Directory served at / (--web-root, else the built-in pages); empty: none.
    virtual std::filesystem::path const& web_root() const = 0;
    /// The built-in pages (the admin page at /admin); empty when not found.
    virtual std::filesystem::path const& builtin_web_root() const = 0;
    /// Closes every client connection of the session with this id (they may reconnect)
    /// and calls `done` once with how many were closed (on any thread).
    virtual void close_session_clients(std::string const& session_id, unique_function<void(std::size_t)> done) = 0;
    /// Starts draining this reflector (as SIGTERM does): it exits once its clients are gone.
    virtual void start_drain() = 0;
};

}  // namespace lockstep::http_routes
