// One WebSocket client. Beast does the handshake, the reads and the control frames;
// outbound data frames are pre-encoded by the session and written by this class's
// write loop, many frames per system call (see gated_stream.hpp).
#include "server/gated_stream.hpp"
#include "server/internal.hpp"

#include "protocol/codec.hpp"

#include <spdlog/spdlog.h>

#include <deque>

#include <unistd.h>

namespace lockstep {

using protocol::close_code;

namespace {

// Upper bounds of one gathered write.
constexpr std::size_t max_write_frames = 256;
constexpr std::size_t max_write_bytes = 1u << 20;

}  // namespace

class connection final : public peer, public flushable, public std::enable_shared_from_this<connection> {
public:
    connection(server_state& st, worker& w, tcp::socket sock, std::string session_id)
        : st_(st), w_(w), ws_(std::move(sock)), session_id_(std::move(session_id)), join_timer_(w.ioc)
    {
        error_code ec;
        auto ep = ws_.next_layer().next_layer().remote_endpoint(ec);
        serial_ = st_.next_conn_id.fetch_add(1);
        tag_ = "c" + std::to_string(serial_) + " " +
               (ec ? std::string("?") : ep.address().to_string() + ":" + std::to_string(ep.port())) + " " +
               session_id_.substr(0, 8);
    }

    ~connection() override { w_.metrics.add(w_.metrics.queue_bytes, -static_cast<std::int64_t>(queued_bytes_)); }

    void
    start(http::request<http::string_body> req)
    {
        seat_token_ = router::router::token_from_path(std::string_view(req.target().data(), req.target().size()));
        w_.connections[this] = weak_from_this();
        w_.metrics.add(w_.metrics.connections, 1);
        ws_.next_layer().next_layer().set_option(tcp::no_delay(true));
        ws_.read_message_max(st_.cfg.max_frame_bytes);
        ws_.auto_fragment(false);
        websocket::stream_base::timeout t{};
        t.handshake_timeout = std::chrono::seconds(10);  // opening and closing handshakes
        t.idle_timeout = std::chrono::seconds(120);      // clients PULSE every 25 s when idle
        t.keep_alive_pings = true;
        ws_.set_option(t);
        ws_.set_option(websocket::stream_base::decorator([](websocket::response_type& res) {
            res.set(http::field::server, "lockstep-reflector");
        }));
        ws_.async_accept(req, [self = shared_from_this()](error_code ec) { self->on_accept(ec); });
    }

    // ---- peer ----

    void
    deliver(out_ptr const& m) override
    {
        enqueue(m, false);
    }

    void
    deliver_sync(out_ptr const& m) override
    {
        enqueue(m, true);
    }

    void
    deliver_tick(out_ptr const& m) override
    {
        enqueue(m, false, true);
    }

    void
    enqueue(out_ptr const& m, bool exempt, bool urgent = false)
    {
        if (close_requested_)
            return;
        queued_bytes_ += m->size();
        if (exempt)
            exempt_bytes_ += m->size();
        w_.metrics.add(w_.metrics.queue_bytes, static_cast<std::int64_t>(m->size()));
        queue_.push_back({m, exempt});
        if (queued_bytes_ - exempt_bytes_ > st_.cfg.max_queue_bytes) {
            spdlog::warn("{} outbound queue {} bytes over --max-queue-bytes: closing 1013 (client will rejoin)",
                         tag_, queued_bytes_);
            drop_queue();
            close(close_code::try_again_later, "outbound queue full");
            return;
        }
        if (!writing_ && accepted_ && (!flush_scheduled_ || (urgent && !urgent_scheduled_))) {
            flush_scheduled_ = true;
            urgent_scheduled_ = urgent_scheduled_ || urgent;
            w_.schedule_flush(shared_from_this(), urgent);
        }
    }

    /// Called by the worker at the end of the current batch of handlers.
    void
    flush() override
    {
        flush_scheduled_ = false;
        urgent_scheduled_ = false;
        if (writing_ || close_started_)
            return;
        if (!queue_.empty())
            do_write();
        else if (close_requested_)
            do_close();
    }

