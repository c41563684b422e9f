// A real redis-server on a free loopback port, started by the test and killed at the
// end (tests/integration/cluster_test.cpp, tests/unit/directory_conformance_test.cpp).
#pragma once

#include "integration/net_util.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>

namespace lockstep::test {

/// Ready (answering PING) after construction, or ready() is false.
class redis_server {
public:
    redis_server() : port_(free_port())
    {
        pid_ = ::fork();
        if (pid_ == 0) {
            int devnull = ::open("/dev/null", O_WRONLY);
            ::dup2(devnull, 1);
            auto p = std::to_string(port_);
            ::execlp("redis-server", "redis-server", "--port", p.c_str(), "--bind", "127.0.0.1", "--save", "",
                     "--appendonly", "no", "--loglevel", "warning", static_cast<char*>(nullptr));
            ::_exit(127);
        }
        // Ready when it answers PING (bounded: 5 s).
        for (int i = 0; i < 100 && !ready_; ++i) {
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            ready_ = ping();
        }
    }
    ~redis_server()
    {
        if (pid_ > 0) {
            ::kill(pid_, SIGTERM);
            int st = 0;
            for (int i = 0; i < 100 && ::waitpid(pid_, &st, WNOHANG) == 0; ++i)
                std::this_thread::sleep_for(std::chrono::milliseconds(20));
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, &st, WNOHANG);
        }
    }
    bool ready() const { return ready_; }
    /// The server's process (tests freeze it with SIGSTOP).
    pid_t pid() const { return pid_; }
    std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }

private:
    bool
    ping()
    {
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port_);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bool ok = false;
        if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
            ::send(fd, "PING\r\n", 6, MSG_NOSIGNAL);
            char buf[16] = {};
            ok = ::recv(fd, buf, sizeof buf - 1, 0) > 0 && std::string(buf).rfind("+PONG", 0) == 0;
        }
        ::close(fd);
        return ok;
    }
    std::uint16_t port_;
    pid_t pid_ = -1;
    bool ready_ = false;
};

}  // namespace lockstep::test
