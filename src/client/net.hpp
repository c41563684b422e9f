// The SDK's network layer: a reconnecting WebSocket connection to a reflector and a
// small HTTP client for snapshots and the router. Beast stays inside net.cpp.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace lockstep::client::detail {

struct url_parts {
    std::string scheme;  // ws, wss, http, https
    std::string host;
    std::string port;
    std::string target;  // path and query, at least "/"
    bool tls() const { return scheme == "wss" || scheme == "https"; }
    bool websocket() const { return scheme == "ws" || scheme == "wss"; }
};
/// ws://, wss://, http:// and https:// URLs; nullopt for anything else.
std::optional<url_parts> parse_url(std::string_view url);

/// How TLS peers are verified: always the certificate chain and the host name, against
/// `ca_file` (PEM) if given, else the system's trust store.
struct tls_config {
    std::string ca_file;
};

struct http_result {
    std::error_code ec;  // transport failure; status is 0 then
    int status = 0;
    std::string body;
};
/// One request on a fresh connection, bounded by `timeout` as a whole.
http_result http_request(std::string const& method, std::string const& url, std::string body,
                         std::string const& content_type, std::chrono::milliseconds timeout,
                         tls_config const& tls = {});

/// A WebSocket connection to a reflector that sends JOIN on every (re)connect, holds
/// back other frames until the reflector's SYNC, and reconnects after a network failure
/// or a close code below 4100 (randomised exponential back-off, first retry at once).
///
/// Thread safety: start, send, drop, reconnect and close may be called from any thread
/// except the network thread (close); set_synced only from on_message. The callbacks run
/// on the transport's own network thread.
class transport {
public:
    struct callbacks {
        /// A complete reflector message (chunked messages already joined).
        std::function<void(std::string&& text)> on_message;
        std::function<void()> on_open;
        /// The connection ended. `reconnecting` says whether the transport tries again;
        /// otherwise it is finished (a close code >= 4100 or 1000, the first connect
        /// failing, or close()).
        std::function<void(int code, std::string const& reason, bool reconnecting)> on_closed;
    };

    /// nullptr if the URL is not ws:// or wss://, or the TLS setup (CA file) fails.
    static std::unique_ptr<transport> create(std::string url, std::string join_frame, callbacks cb,
                                             tls_config const& tls = {});
    virtual ~transport() = default;

    virtual void start() = 0;
    /// Queues a frame; frames are written in call order once the connection is synced.
    /// A frame tagged with a session timeline (snapshot votes and SNAPs, which only make
    /// sense in that incarnation of the session) is dropped if the connection is, or
    /// becomes, synced to another timeline.
    virtual void send(std::string frame, std::string timeline = {}) = 0;
    /// Called from on_message (network thread only) when the reflector's SYNC arrived:
    /// held frames go out.
    virtual void set_synced(std::string const& timeline) = 0;
    /// Drops the TCP connection without a close frame (then reconnects).
    virtual void drop() = 0;
    /// Closes with `code` and reconnects (used after a protocol error).
    virtual void reconnect(int code, std::string reason) = 0;
    /// Writes what is queued, closes with 1000, and stops the network thread (bounded).
    virtual void close() = 0;
};

}  // namespace lockstep::client::detail
