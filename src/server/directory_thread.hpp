// The directory's own thread. Directory calls may block (Redis in cluster mode: a slow
// or frozen server, a reconnect), so no event loop makes them: seat reports from the
// workers, the reflector heartbeat and the /v1 router API all run here, one at a time,
// and results go back to whoever asked through their own entry points.
//
// @par Thread safety
// post(), seat_joined(), seat_left(), start_heartbeat() and stop() may be called from
// any thread. Everything else (the directory itself, the seat-report table, the
// timers) is touched only on the directory thread.
#pragma once

#include "common/unique_function.hpp"
#include "router/directory.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>

namespace lockstep {

class directory_thread {
public:
    /// Starts the thread. `dir` is used only on it from now on.
    explicit directory_thread(std::unique_ptr<router::directory> dir);
    ~directory_thread();
    directory_thread(directory_thread const&) = delete;
    directory_thread& operator=(directory_thread const&) = delete;

    /// Runs `task` on the directory thread, after everything posted before it.
    void post(unique_function<void(router::directory&)> task);

    /// Runs `task` on the directory thread (cluster session state: leases, journal
    /// appends, blobs), after everything posted before it; `run_after` after `delay`.
    /// Tasks posted after stop() began are dropped.
    void run(unique_function<void()> task);
    void run_after(std::chrono::milliseconds delay, unique_function<void()> task);

    /// Seat reports, in order per connection. A join that finds the directory
    /// unreachable is retried until it answers (or the connection is gone), so a seat
    /// taken while Redis was frozen is confirmed once Redis is back.
    void seat_joined(std::string token, std::string name, std::string conn);
    void seat_left(std::string token, bool normal, std::string conn);

    /// Calls `make` now and then every `interval` on the directory thread and
    /// registers what it returns (the reflector's heartbeat).
    void start_heartbeat(std::chrono::milliseconds interval, std::function<router::reflector_info()> make);

    /// Stops the timers, runs what was already posted and joins the thread.
    void stop();

private:
    struct seat_report {
        std::string token, name;
        bool confirmed = false;
        std::unique_ptr<boost::asio::steady_timer> retry;  // while the directory is unreachable
    };
    void try_join(std::string const& conn);
    void arm_heartbeat();

    boost::asio::io_context ioc_{1};
    std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> guard_;
    std::unique_ptr<router::directory> dir_;          // directory thread only
    std::unordered_map<std::string, seat_report> seats_;  // by connection; directory thread only
    boost::asio::steady_timer hb_timer_{ioc_};        // directory thread only
    std::chrono::milliseconds hb_interval_{2000};
    std::function<router::reflector_info()> hb_make_;  // directory thread only
    bool stopping_ = false;                            // directory thread only
    std::atomic<bool> stopped_{false};
    std::thread thread_;
};

}  // namespace lockstep
