// A reflector running in-process on 127.0.0.1 with an ephemeral port and a fresh data
// directory; stopped and cleaned up by the destructor.
#pragma once

#include "server/config.hpp"
#include "server/server.hpp"

#include "support/frames.hpp"
#include "support/ws_client.hpp"

#include <spdlog/spdlog.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <thread>

namespace lockstep::test {

inline config
test_config()
{
    config c;
    c.bind = "127.0.0.1";
    c.port = 0;
    c.threads = 2;
    static int n = 0;
    c.data_dir = (std::filesystem::temp_directory_path() /
                  ("lockstep-it-" + std::to_string(::getpid()) + "-" + std::to_string(++n)))
                     .string();
    c.drain_timeout_ms = 1000;
    return c;
}

class running_server {
public:
    explicit running_server(config c = test_config()) : cfg_(std::move(c))
    {
        spdlog::set_level(spdlog::level::warn);
        srv_ = std::make_unique<server>(cfg_);
        thread_ = std::thread([this] {
            srv_->run();
            stopped_ = true;
        });
    }
    ~running_server()
    {
        srv_->stop();
        // Bounded: a server that does not stop is a failure of its own, reported as such
        // (ctest names the case) instead of a hang until the suite's timeout.
        if (!wait_stopped(30s)) {
            std::fprintf(stderr, "running_server: run() did not return within 30 s of stop()\n");
            std::abort();
        }
        if (thread_.joinable())
            thread_.join();
        std::error_code ec;
        std::filesystem::remove_all(cfg_.data_dir, ec);
    }
    std::uint16_t port() const { return srv_->port(); }
    server& get() { return *srv_; }
    config const& cfg() const { return cfg_; }
    /// Waits (bounded) for run() to return, e.g. after a drain.
    bool
    wait_stopped(std::chrono::milliseconds timeout)
    {
        auto deadline = std::chrono::steady_clock::now() + timeout;
        while (std::chrono::steady_clock::now() < deadline) {
            if (stopped_probe())
                return true;
            std::this_thread::sleep_for(20ms);
        }
        return false;
    }

private:
    bool
    stopped_probe()
    {
        return stopped_.load();
    }
    std::atomic<bool> stopped_{false};
    config cfg_;
    std::unique_ptr<server> srv_;
    std::thread thread_;
};

}  // namespace lockstep::test
