// A loopback TCP server whose behaviour each test scripts, connection by connection:
// what a real reflector never does on purpose (a close code >= 4100 to a healthy client,
// connections refused after a handshake) but a client must survive. It records when each
// connection arrived. One thread; every wait bounded; stopped by the destructor.
#pragma once

#include "protocol/frame.hpp"
#include "protocol/ws_frame.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace lockstep::test {

class scripted_server {
public:
    using clock = std::chrono::steady_clock;
    /// Runs on the server's thread for connection `index` (0-based); the fd is closed after.
    using script = std::function<void(scripted_server& self, int fd, int index)>;

    /// Listens on a free loopback port, or on `port` (e.g. one a killed reflector used).
    explicit scripted_server(script s, std::uint16_t port = 0) : script_(std::move(s))
    {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(port);
        if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 16) != 0) {
            ::close(fd_);
            throw std::runtime_error("scripted_server: cannot listen on port " + std::to_string(port));
        }
        socklen_t len = sizeof a;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
        thread_ = std::thread([this] { run(); });
    }
    ~scripted_server()
    {
        stop_ = true;
        thread_.join();  // bounded: every wait in run() and the helpers polls stop_ every 50 ms
        ::close(fd_);
    }
    scripted_server(scripted_server const&) = delete;
    scripted_server& operator=(scripted_server const&) = delete;

    std::uint16_t port() const { return port_; }
    bool stopping() const { return stop_; }
    std::vector<clock::time_point> arrivals() const
    {
        std::lock_guard lock(mu_);
        return arrivals_;
    }
    std::size_t connections() const { return arrivals().size(); }

    /// Waits until `fd` is readable, the peer closed, or `timeout` / stop. True if readable.
    bool wait_readable(int fd, std::chrono::milliseconds timeout)
    {
        auto deadline = clock::now() + timeout;
        while (!stop_ && clock::now() < deadline) {
            pollfd p{fd, POLLIN, 0};
            if (::poll(&p, 1, 50) > 0)
                return true;
        }
        return false;
    }
    /// Reads the HTTP upgrade request and answers 101. False if none came in `timeout`.
    bool accept_websocket(int fd, std::chrono::milliseconds timeout = std::chrono::seconds(10))
    {
        std::string req;
        char buf[4096];
        while (req.find("\r\n\r\n") == std::string::npos) {
            if (!wait_readable(fd, timeout))
                return false;
            auto n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0)
                return false;
            req.append(buf, static_cast<std::size_t>(n));
        }
        std::string key;
        for (auto name : {"Sec-WebSocket-Key: ", "sec-websocket-key: "}) {
            auto k = req.find(name);
            if (k != std::string::npos) {
                k += 19;
                key = req.substr(k, req.find("\r\n", k) - k);
            }
        }
        std::string text = key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
        unsigned char sha[SHA_DIGEST_LENGTH];
        SHA1(reinterpret_cast<unsigned char const*>(text.data()), text.size(), sha);
        unsigned char b64[64];
        int n = EVP_EncodeBlock(b64, sha, SHA_DIGEST_LENGTH);
        send_all(fd, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: " +
                         std::string(reinterpret_cast<char*>(b64), static_cast<std::size_t>(n)) + "\r\n\r\n");
        return true;
    }
    /// The next text message from the client (masked frames), or "" on timeout/close.
    std::string read_text(int fd, std::chrono::milliseconds timeout = std::chrono::seconds(10))
    {
        for (;;) {
            protocol::frame_view f;
            if (auto used = protocol::parse_frame(in_, f)) {
                auto text = protocol::unmasked_payload(f);
                in_.erase(0, used);
                if (f.opcode == 0x1)
                    return text;
                continue;
            }
            if (!wait_readable(fd, timeout))
                return {};
            char buf[65536];
            auto n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0)
                return {};
            in_.append(buf, static_cast<std::size_t>(n));
        }
    }
    void send_text(int fd, std::string const& text)
    {
        std::string frame;
        append_frame_header(frame, text.size());
        send_all(fd, frame + text);
    }
    void send_close(int fd, int code, std::string const& reason)
    {
        std::string payload;
        payload.push_back(static_cast<char>(code >> 8));
        payload.push_back(static_cast<char>(code & 0xFF));
        payload += reason;
        std::string frame;
        frame.push_back(static_cast<char>(0x88));
        frame.push_back(static_cast<char>(payload.size()));
        send_all(fd, frame + payload);
    }
    /// Waits (bounded) for the client's answering close frame (or the end of the
    /// connection). The server then closes TCP first, as RFC 6455 asks of servers.
    void wait_close_reply(int fd, std::chrono::milliseconds timeout)
    {
        auto deadline = clock::now() + timeout;
        while (clock::now() < deadline) {
            protocol::frame_view f;
            if (auto used = protocol::parse_frame(in_, f)) {
                in_.erase(0, used);
                if (f.opcode == 0x8)
                    return;
                continue;
            }
            if (!wait_readable(fd, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now())))
                return;
            char buf[65536];
            auto n = ::recv(fd, buf, sizeof buf, 0);
            if (n <= 0)
                return;
            in_.append(buf, static_cast<std::size_t>(n));
        }
    }
    /// Blocks the script until the test calls release() (or the server stops).
    void hold() { wait_flag(released_); }
    void release() { released_ = true; }

private:
    static void send_all(int fd, std::string const& s)
    {
        std::size_t off = 0;
        while (off < s.size()) {
            auto n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
            if (n <= 0)
                return;
            off += static_cast<std::size_t>(n);
        }
    }
    void wait_flag(std::atomic<bool> const& f)
    {
        while (!stop_ && !f)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    void run()
    {
        int index = 0;
        while (!stop_) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 50) <= 0)
                continue;
            int c = ::accept(fd_, nullptr, nullptr);
            if (c < 0)
                continue;
            {
                std::lock_guard lock(mu_);
                arrivals_.push_back(clock::now());
            }
            in_.clear();
            script_(*this, c, index++);
            ::close(c);
        }
    }

    script script_;
    int fd_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::atomic<bool> released_{false};
    mutable std::mutex mu_;
    std::vector<clock::time_point> arrivals_;
    std::string in_;
    std::thread thread_;
};

}  // namespace lockstep::test