    bool
    backlogged() const noexcept override
    {
        return writing_ || !queue_.empty();
    }

    void
    close(close_code code, std::string_view reason) override
    {
        if (close_requested_)
            return;
        close_requested_ = true;
        close_reason_.code = static_cast<websocket::close_code>(code);
        close_reason_.reason = std::string(reason.substr(0, 120));  // close frames carry at most 123 bytes
        st_.closes.add(static_cast<std::uint16_t>(code));
        join_timer_.cancel();
        if (!writing_ && accepted_)
            do_close();
    }

    std::string const&
    tag() const noexcept override
    {
        return tag_;
    }

private:
    void
    on_accept(error_code ec)
    {
        if (ec) {
            spdlog::debug("{} websocket handshake failed: {}", tag_, ec.message());
            finish();
            return;
        }
        accepted_ = true;
        spdlog::debug("{} connected", tag_);
        if (session_id_.empty()) {
            spdlog::info("{} no session id in the URL path: closing 4100", tag_);
            close(close_code::outdated_protocol, "outdated protocol");
        } else if (!close_requested_) {
            join_timer_.expires_after(std::chrono::milliseconds(st_.cfg.join_timeout_ms));
            join_timer_.async_wait([self = shared_from_this()](error_code ec) { self->on_join_timeout(ec); });
        }
        if (close_requested_ && !writing_)
            do_close();
        else if (!queue_.empty() && !writing_)
            do_write();
        do_read();
    }

    void
    on_join_timeout(error_code ec)
    {
        if (ec || joined_ || close_requested_)
            return;
        spdlog::info("{} sent no JOIN within {} ms: closing 4121", tag_, st_.cfg.join_timeout_ms);
        close(close_code::never_joined, "client never joined");
    }

    void
    do_read()
    {
        ws_.async_read(rbuf_, [self = shared_from_this()](error_code ec, std::size_t n) { self->on_read(ec, n); });
    }

    void
    on_read(error_code ec, std::size_t n)
    {
        if (ec) {
            if (ec == websocket::error::message_too_big) {
                spdlog::info("{} frame over --max-frame-bytes ({}): closed 1009", tag_, st_.cfg.max_frame_bytes);
                st_.closes.add(1009);
            } else if (ec == beast::websocket::error::bad_frame_payload) {
                spdlog::info("{} invalid UTF-8 in a text frame: closed 1007", tag_);
                st_.closes.add(1007);
            } else if (ec != websocket::error::closed && ec != net::error::operation_aborted &&
                       ec != net::error::eof && ec != net::error::connection_reset) {
                spdlog::debug("{} read: {}", tag_, ec.message());
            }
            finish();
            return;
        }
        w_.metrics.add(w_.metrics.frames_in);
        w_.metrics.add(w_.metrics.bytes_in, n);
        if (!close_requested_) {
            if (!ws_.got_text()) {
                spdlog::info("{} binary frame: closing 1003", tag_);
                close(close_code::unsupported_data, "binary frames are not supported");
            } else {
                auto data = rbuf_.cdata();
                handle(std::string_view(static_cast<char const*>(data.data()), data.size()));
            }
        }
        rbuf_.consume(rbuf_.size());
        do_read();
    }

