// The reflector server: listener, HTTP routes and WebSocket sessions on N worker
// threads. No Boost types here (pimpl), so tests and main() stay cheap to compile.
//
// @par Thread safety
// Construct, then call run() from one thread. stop() and drain() may be called from
// any thread (including a signal-handling one).
#pragma once

#include "server/config.hpp"

#include <cstdint>
#include <memory>

namespace lockstep {

class server {
public:
    /// Binds the listening socket. Throws std::runtime_error on failure.
    explicit server(config cfg);
    ~server();
    server(server const&) = delete;
    server& operator=(server const&) = delete;

    /// The bound port (useful with --port 0).
    std::uint16_t port() const noexcept;
    /// Serves until stop() or the end of a drain. Blocks.
    void run();
    /// Graceful: readiness goes to 503, new WebSocket upgrades get 503 (plain HTTP keeps
    /// working), clients are asked to reconnect elsewhere (close 1001), then run()
    /// returns once they are gone or after drain_timeout_ms.
    void drain();
    /// Immediate stop.
    void stop();
    /// Reads --tls-cert/--tls-key again (SIGHUP); new connections use them. False if
    /// TLS is off or the files cannot be used (the old certificate stays).
    bool reload_tls();

private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace lockstep
