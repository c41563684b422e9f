// A real redis-server on a free loopback port (no persistence), for the cluster tests:
// started by the constructor, stopped (bounded) by the destructor; stop() and start()
// make an outage on the same port, pause()/resume() freeze it (SIGSTOP/SIGCONT).
#pragma once

#include "support/net_util.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

namespace lockstep::test {

using namespace std::chrono_literals;

class redis_server {
public:
    /// `password`: started with --requirepass.
    explicit redis_server(std::string password = "") : port_(free_port()), password_(std::move(password)) { start(); }
    ~redis_server() { stop(); }
    redis_server(redis_server const&) = delete;
    redis_server& operator=(redis_server const&) = delete;

    /// Starts redis-server on this object's port; ready() says whether it answered PING.
    void
    start()
    {
        pid_ = ::fork();
        if (pid_ == 0) {
            int devnull = ::open("/dev/null", O_WRONLY);
            ::dup2(devnull, 1);
            auto p = std::to_string(port_);
            if (password_.empty())
                ::execlp("redis-server", "redis-server", "--port", p.c_str(), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--loglevel", "warning", static_cast<char*>(nullptr));
            else
                ::execlp("redis-server", "redis-server", "--port", p.c_str(), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--loglevel", "warning", "--requirepass", password_.c_str(),
                         static_cast<char*>(nullptr));
            ::_exit(127);
        }
        ready_ = false;
        for (int i = 0; i < 200 && !ready_; ++i) {  // bounded: 10 s
            std::this_thread::sleep_for(50ms);
            ready_ = ping();
        }
    }
    /// Stops it (SIGTERM, then SIGKILL after 2 s); its data is gone.
    void
    stop()
    {
        if (pid_ <= 0)
            return;
        ::kill(pid_, SIGCONT);
        ::kill(pid_, SIGTERM);
        int st = 0;
        for (int i = 0; i < 100 && ::waitpid(pid_, &st, WNOHANG) == 0; ++i)
            std::this_thread::sleep_for(20ms);
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &st, 0);
        pid_ = -1;
        ready_ = false;
    }
    void pause() { ::kill(pid_, SIGSTOP); }
    void resume() { ::kill(pid_, SIGCONT); }
    bool ready() const { return ready_; }
    std::uint16_t port() const { return port_; }
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
            // With --requirepass an unauthenticated PING is refused, but answered.
            ok = ::recv(fd, buf, sizeof buf - 1, 0) > 0 &&
                 (std::string(buf).rfind("+PONG", 0) == 0 || std::string(buf).rfind("-NOAUTH", 0) == 0);
        }
        ::close(fd);
        return ok;
    }
    std::uint16_t port_;
    std::string password_;
    pid_t pid_ = -1;
    bool ready_ = false;
};

}  // namespace lockstep::test
