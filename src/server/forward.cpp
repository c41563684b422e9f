#include "server/forward.hpp"

#include <spdlog/spdlog.h>

namespace lockstep {

bool
parse_ws_url(std::string_view url, std::string& host, std::string& port)
{
    constexpr std::string_view scheme = "ws://";
    if (url.substr(0, scheme.size()) != scheme)
        return false;
    auto rest = url.substr(scheme.size());
    rest = rest.substr(0, rest.find('/'));
    std::string_view h = rest, p = "80";
    if (!rest.empty() && rest.front() == '[') {  // [v6]:port
        auto end = rest.find(']');
        if (end == std::string_view::npos)
            return false;
        h = rest.substr(1, end - 1);
        if (end + 1 < rest.size()) {
            if (rest[end + 1] != ':')
                return false;
            p = rest.substr(end + 2);
        }
    } else if (auto colon = rest.rfind(':'); colon != std::string_view::npos) {
        h = rest.substr(0, colon);
        p = rest.substr(colon + 1);
    }
    if (h.empty() || p.empty() || p.find_first_not_of("0123456789") != std::string_view::npos)
        return false;
    if (h == "0.0.0.0" || h == "::")
        return false;  // a bind-all address (no --public-url): not where another machine reaches it
    host.assign(h);
    port.assign(p);
    return true;
}

unsigned
http_get_status(std::string const& host, std::string const& port, std::string const& target,
                std::chrono::milliseconds timeout)
{
    net::io_context ioc;
    beast::tcp_stream stream(ioc);
    tcp::resolver resolver(ioc);
    http::request<http::empty_body> req{http::verb::get, target, 11};
    req.set(http::field::host, host);
    beast::flat_buffer buf;
    http::response<http::string_body> res;
    unsigned status = 0;
    stream.expires_after(timeout);
    resolver.async_resolve(host, port, [&](error_code ec, tcp::resolver::results_type found) {
        if (ec)
            return;
        stream.async_connect(found, [&](error_code ec, tcp::endpoint const&) {
            if (ec)
                return;
            http::async_write(stream, req, [&](error_code ec, std::size_t) {
                if (ec)
                    return;
                http::async_read(stream, buf, res, [&](error_code ec, std::size_t) {
                    if (!ec)
                        status = res.result_int();
                });
            });
        });
    });
    // The stream's expiry cancels a hung connect, write or read; resolving is bounded here.
    ioc.run_for(timeout + std::chrono::milliseconds(50));
    return status;
}

std::string
move_notice(std::uint16_t code, std::string_view reason)
{
    return fmt::format("{}{:04} {}", move_notice_prefix, code % 10000, reason.substr(0, 120));
}

bool
parse_move_notice(std::string_view text, std::uint16_t& code, std::string& reason)
{
    if (text.substr(0, move_notice_prefix.size()) != move_notice_prefix)
        return false;
    auto rest = text.substr(move_notice_prefix.size());
    if (rest.size() < 5 || rest[4] != ' ' || rest.substr(0, 4).find_first_not_of("0123456789") != std::string_view::npos)
        return false;
    code = static_cast<std::uint16_t>((rest[0] - '0') * 1000 + (rest[1] - '0') * 100 + (rest[2] - '0') * 10 +
                                      (rest[3] - '0'));
    reason.assign(rest.substr(5));
    return true;
}

forward_link::forward_link(net::io_context& ioc, std::size_t max_queued, std::size_t max_frame, callbacks cb)
    : ws_(ioc), resolver_(ioc), max_queued_(max_queued), cb_(std::move(cb))
{
    ws_.read_message_max(max_frame);
    ws_.auto_fragment(false);
}

void
forward_link::start(std::string host, std::string port, std::string target, std::string const& self_id,
                    std::string first)
{
    send(std::move(first));
    host_ = host + ":" + port;
    beast::get_lowest_layer(ws_).expires_after(std::chrono::seconds(5));  // resolve, connect, upgrade
    resolver_.async_resolve(
        host, port,
        [self = shared_from_this(), target = std::move(target), self_id](error_code ec,
                                                                         tcp::resolver::results_type r) mutable {
            if (self->done_)
                return;
            if (ec)
                return self->fail(4003, "session owner unreachable; retry");
            beast::get_lowest_layer(self->ws_).async_connect(
                r, [self, target = std::move(target), self_id](error_code ec2, tcp::endpoint const&) mutable {
                    if (self->done_)
                        return;
                    if (ec2)
                        return self->fail(4003, "session owner unreachable; retry");
                    self->ws_.set_option(websocket::stream_base::decorator([self_id](websocket::request_type& req) {
                        req.set(http::field::user_agent, "lockstep-reflector (forwarding)");
                        req.set(forwarded_header, self_id);
                        req.set(move_notice_header, "1");
                    }));
                    self->ws_.async_handshake(self->host_, target, [self](error_code ec3) {
                        if (self->done_)
                            return;
                        if (ec3)
                            return self->fail(4003, "session owner refused the forwarded connection; retry");
                        beast::get_lowest_layer(self->ws_).expires_never();
                        auto t = websocket::stream_base::timeout::suggested(beast::role_type::client);
                        t.keep_alive_pings = true;
                        self->ws_.set_option(t);
                        self->open_ = true;
                        self->write_next();
                        self->read_next();
                    });
                });
        });
}

void
forward_link::send(std::string text)
{
    if (done_)
        return;
    queued_bytes_ += text.size();
    queue_.push_back(std::move(text));
    if (queued_bytes_ > max_queued_)
        return fail(1013, "forwarding queue full");
    write_next();
}

void
forward_link::write_next()
{
    if (!open_ || writing_)
        return;
    if (queue_.empty()) {
        if (close_after_queue_)
            shut(std::exchange(close_after_queue_, 0));
        return;
    }
    if (done_ && !close_after_queue_)
        return;
    writing_ = true;
    ws_.text(true);
    // The frame stays at the front of the queue until written: the buffer is its own.
    ws_.async_write(net::buffer(queue_.front()), [self = shared_from_this()](error_code ec, std::size_t) {
        self->writing_ = false;
        if (ec) {
            if (!self->done_)
                return self->fail(4003, "connection to the session owner lost; retry");
            self->close_after_queue_ = 0;  // the client left and the owner is gone too
            self->queue_.clear();
            return;
        }
        self->queued_bytes_ -= self->queue_.front().size();
        self->queue_.pop_front();
        self->write_next();
    });
}

void
forward_link::read_next()
{
    ws_.async_read(rbuf_, [self = shared_from_this()](error_code ec, std::size_t) {
        if (self->done_)
            return;
        if (ec) {
            auto const& why = self->ws_.reason();
            if (ec == websocket::error::closed && why.code != websocket::close_code::none)
                return self->fail(static_cast<std::uint16_t>(why.code), std::string(why.reason.data(), why.reason.size()));
            return self->fail(4003, "connection to the session owner lost; retry");
        }
        auto data = self->rbuf_.cdata();
        std::string text(static_cast<char const*>(data.data()), data.size());
        self->rbuf_.consume(self->rbuf_.size());
        std::uint16_t code = 0;
        std::string reason;
        if (parse_move_notice(text, code, reason)) {
            // The owner moves the session: it reads on until this link closes, which
            // happens once the client answered its own close (connection.cpp).
            if (self->cb_.moving)
                self->cb_.moving(code, std::move(reason));
        } else {
            self->cb_.message(std::move(text));
        }
        if (!self->done_)
            self->read_next();
    });
}

void
forward_link::fail(std::uint16_t code, std::string reason)
{
    if (done_)
        return;
    spdlog::info("forwarding to {}: closed {} ({})", host_, code, reason);
    done_ = true;
    shut(code == 1013 ? 1001 : 1000);
    auto cb = std::move(cb_.closed);
    cb(code, std::move(reason));
}

void
forward_link::close(std::uint16_t code)
{
    if (done_)
        return;
    done_ = true;
    if (open_ && (writing_ || !queue_.empty())) {
        // What the client sent before it left (a last SEND, frames that crossed a
        // move's close) goes to the owner first; write_next() then sends the close.
        close_after_queue_ = code;
        return;
    }
    shut(code);
}

void
forward_link::shut(std::uint16_t code)
{
    // The frame being written (the queue's front) is Beast's buffer until its write
    // completes: it stays.
    queue_.erase(queue_.begin() + (writing_ && !queue_.empty() ? 1 : 0), queue_.end());
    queued_bytes_ = queue_.empty() ? 0 : queue_.front().size();
    resolver_.cancel();
    if (!open_) {
        error_code ignored;
        beast::get_lowest_layer(ws_).socket().close(ignored);
        return;
    }
    if (ws_.is_open() && code != 1006)
        ws_.async_close(websocket::close_reason(static_cast<websocket::close_code>(code)),
                        [self = shared_from_this()](error_code) {});
    else
        beast::get_lowest_layer(ws_).close();
}

}  // namespace lockstep
