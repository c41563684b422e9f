// Forwarding between hand-offs (docs/operations.md, "Hand-off on JOIN"): a JOIN that
// reaches a reflector which does not own the session, while the session may not move
// (it moved less than --handoff-min-interval-ms ago, or hand-offs are off), is relayed
// to the owner instead of being bounced: this reflector opens a WebSocket to the owner's
// registered URL with the client's own path, sends the client's JOIN, and from then on
// passes every text frame through in both directions. Closes go both ways.
//
// @par Thread safety
// On the worker thread of the client's connection only.
#pragma once

#include "common/unique_function.hpp"
#include "server/internal.hpp"

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>

namespace lockstep {

/// The request header a forwarding reflector sets: a forwarded connection is never
/// forwarded again (no loops when registered URLs point at a balancer).
inline constexpr char const* forwarded_header = "X-Lockstep-Forwarded";

/// The header a forwarding reflector sets to say it understands move_notice_prefix: its
/// owner then announces a move (hand-off, drain) with that text frame instead of a close
/// frame, and reads on until the forwarder closes the link.
inline constexpr char const* move_notice_header = "X-Lockstep-Move-Notice";

/// A move's notice from an owner to a forwarding reflector, in place of its close frame:
/// this prefix, the close code (4 digits), a space, the reason. Never a client's message
/// (those are JSON, or _CHUNK frames). The forwarder closes its client for the move, relays
/// what the client sent until its close reply, then closes the link: so a frame that
/// crossed the close on either hop still reaches the session.
inline constexpr std::string_view move_notice_prefix = "_LOCKSTEP_MOVE ";

/// The notice's text for `code` and `reason`.
std::string move_notice(std::uint16_t code, std::string_view reason);
/// Reads a notice: false if `text` is not one.
bool parse_move_notice(std::string_view text, std::uint16_t& code, std::string& reason);

/// host and port of a `ws://host[:port][/...]` URL; false for anything else (wss: the
/// link speaks plain WebSocket only) and for the unspecified addresses 0.0.0.0 and ::
/// (a reflector registered without --public-url).
bool parse_ws_url(std::string_view url, std::string& host, std::string& port);

/// The status of a plain-HTTP `GET target` to host:port, or 0 when no complete answer
/// came within `timeout` (connection refused, a hung peer). Blocks the calling thread
/// for at most about `timeout` (a private io_context): for the directory thread only,
/// never an event loop. Used to ask peers whether they reach Redis (/health/redis).
unsigned http_get_status(std::string const& host, std::string const& port, std::string const& target,
                         std::chrono::milliseconds timeout);

class forward_link : public std::enable_shared_from_this<forward_link> {
public:
    struct callbacks {
        unique_function<void(std::string&&)> message;                 // a text frame from the owner
        unique_function<void(std::uint16_t, std::string)> closed;     // the owner's close (or why none)
        unique_function<void(std::uint16_t, std::string)> moving;     // the owner's move notice
    };

    /// `max_queued`: bytes from the client not yet written to the owner before the link
    /// gives up (the client is then closed 1013 by the `closed` callback).
    forward_link(net::io_context& ioc, std::size_t max_queued, std::size_t max_frame, callbacks cb);

    /// Connects to host:port, upgrades on `target` and sends `first` (the JOIN).
    void start(std::string host, std::string port, std::string target, std::string const& self_id,
               std::string first);
    /// A text frame from the client, relayed in order.
    void send(std::string text);
    /// The client went away (`code`): what it sent before still goes to the owner, then
    /// the owner gets that close; no callback follows.
    void close(std::uint16_t code);

private:
    void fail(std::uint16_t code, std::string reason);
    void shut(std::uint16_t code);
    void write_next();
    void read_next();

    websocket::stream<beast::tcp_stream> ws_;
    tcp::resolver resolver_;
    std::size_t max_queued_;
    callbacks cb_;
    std::string host_;
    std::deque<std::string> queue_;
    std::size_t queued_bytes_ = 0;
    beast::flat_buffer rbuf_;
    bool open_ = false;     // handshake done
    bool writing_ = false;
    bool done_ = false;     // closed either way: no more callbacks
    std::uint16_t close_after_queue_ = 0;  // the client's close, sent once the queue is written
};

}  // namespace lockstep