    void
    handle(std::string_view text)
    {
        codec::client_frame f;
        auto r = codec::parse_client_frame(text, f, scratch_);
        if (r != codec::parse_result::ok) {
            spdlog::info("{} {}: closing 4102", tag_,
                         r == codec::parse_result::not_json ? "frame is not JSON" : "frame is not a JSON object");
            close(close_code::malformed_message, "malformed message");
            return;
        }
        using codec::action;
        switch (f.act) {
        case action::send:
            if (!slot_) {
                spdlog::debug("{} SEND before JOIN ignored", tag_);
                return;
            }
            slot_->s.send(*this, f.args, f.tags);
            w_.after(*slot_);
            return;
        case action::join: {
            joined_ = true;
            join_timer_.cancel();
            auto& slot = w_.session_for(session_id_);
            if (slot.s.join(*this, f.args.empty() ? std::string_view("null") : f.args)) {
                slot_ = &slot;
                if (!seat_token_.empty() && !seat_confirmed_)  // came through a router seat
                    seat_confirmed_ = st_.rtr->member_joined(seat_token_, slot.s.name(), conn_key());
            }
            w_.after(slot);
            return;
        }
        case action::tutti:
        case action::snap:
        case action::save:
        case action::ticks: {
            // Like the reference, these work on the URL's session even without a JOIN
            // on this socket, but the session must exist.
            session_slot* s = slot_ ? slot_ : w_.find_session(session_id_);
            if (!s || !s->s.created()) {
                spdlog::info("{} {} for unknown session: closing 4000", tag_, f.action_name);
                close(close_code::unknown_session, "unknown session");
                return;
            }
            if (f.act == action::tutti)
                s->s.tutti(*this, f.args);
            else if (f.act == action::snap)
                s->s.snap(*this, f.args);
            else if (f.act == action::save)
                s->s.save(*this, f.args);
            else
                s->s.ticks(*this, f.args);
            w_.after(*s);
            return;
        }
        case action::ping:
            if (slot_)
                slot_->s.ping(*this, f.args);
            else
                deliver(codec::make_pong(f.args));
            return;
        case action::pulse:
            return;
        case action::log:
            spdlog::info("{} LOG {}", tag_, f.args.substr(0, 2000));
            return;
        case action::unknown:
            spdlog::warn("{} unknown action {} ignored", tag_, f.action_name.substr(0, 100));
            return;
        }
    }

    // ---- write loop: one write in flight, gathering everything queued meanwhile ----

    void
    do_write()
    {
        writing_ = true;
        inflight_.clear();
        bufs_.clear();
        std::size_t bytes = 0;
        std::size_t exempt = 0;
        while (!queue_.empty() && inflight_.size() < max_write_frames && (bytes == 0 || bytes < max_write_bytes)) {
            auto& q = queue_.front();
            bytes += q.m->size();
            if (q.exempt)
                exempt += q.m->size();
            bufs_.emplace_back(q.m->wire().data(), q.m->wire().size());
            inflight_.push_back(std::move(q.m));
            queue_.pop_front();
        }
        ws_.next_layer().raw_write(bufs_, [self = shared_from_this(), bytes, exempt](error_code ec, std::size_t n) {
            self->on_write(ec, n, bytes, exempt);
        });
    }

    void
    on_write(error_code ec, std::size_t n, std::size_t bytes, std::size_t exempt)
    {
        writing_ = false;
        queued_bytes_ -= bytes;
        exempt_bytes_ -= exempt;
        w_.metrics.add(w_.metrics.queue_bytes, -static_cast<std::int64_t>(bytes));
        inflight_.clear();
        if (ec) {
            spdlog::debug("{} write: {}", tag_, ec.message());
            drop_queue();
            close_requested_ = true;  // nothing more can be sent; the read side finishes
            error_code ignored;
            ws_.next_layer().next_layer().close(ignored);
            return;
        }
        w_.metrics.add(w_.metrics.bytes_out, n);
        w_.metrics.add(w_.metrics.writes);
        if (!queue_.empty()) {
            // Gather what else arrives in this turn of the loop into the next write.
            if (!flush_scheduled_) {
                flush_scheduled_ = true;
                w_.schedule_flush(shared_from_this());
            }
        } else if (close_requested_) {
            do_close();
        }
    }

    void
    drop_queue()
    {
        std::size_t bytes = 0;
        for (auto const& q : queue_) {
            bytes += q.m->size();
            if (q.exempt)
                exempt_bytes_ -= q.m->size();
        }
        queue_.clear();
        queued_bytes_ -= bytes;
        w_.metrics.add(w_.metrics.queue_bytes, -static_cast<std::int64_t>(bytes));
    }

    void
    do_close()
    {
        if (close_started_)
            return;
        close_started_ = true;
        ws_.async_close(close_reason_, [self = shared_from_this()](error_code ec) {
            if (ec && ec != net::error::operation_aborted)
                spdlog::debug("{} close: {}", self->tag_, ec.message());
        });
    }

