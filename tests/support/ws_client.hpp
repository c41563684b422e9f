// Minimal blocking WebSocket and HTTP clients for integration tests, on raw sockets with
// poll() timeouts, so tests can also send what a good client never would (binary
// frames, oversized frames, invalid UTF-8, garbage).
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace lockstep::test {

using namespace std::chrono_literals;

class ws_client {
public:
    /// Connects to 127.0.0.1:port and performs the upgrade for `path` (with more header
    /// lines, each ending in \r\n). Throws on failure.
    ws_client(std::uint16_t port, std::string const& path, std::string const& extra_headers = "");
    ~ws_client();
    ws_client(ws_client const&) = delete;
    ws_client& operator=(ws_client const&) = delete;

    void send_text(std::string const& text) { send_frame(0x1, text); }
    void send_json(nlohmann::json const& j) { send_text(j.dump()); }
    void send_frame(int opcode, std::string const& payload, bool fin = true);

    /// Next text message (reassembling _CHUNK frames), or nullopt on timeout/close.
    std::optional<std::string> recv_text(std::chrono::milliseconds timeout = 3000ms);
    std::optional<nlohmann::json> recv(std::chrono::milliseconds timeout = 3000ms);
    /// Next message with this action, skipping others (TICKs etc.).
    std::optional<nlohmann::json> recv_action(std::string const& action, std::chrono::milliseconds timeout = 3000ms);
    /// Reads until the server's close frame; returns its code, or -1 on timeout, 1006 if
    /// the connection ended without one.
    int wait_close(std::chrono::milliseconds timeout = 5000ms);
    /// After wait_close(): what the server sent after its close frame (nothing, if it
    /// keeps RFC 6455 5.5.1), read until it ends the TCP connection; nullopt if it did
    /// not end it within `timeout`.
    std::optional<std::string> rest_after_close(std::chrono::milliseconds timeout = 3000ms);
    /// Closes the TCP connection without a closing handshake.
    void drop();
    bool closed() const { return close_code_ != 0; }
    int close_code() const { return close_code_; }
    int fd() const { return fd_; }

private:
    bool fill(std::chrono::steady_clock::time_point deadline);
    bool take_frame(int& opcode, std::string& payload);
    int fd_ = -1;
    int close_code_ = 0;
    std::string in_;  // bytes received, not yet taken as frames
};

/// A TCP connection to 127.0.0.1:port (TCP_NODELAY); throws if it cannot connect.
int
connect_loopback(std::uint16_t port);
/// A plain TCP connection for hand-written HTTP (Expect: 100-continue, chunked bodies,
/// oversized headers). Every read is bounded.
class tcp_connection {
public:
    explicit tcp_connection(std::uint16_t port);
    ~tcp_connection();
    tcp_connection(tcp_connection const&) = delete;
    tcp_connection& operator=(tcp_connection const&) = delete;
    /// Sends all of `data`; false if the peer is gone.
    bool send(std::string const& data);
    /// Reads until `marker` occurs after `from` in what was received, the peer closes, or
    /// `timeout`. Returns everything received on the connection so far.
    std::string const& read_until(std::string const& marker, std::size_t from = 0,
                                  std::chrono::milliseconds timeout = 10000ms);
    std::string const& received() const { return in_; }

private:
    int fd_ = -1;
    std::string in_;
};

struct http_response {
    int status = 0;
    std::string body;
    std::string headers;
};

/// One request on a fresh connection (Connection: close).
http_response
http_request(std::uint16_t port, std::string const& method, std::string const& target, std::string const& body = "",
             std::string const& extra_headers = "");

}  // namespace lockstep::test
