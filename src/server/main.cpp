// lockstep-reflector: entry point. Parses flags, sets up logging, serves until
// SIGTERM/SIGINT (graceful drain) or a second signal (immediate stop).
#include "server/config.hpp"
#include "common/logging.hpp"
#include "server/server.hpp"

#include <spdlog/spdlog.h>

#include <csignal>
#include <cstdio>
#include <thread>

#include <pthread.h>

int
main(int argc, char** argv)
{
    std::string message;
    bool help = false;
    auto cfg = lockstep::parse_config(argc, argv, message, help);
    if (!cfg) {
        std::fputs(message.c_str(), help ? stdout : stderr);
        if (!help)
            std::fputc('\n', stderr);
        return help ? 0 : 2;
    }
    try {
        lockstep::setup_logging(cfg->log_level, cfg->log_format);
        // Block the signals in every thread; one thread waits for them.
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGHUP);
        pthread_sigmask(SIG_BLOCK, &set, nullptr);
        signal(SIGPIPE, SIG_IGN);

        lockstep::server srv(*cfg);
        std::thread signals([&srv, set] {
            int sig = 0;
            int count = 0;
            while (sigwait(&set, &sig) == 0) {
                if (sig == SIGHUP) {
                    spdlog::info("SIGHUP: reloading the TLS certificate");
                    srv.reload_tls();
                    continue;
                }
                if (++count == 1) {
                    spdlog::info("signal {}: draining (send again to stop now)", sig);
                    srv.drain();
                } else {
                    srv.stop();
                    return;
                }
            }
        });
        signals.detach();
        srv.run();
    } catch (std::exception const& e) {
        spdlog::critical("{}", e.what());
        return 1;
    }
    return 0;
}
