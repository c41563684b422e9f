// Helpers shared by the tests that run real processes: scratch directories, spawning
// with redirected output, waiting for a port, and a lockstep-reflector process on a
// free loopback port.
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
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace lockstep::test {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

inline bool
port_open(std::uint16_t port)
{
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    return ok;
}

inline fs::path
scratch_dir(std::string const& what)
{
    static int n = 0;
    auto d = fs::temp_directory_path() / ("lockstep-sdk-" + std::to_string(::getpid()) + "-" + what + "-" +
                                          std::to_string(++n));
    fs::create_directories(d);
    return d;
}

inline std::string
read_text(fs::path const& p)
{
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

inline pid_t
spawn(std::vector<std::string> const& argv, fs::path const& out, fs::path const& err, fs::path const& in = "/dev/null")
{
    pid_t pid = ::fork();
    if (pid == 0) {
        int i = ::open(in.c_str(), O_RDONLY);
        int o = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int e = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(i, 0);
        ::dup2(o, 1);
        ::dup2(e, 2);
        std::vector<char*> args;
        for (auto& a : argv)
            args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    return pid;
}

/// Waits (bounded) for `pid` to exit: its exit status, 128 + the signal that ended it, or
/// nullopt if it is still running after `timeout`.
inline std::optional<int>
wait_exit(pid_t pid, std::chrono::milliseconds timeout)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        int st = 0;
        if (::waitpid(pid, &st, WNOHANG) == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (std::chrono::steady_clock::now() >= deadline)
            return std::nullopt;
        std::this_thread::sleep_for(20ms);
    }
}

/// A lockstep-reflector process on a free loopback port; killed at the end.
class reflector_process {
public:
    /// `more`: extra flags; `port`: 0 for a free one.
    explicit reflector_process(std::vector<std::string> more = {}, std::uint16_t port = 0)
        : port_(port ? port : free_port()), dir_(scratch_dir("reflector")), more_(std::move(more))
    {
        start();
    }
    ~reflector_process()
    {
        kill();
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }
    /// Starts the process (again, after kill(): same port, fresh memory).
    void start()
    {
        std::vector<std::string> argv = {LOCKSTEP_REFLECTOR_BIN, "--bind", "127.0.0.1", "--port", std::to_string(port_),
                                         "--data-dir", (dir_ / "data").string(), "--threads", "1", "--log-level", "warn"};
        argv.insert(argv.end(), more_.begin(), more_.end());
        pid_ = spawn(argv, dir_ / "out.log", dir_ / "err.log");
        for (int i = 0; i < 600 && !port_open(port_); ++i)  // bounded: 30 s (slow under sanitizers)
            std::this_thread::sleep_for(50ms);
    }
    /// Sends a signal (SIGTERM starts a drain, a second one stops at once).
    void signal(int sig) const
    {
        if (pid_ > 0)
            ::kill(pid_, sig);
    }
    /// Waits (bounded) for the process to exit; its status (see wait_exit), or nullopt.
    std::optional<int> wait_exit(std::chrono::milliseconds timeout)
    {
        if (pid_ <= 0)
            return std::nullopt;
        auto st = lockstep::test::wait_exit(pid_, timeout);
        if (st)
            pid_ = -1;
        return st;
    }
    bool running() const { return pid_ > 0 && ::kill(pid_, 0) == 0; }
    std::string log() const { return read_text(dir_ / "err.log") + read_text(dir_ / "out.log"); }
    void kill()
    {
        if (pid_ <= 0)
            return;
        ::kill(pid_, SIGKILL);
        int st = 0;
        ::waitpid(pid_, &st, 0);
        pid_ = -1;
    }
    std::string ws() const { return "ws://127.0.0.1:" + std::to_string(port_); }
    std::string http() const { return "http://127.0.0.1:" + std::to_string(port_); }
    std::string files() const { return http() + "/files"; }
    fs::path data() const { return dir_ / "data"; }
    bool up() const { return port_open(port_); }
    std::uint16_t port() const { return port_; }

private:
    std::uint16_t port_;
    fs::path dir_;
    std::vector<std::string> more_;
    pid_t pid_ = -1;
};

}  // namespace lockstep::test
