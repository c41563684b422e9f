#include "support/ws_client.hpp"

#include "protocol/ws_frame.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <utility>
#include <stdexcept>

namespace lockstep::test {

int
connect_loopback(std::uint16_t port)
{
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        throw std::runtime_error("socket");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
        ::close(fd);
        throw std::runtime_error("connect");
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

namespace {

void
write_all(int fd, std::string const& s)
{
    std::size_t off = 0;
    while (off < s.size()) {
        auto n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
        if (n <= 0)
            throw std::runtime_error("send failed");
        off += static_cast<std::size_t>(n);
    }
}

}  // namespace

ws_client::ws_client(std::uint16_t port, std::string const& path, std::string const& extra_headers)
{
    fd_ = connect_loopback(port);
    write_all(fd_, "GET " + path +
                       " HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
                       extra_headers + "\r\n");
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (in_.find("\r\n\r\n") == std::string::npos)
        if (!fill(deadline))
            throw std::runtime_error("no upgrade response");
    auto end = in_.find("\r\n\r\n");
    if (in_.rfind("HTTP/1.1 101", 0) != 0)
        throw std::runtime_error("upgrade refused: " + in_.substr(0, in_.find("\r\n")));
    in_.erase(0, end + 4);
    close_code_ = 0;
}

ws_client::~ws_client()
{
    if (fd_ >= 0)
        ::close(fd_);
}

void
ws_client::send_frame(int opcode, std::string const& payload, bool fin)
{
    std::string f;
    f.push_back(static_cast<char>((fin ? 0x80 : 0) | opcode));
    std::size_t n = payload.size();
    if (n < 126) {
        f.push_back(static_cast<char>(0x80 | n));
    } else if (n <= 0xFFFF) {
        f.push_back(static_cast<char>(0x80 | 126));
        f.push_back(static_cast<char>(n >> 8));
        f.push_back(static_cast<char>(n & 0xFF));
    } else {
        f.push_back(static_cast<char>(0x80 | 127));
        for (int i = 7; i >= 0; --i)
            f.push_back(static_cast<char>((static_cast<std::uint64_t>(n) >> (8 * i)) & 0xFF));
    }
    static std::mt19937 rng{42};
    char mask[4];
    for (auto& m : mask)
        m = static_cast<char>(rng());
    f.append(mask, 4);
    for (std::size_t i = 0; i < n; ++i)
        f.push_back(static_cast<char>(payload[i] ^ mask[i % 4]));
    write_all(fd_, f);
}

bool
ws_client::fill(std::chrono::steady_clock::time_point deadline)
{
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || fd_ < 0)
        return false;
    pollfd pfd{fd_, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0)
        return false;
    char buf[65536];
    auto got = ::recv(fd_, buf, sizeof buf, 0);
    if (got <= 0) {
        if (close_code_ == 0)
            close_code_ = 1006;
        return false;
    }
    in_.append(buf, static_cast<std::size_t>(got));
    return true;
}

bool
ws_client::take_frame(int& opcode, std::string& payload)
{
    // Frames are taken from the buffer only when complete, so a timeout never loses
    // part of one.
    protocol::frame_view f;
    auto used = protocol::parse_frame(in_, f);
    if (!used)
        return false;
    opcode = f.opcode;
    payload = protocol::unmasked_payload(f);
    in_.erase(0, used);
    return true;
}

std::optional<std::string>
ws_client::recv_text(std::chrono::milliseconds timeout)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    protocol::chunk_assembler chunks;
    for (;;) {
        int opcode = 0;
        std::string payload;
        while (!take_frame(opcode, payload)) {
            if (close_code_ || !fill(deadline))
                return std::nullopt;
        }
        if (opcode == 0x8) {  // close
            close_code_ = protocol::close_code_of(payload);
            try {
                send_frame(0x8, payload.substr(0, 2));
            } catch (...) {
            }
            // Like browsers and Node, end the TCP connection after the close handshake.
            ::shutdown(fd_, SHUT_WR);
            return std::nullopt;
        }
        if (opcode == 0x9) {  // ping -> pong
            send_frame(0xA, payload);
            continue;
        }
        if (opcode == 0xA)
            continue;
        std::string_view message;
        switch (chunks.feed(payload, message)) {
        case protocol::chunk_assembler::status::partial: continue;
        case protocol::chunk_assembler::status::malformed: throw std::runtime_error("malformed _CHUNK message");
        case protocol::chunk_assembler::status::complete: return std::string(message);
        }
    }
}