    /// The connection is done: leave the session (its leave is announced after the
    /// session's leaveDelay) and deregister.
    void
    finish()
    {
        if (finished_)
            return;
        finished_ = true;
        join_timer_.cancel();
        if (slot_) {
            auto* s = slot_;
            slot_ = nullptr;
            s->s.disconnect(*this);
            w_.after(*s);
        }
        if (seat_confirmed_) {
            // A normal leave (close 1000 from the client) frees the seat; a drop keeps
            // it reserved for a reconnect.
            bool left = ws_.reason().code == websocket::close_code::normal;
            st_.rtr->member_left(seat_token_, left, conn_key());
        }
        w_.connections.erase(this);
        w_.metrics.add(w_.metrics.connections, -1);
        spdlog::debug("{} disconnected", tag_);
    }

    /// This connection's name in the router, unique in the cluster and across restarts:
    /// "<reflector id>#<process instance>:<serial>".
    std::string
    conn_key() const
    {
        return st_.self_id + "#" + st_.instance + ":" + std::to_string(serial_);
    }

    server_state& st_;
    worker& w_;
    std::uint64_t serial_ = 0;
    websocket::stream<gated_stream> ws_;
    std::string session_id_;
    std::string tag_;
    beast::flat_buffer rbuf_;
    std::vector<json_scan::member> scratch_;
    net::steady_timer join_timer_;
    session_slot* slot_ = nullptr;  // set once a JOIN was answered with SYNC
    std::string seat_token_;         // router seat from the URL path (/r/<token>/<id>)
    bool seat_confirmed_ = false;

    struct queued {
        out_ptr m;
        bool exempt;  // a SYNC: not counted against --max-queue-bytes
    };
    std::deque<queued> queue_;        // not yet handed to the socket
    std::vector<out_ptr> inflight_;   // owned by the write in flight
    std::vector<net::const_buffer> bufs_;
    std::size_t queued_bytes_ = 0;    // queue_ + inflight_
    std::size_t exempt_bytes_ = 0;    // the SYNC part of queued_bytes_

    bool accepted_ = false;
    bool writing_ = false;
    bool flush_scheduled_ = false;
    bool urgent_scheduled_ = false;
    bool joined_ = false;
    bool close_requested_ = false;
    bool close_started_ = false;
    bool finished_ = false;
    websocket::close_reason close_reason_;

    friend void close_connection(connection& c, close_code code, std::string_view reason);
};

void
close_connection(connection& c, close_code code, std::string_view reason)
{
    c.close(code, reason);
}

void
start_websocket(server_state& st, worker& from, tcp::socket sock, http::request<http::string_body> req,
                std::string session_id)
{
    worker& target = session_id.empty() ? from : st.worker_for(session_id);
    if (&target == &from) {
        std::make_shared<connection>(st, target, std::move(sock), std::move(session_id))->start(std::move(req));
        return;
    }
    // Hand the socket to the worker that owns the session: no lock on the hot path.
    error_code ec;
    auto protocol = sock.local_endpoint(ec).protocol();
    auto fd = sock.release(ec);
    if (ec) {
        spdlog::warn("cannot hand over socket: {}", ec.message());
        return;
    }
    net::post(target.ioc, [&st, &target, protocol, fd, req = std::move(req), id = std::move(session_id)]() mutable {
        error_code ec2;
        tcp::socket s(target.ioc);
        s.assign(protocol, fd, ec2);
        if (ec2) {
            ::close(fd);
            return;
        }
        std::make_shared<connection>(st, target, std::move(s), std::move(id))->start(std::move(req));
    });
}

void
close_all_connections(worker& w, close_code code, std::string_view reason)
{
    std::vector<std::shared_ptr<connection>> conns;
    for (auto& [p, weak] : w.connections)
        if (auto c = weak.lock())
            conns.push_back(std::move(c));
    for (auto& c : conns)
        close_connection(*c, code, reason);
}

}  // namespace lockstep
