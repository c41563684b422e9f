// The next layer under Beast's websocket::stream: a TCP socket whose writes are gated
// so that Beast's own frames (handshake response, pong, close) and the connection's
// raw writes of pre-encoded frames never interleave on the wire.
//
// Beast reads and writes control frames through async_read_some/async_write_some; the
// connection writes its output buffer with non-blocking send() on the socket itself.
// While the connection's buffer is stuck half-written (set_raw_busy(true)), Beast's
// writes wait; while a Beast write is in flight (beast_busy()), the connection queues
// its next write with after_beast(). Each Beast write_some is performed as a complete
// write, so a frame is never split by a raw write. After a close frame the connection
// wrote itself, Beast's writes are dropped (swallow_writes()).
//
// @par Thread safety
// Single-threaded: used only from the owning worker's io_context thread.
#pragma once

#include "server/internal.hpp"
#include "common/unique_function.hpp"

#include <vector>

namespace lockstep {

class gated_stream {
public:
    using executor_type = tcp::socket::executor_type;

    explicit gated_stream(tcp::socket s) : sock_(std::move(s)) {}

    executor_type get_executor() noexcept { return sock_.get_executor(); }
    tcp::socket& next_layer() noexcept { return sock_; }
    tcp::socket const& next_layer() const noexcept { return sock_; }

    template <class MutableBuffers, class Token>
    auto
    async_read_some(MutableBuffers const& b, Token&& token)
    {
        return sock_.async_read_some(b, std::forward<Token>(token));
    }

    template <class ConstBuffers, class Token>
    auto
    async_write_some(ConstBuffers const& b, Token&& token)
    {
        return net::async_initiate<Token, void(error_code, std::size_t)>(
            [this](auto handler, ConstBuffers const& buffers) {
                std::vector<net::const_buffer> bufs(net::buffer_sequence_begin(buffers),
                                                    net::buffer_sequence_end(buffers));
                start_or_defer_beast(
                    [this, bufs = std::move(bufs), h = std::move(handler)]() mutable {
                        if (swallow_) {
                            // Nothing may follow the connection's own close frame (RFC
                            // 6455 5.5.1): Beast's echo of the client's close reply, or a
                            // ping or pong, counts as written and is not sent.
                            auto n = net::buffer_size(bufs);
                            net::post(sock_.get_executor(),
                                      [h = std::move(h), n]() mutable { h(error_code{}, n); });
                            return;
                        }
                        beast_busy_ = true;
                        net::async_write(sock_, bufs, [this, h = std::move(h)](error_code ec, std::size_t n) mutable {
                            beast_busy_ = false;
                            // A waiting raw write keeps its connection (and so `this`)
                            // alive; without one, `this` must not be touched after h().
                            auto next = std::move(pending_raw_);
                            pending_raw_.reset();
                            h(ec, n);
                            if (next) {
                                if (beast_busy_)
                                    pending_raw_ = std::move(next);
                                else
                                    next();
                            }
                        });
                    });
            },
            token, b);
    }

    /// True while a Beast write is in flight: raw writes must wait (after_beast()).
    bool beast_busy() const noexcept { return beast_busy_; }

    /// Runs `f` when the Beast write in flight completes (one waiter; the last wins).
    void after_beast(unique_function<void()> f) { pending_raw_ = std::move(f); }

    /// Raw output is half-written and waiting for the socket: Beast's writes wait for
    /// set_raw_busy(false), which starts the first of them.
    void
    set_raw_busy(bool busy)
    {
        raw_busy_ = busy;
        if (!busy && pending_beast_) {
            auto f = std::move(pending_beast_);
            pending_beast_.reset();
            f();
        }
    }

    /// The connection wrote its own close frame: Beast's writes from now on are
    /// reported done and not sent.
    void swallow_writes() noexcept { swallow_ = true; }

private:
    template <class F>
    void
    start_or_defer_beast(F&& f)
    {
        if (raw_busy_)
            pending_beast_ = std::forward<F>(f);
        else
            f();
    }

    tcp::socket sock_;
    bool raw_busy_ = false;
    bool beast_busy_ = false;
    bool swallow_ = false;
    unique_function<void()> pending_beast_;
    unique_function<void()> pending_raw_;
};

// Beast tears down the next layer through these (found by argument-dependent lookup).
inline void
teardown(beast::role_type role, gated_stream& s, error_code& ec)
{
    websocket::teardown(role, s.next_layer(), ec);
}

template <class Handler>
void
async_teardown(beast::role_type role, gated_stream& s, Handler&& h)
{
    websocket::async_teardown(role, s.next_layer(), std::forward<Handler>(h));
}

}  // namespace lockstep