std::optional<nlohmann::json>
ws_client::recv(std::chrono::milliseconds timeout)
{
    auto t = recv_text(timeout);
    if (!t)
        return std::nullopt;
    return nlohmann::json::parse(*t);
}

std::optional<nlohmann::json>
ws_client::recv_action(std::string const& action, std::chrono::milliseconds timeout)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0)
            return std::nullopt;
        auto m = recv(left);
        if (!m)
            return std::nullopt;
        if (m->value("action", "") == action)
            return m;
    }
}

int
ws_client::wait_close(std::chrono::milliseconds timeout)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!close_code_) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0)
            return -1;
        recv_text(left);
    }
    return close_code_;
}

std::optional<std::string>
ws_client::rest_after_close(std::chrono::milliseconds timeout)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0 || fd_ < 0)
            return std::nullopt;
        pollfd pfd{fd_, POLLIN, 0};
        if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0)
            return std::nullopt;
        char buf[4096];
        auto got = ::recv(fd_, buf, sizeof buf, 0);
        if (got <= 0)
            return std::exchange(in_, {});
        in_.append(buf, static_cast<std::size_t>(got));
    }
}

void
ws_client::drop()
{
    if (fd_ >= 0) {
        linger l{1, 0};  // RST, like a dead network
        ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
        ::close(fd_);
        fd_ = -1;
    }
    close_code_ = 1006;
}

tcp_connection::tcp_connection(std::uint16_t port) : fd_(connect_loopback(port)) {}

tcp_connection::~tcp_connection()
{
    ::close(fd_);
}

bool
tcp_connection::send(std::string const& data)
{
    try {
        write_all(fd_, data);
        return true;
    } catch (std::runtime_error const&) {
        return false;
    }
}

std::string const&
tcp_connection::read_until(std::string const& marker, std::size_t from, std::chrono::milliseconds timeout)
{
    auto deadline = std::chrono::steady_clock::now() + timeout;
    char buf[65536];
    while (in_.find(marker, from) == std::string::npos) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        pollfd pfd{fd_, POLLIN, 0};
        if (left.count() <= 0 || ::poll(&pfd, 1, static_cast<int>(left.count())) <= 0)
            break;
        auto n = ::recv(fd_, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        in_.append(buf, static_cast<std::size_t>(n));
    }
    return in_;
}

http_response
http_request(std::uint16_t port, std::string const& method, std::string const& target, std::string const& body,
             std::string const& extra_headers)
{
    int fd = connect_loopback(port);
    // Connection: close unless the caller sets its own (an upgrade request).
    bool own_connection = extra_headers.find("Connection:") != std::string::npos;
    std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                      (own_connection ? "" : "Connection: close\r\n") + extra_headers;
    if (!body.empty() || method == "PUT" || method == "POST")
        req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    req += "\r\n";
    http_response res;
    try {
        write_all(fd, req);
        write_all(fd, body);
    } catch (...) {
        // The server may answer (413) and close before reading the whole body.
    }
    std::string all;
    char buf[65536];
    auto deadline = std::chrono::steady_clock::now() + 10s;
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0)
            break;
        pollfd pfd{fd, POLLIN, 0};
        if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0)
            break;
        auto n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            break;
        all.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    auto hend = all.find("\r\n\r\n");
    if (all.rfind("HTTP/1.1 ", 0) != 0 || hend == std::string::npos)
        return res;
    res.status = std::stoi(all.substr(9, 3));
    res.headers = all.substr(0, hend);
    res.body = all.substr(hend + 4);
    return res;
}

}  // namespace lockstep::test
