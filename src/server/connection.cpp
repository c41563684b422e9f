// One WebSocket client, I/O only. Beast does the handshake, the reads and the control
// frames; each text frame read goes to the reflector's dispatch (reflector/dispatch.hpp)
// with this connection as the peer and its worker as the host. Outbound data frames
// are pre-encoded by the session, appended to this connection's output buffer and
// written with one non-blocking send() per flush (see gated_stream.hpp for how those
// writes and Beast's own frames stay apart).
//
// @par Thread safety
// A connection lives on one worker's thread; every member is used only there.
#include "server/forward.hpp"
#include "server/gated_stream.hpp"
#include "server/internal.hpp"
#include "server/output_queue.hpp"
#include "common/logging.hpp"


#include <spdlog/spdlog.h>

#include <cerrno>
#include <deque>
#include <cstring>

#include <sys/socket.h>
#include <unistd.h>

namespace lockstep {

using protocol::close_code;

class connection final : public peer, public flushable, public std::enable_shared_from_this<connection> {
public:
    connection(server_state& st, worker& w, tcp::socket sock, std::string session_id, auth::admission adm = {},
               limits::ticket ticket = {})
        : st_(st), w_(w), ws_(std::move(sock)), join_timer_(w.ioc), sync_timer_(w.ioc), adm_(std::move(adm)), ticket_(std::move(ticket))
    {
        error_code ec;
        auto ep = ws_.next_layer().next_layer().remote_endpoint(ec);
        serial_ = st_.next_conn_id.fetch_add(1);
        tag_ = ec ? fmt::format("c{} ? {}", serial_, session_id.substr(0, 8))
                  : fmt::format("c{} {}:{} {}", serial_, ep.address().to_string(), ep.port(), session_id.substr(0, 8));
        m_.session_id = std::move(session_id);
        // This connection's name in the router, unique in the cluster and across
        // restarts: "<reflector id>#<process instance>:<serial>".
        m_.conn_key = st_.self_id + "#" + st_.instance + ":" + std::to_string(serial_);
        if (adm_.user || adm_.via_seat)
            m_.admit_join = [this](session& s, std::string_view args, std::string& why) {
                return admit_join(s, args, why);
            };
    }

    ~connection() override { w_.metrics.add(w_.metrics.queue_bytes, -static_cast<std::int64_t>(pending())); }

    void
    start(http::request<http::string_body> req)
    {
        m_.seat_token = router::token_from_path(std::string_view(req.target().data(), req.target().size()));
        target_ = std::string(req.target());
        forwarded_in_ = req.find(forwarded_header) != req.end();
        move_notice_ = forwarded_in_ && req[move_notice_header] == "1";
        w_.connections[this] = weak_from_this();
        w_.metrics.add(w_.metrics.connections, 1);
        error_code nd;  // a TLS client's plaintext end is a local socket: no TCP options
        ws_.next_layer().next_layer().set_option(tcp::no_delay(true), nd);
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
        // A SYNC counts against --max-sync-bytes until written: a joiner that does not
        // read it in time is closed, so it cannot hold the budget.
        if (close_requested_ || st_.cfg.sync_timeout_ms == 0 || sync_timer_armed_)
            return;
        sync_timer_armed_ = true;
        sync_timer_.expires_after(std::chrono::milliseconds(st_.cfg.sync_timeout_ms));
        sync_timer_.async_wait([self = shared_from_this()](error_code ec) { self->on_sync_timeout(ec); });
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
        auto size = m->wire().size();
        if (exempt)
            out_.append_shared(m);  // a SYNC: held, not copied (shared by simultaneous joiners)
        else
            out_.append(m->wire());
        ++messages_out_;
        w_.metrics.add(w_.metrics.queue_bytes, static_cast<std::int64_t>(size));
        if (pending() - out_.shared_pending() > st_.cfg.max_queue_bytes) {
            spdlog::warn("{} outbound queue {} bytes over --max-queue-bytes: closing 1013 (client will rejoin)",
                         tag_, pending());
            drop_output();
            close(close_code::try_again_later, "outbound queue full");
            return;
        }
        if (!blocked_ && accepted_ && (!flush_scheduled_ || (urgent && !urgent_scheduled_))) {
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
        if (close_started_)
            return;
        if (pending() > 0)
            write_now();
        else if (close_requested_)
            do_close();
    }

    bool
    backlogged() const noexcept override
    {
        return blocked_;
    }

    void
    close(close_code code, std::string_view reason) override
    {
        if (close_requested_)
            return;
        close_requested_ = true;
        if (fwd_ && !accept_after_close_)
            std::exchange(fwd_, nullptr)->close(1001);  // closed here (full queue): the owner sees it go
        close_reason_.code = static_cast<websocket::close_code>(code);
        close_reason_.reason = std::string(reason.substr(0, 120));  // close frames carry at most 123 bytes
        st_.closes.add(static_cast<std::uint16_t>(code));
        join_timer_.cancel();
        if (!blocked_ && accepted_ && pending() == 0)
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
        if (m_.session_id.empty()) {
            spdlog::info("{} no session id in the URL path: closing 4100", tag_);
            close(close_code::outdated_protocol, "outdated protocol");
        } else if (!close_requested_) {
            join_timer_.expires_after(std::chrono::milliseconds(st_.cfg.join_timeout_ms));
            join_timer_.async_wait([self = shared_from_this()](error_code ec) { self->on_join_timeout(ec); });
        }
        if (pending() > 0)
            write_now();
        else if (close_requested_)
            do_close();
        do_read();
    }

    void
    on_join_timeout(error_code ec)
    {
        if (ec || m_.join_seen || close_requested_)
            return;
        spdlog::info("{} sent no JOIN within {} ms: closing 4121", tag_, st_.cfg.join_timeout_ms);
        close(close_code::never_joined, "client never joined");
    }

    void
    on_sync_timeout(error_code ec)
    {
        if (ec || close_requested_ || out_.shared_pending() == 0)
            return;
        spdlog::warn("{} SYNC not read within --sync-timeout-ms {} ({} bytes left): dropping the connection", tag_,
                     st_.cfg.sync_timeout_ms, out_.shared_pending());
        w_.metrics.refused_for(refusal::sync_timeout);
        // Its socket is full, so no close frame could get through: the TCP connection is
        // closed (the client sees 1006 and reconnects), which frees the SYNC and its budget.
        write_failed();
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
        ++messages_in_;
        bytes_in_ += n;
        if (!close_requested_) {
            if (!ws_.got_text()) {
                spdlog::info("{} binary frame: closing 1003", tag_);
                close(close_code::unsupported_data, "binary frames are not supported");
            } else if (fwd_) {
                // Forwarded to the session's owner: the frame goes there as it came.
                auto data = rbuf_.cdata();
                fwd_->send(std::string(static_cast<char const*>(data.data()), data.size()));
            } else if (w_.cluster && !w_.cluster->owns(m_.session_id)) {
                // Cluster: this worker must own the session (its lease, its state from
                // Redis) before anything is dispatched to it. Reading pauses meanwhile.
                auto data = rbuf_.cdata();
                std::string text(static_cast<char const*>(data.data()), data.size());
                rbuf_.consume(rbuf_.size());
                join_timer_.cancel();  // the wait is bounded by --takeover-wait-ms
                w_.cluster->acquire(m_.session_id, [self = shared_from_this(), text = std::move(text)](
                                                       bool ok, std::string const& forward) {
                    self->on_owned(ok, forward, text);
                });
                return;
            } else if (w_.journal && !w_.find_session(m_.session_id)) {
                // A session not in memory may be stored: its journal is read on the disk
                // pool, not on this loop. Reading pauses meanwhile.
                auto data = rbuf_.cdata();
                std::string text(static_cast<char const*>(data.data()), data.size());
                rbuf_.consume(rbuf_.size());
                w_.load_session(m_.session_id, [self = shared_from_this(), text = std::move(text)] {
                    self->on_owned(true, {}, text);
                });
                return;
            } else {
                handle_frame();
            }
        } else if (accept_after_close_ && ws_.got_text()) {
            // Closed for a move (hand-off, drain): what the client sent before it saw the
            // close still goes into its session, which is written (journal, Redis) only
            // after its clients left. Nothing is shown here any more (enqueue drops it);
            // the client gets it in the SYNC of the reflector it rejoins. A forwarded
            // client's frames go on to the owner, which reads until this link closes.
            if (fwd_) {
                auto data = rbuf_.cdata();
                fwd_->send(std::string(static_cast<char const*>(data.data()), data.size()));
            } else if (m_.joined) {
                handle_frame();
            }
        }
        rbuf_.consume(rbuf_.size());
        do_read();
    }

    void
    handle_frame()
    {
        auto data = rbuf_.cdata();
        handle_text(std::string_view(static_cast<char const*>(data.data()), data.size()));
    }

    void
    handle_text(std::string_view text)
    {
        bool joined_before = m_.join_seen;
        dispatch(w_, m_, *this, text);
        if (m_.join_seen && !joined_before)
            join_timer_.cancel();
    }

    /// The cluster answered whether this worker owns the session now, or the session's
    /// journal was read (`ok`); or that its live owner keeps it for now and can be
    /// reached at `forward`.
    void
    on_owned(bool ok, std::string const& forward, std::string const& text)
    {
        if (finished_)
            return;
        if (close_requested_)
            return do_read();  // closing meanwhile (drain): read until the close completes
        if (!ok && !forward.empty() && !forwarded_in_ && start_forward(forward, text))
            return do_read();
        if (!ok) {
            close(close_code::please_reconnect, "session is held by another reflector; retry");
            do_read();  // reads the client's close reply
            return;
        }
        handle_text(text);
        do_read();
    }

    /// Relays this connection to the session's owner at `url` (a ws:// URL), starting
    /// with the client's JOIN `first`. False if the URL is not one the link can reach.
    bool
    start_forward(std::string const& url, std::string const& first)
    {
        std::string host, port;
        if (!parse_ws_url(url, host, port))
            return false;
        std::weak_ptr<connection> weak = shared_from_this();
        forward_link::callbacks cb{
            [weak](std::string&& text) {
                if (auto self = weak.lock())
                    self->relay(std::move(text));
            },
            [weak](std::uint16_t code, std::string reason) {
                if (auto self = weak.lock()) {
                    self->fwd_.reset();
                    self->close(static_cast<close_code>(code), reason);
                }
            },
            [weak](std::uint16_t code, std::string reason) {
                // The owner moves the session: this client is closed for the move, and
                // what it sends until its close reply still goes to the owner.
                if (auto self = weak.lock()) {
                    self->begin_move_close();
                    self->close(static_cast<close_code>(code), reason);
                }
            }};
        // The owner's frames are at most a _CHUNK each (a longer message comes chunked).
        fwd_ = std::make_shared<forward_link>(w_.ioc, st_.cfg.max_queue_bytes, 2 * protocol::chunk_threshold,
                                              std::move(cb));
        fwd_->start(std::move(host), std::move(port), target_, st_.self_id, first);
        w_.metrics.add(w_.metrics.connections_forwarded);
        spdlog::info("{} forwarded to the session's owner at {}", tag_, url);
        return true;
    }

    /// A frame from the owner, to the client as it came (never re-chunked).
    void
    relay(std::string&& text)
    {
        auto buf = json_builder(text.size());
        buf += text;
        enqueue(out_message::from_json(std::move(buf), 0, 0, false), false);
    }

    /// With access control on: the token's claims allow this session, and a connection
    /// admitted by a router seat JOINs that seat's session (the dispatch closes 4103 if
    /// not). Called by the dispatch on JOIN, through membership::admit_join.
    bool
    admit_join(session& s, std::string_view args, std::string& why)
    {
        std::string app, name;
        auth::join_names(args, app, name);
        if (s.created())
            name = s.name();  // the session's own name, not what this JOIN says
        if (adm_.user && !auth::allows_session(*adm_.user, app, name, why))
            return false;
        if (adm_.via_seat && !seat_admitted_) {
            // The seat must be this session's: asked of the directory on its thread
            // (bounded wait; no answer refuses the JOIN, the client rejoins).
            seat_admitted_ = st_.ask_directory(
                [token = m_.seat_token, name, conn = m_.conn_key](router::directory& d) {
                    return d.member_joined(token, name, conn);
                },
                std::chrono::seconds(2));
            if (!seat_admitted_) {
                why = "seat is not for this session";
                return false;
            }
        }
        return true;
    }

    // ---- output: one buffer, written by non-blocking send() until the socket is full ----

    std::size_t
    pending() const noexcept
    {
        return out_.pending();
    }

    /// Writes as much of the output buffer as the socket takes now. When the socket is
    /// full, waits for it to drain (ticks are skipped meanwhile, see backlogged()).
    void
    write_now()
    {
        if (blocked_ || close_started_)
            return;
        // Write before show: what this output reports is in the journal first. If the
        // journal cannot be written (disk full), nothing of it is shown: the client is
        // asked to come back later, and the session keeps its events in memory.
        w_.journal_barrier();
        if (w_.journal && !raw_close_queued_ && w_.journal->failing(m_.session_id)) {
            if (!close_requested_)
                spdlog::warn("{} session journal cannot be written: closing 1013", tag_);
            drop_output();  // keeps only the rest of a frame already begun (journaled before)
            close(close_code::try_again_later, "session journal cannot be written");
            if (close_started_)
                return;
        }
        auto& gate = ws_.next_layer();
        if (gate.beast_busy()) {  // Beast is writing a control frame: go after it
            gate.after_beast([self = shared_from_this()] { self->write_now(); });
            return;
        }
        // Cluster: only what Redis has confirmed may be shown (write before show).
        auto shown = showable_end();
        if (shown <= sent_total_) {
            if (pending() > 0)
                w_.cluster->wait(shared_from_this());
            return;
        }
        int fd = gate.next_layer().native_handle();
        std::size_t sent = 0;
        while (sent_total_ < shown) {
            iovec iov[16];
            msghdr msg{};
            msg.msg_iov = iov;
            msg.msg_iovlen = out_.gather(iov, std::size(iov));
            // Cluster: no further than what may be shown.
            std::size_t room = shown - sent_total_, total = 0;
            for (std::size_t i = 0; i < msg.msg_iovlen; ++i) {
                if (total + iov[i].iov_len >= room) {
                    iov[i].iov_len = room - total;
                    msg.msg_iovlen = i + 1;
                    break;
                }
                total += iov[i].iov_len;
            }
            ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0) {
                out_.consume(static_cast<std::size_t>(n));
                sent_total_ += static_cast<std::uint64_t>(n);
                sent += static_cast<std::size_t>(n);
                w_.metrics.add(w_.metrics.writes);
                continue;
            }
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                break;
            int err = n < 0 ? errno : EPIPE;
            account_sent(sent);
            spdlog::debug("{} write: {}", tag_, std::strerror(err));
            write_failed();
            return;
        }
        account_sent(sent);
        if (pending() > 0 && sent_total_ < showable_limit()) {
            blocked_ = true;
            gate.set_raw_busy(true);  // a frame may be half on the wire: Beast waits
            gate.next_layer().async_wait(tcp::socket::wait_write, [self = shared_from_this()](error_code ec) {
                self->blocked_ = false;
                if (ec) {
                    if (ec != net::error::operation_aborted)
                        self->write_failed();
                } else {
                    self->write_now();
                }
                // Whole again (or failed): Beast's waiting control frame may go.
                if (!self->blocked_)
                    self->ws_.next_layer().set_raw_busy(false);
            });
            return;
        }
        if (pending() > 0 && w_.cluster) {
            w_.cluster->wait(shared_from_this());  // the rest waits for Redis
            return;
        }
        if (close_requested_)
            do_close();
    }

    /// Where the output that may be shown now ends (cluster mode: the records of
    /// everything before it are in Redis). Each stretch of output is marked with the
    /// newest batch it needs; a mark whose batch is confirmed frees its stretch.
    /// Output positions are absolute (bytes since the connection began): sent_total_ is
    /// where the unsent output starts, output_end() where it ends.
    std::uint64_t
    output_end() const noexcept
    {
        return sent_total_ + pending();
    }
    std::uint64_t
    showable_end()
    {
        if (!w_.cluster)
            return output_end();
        auto b = w_.cluster->unconfirmed(m_.session_id);
        if (b == 0) {
            marks_.clear();
            free_end_ = output_end();
            return free_end_;
        }
        if (!marks_.empty() && marks_.back().first == b)
            marks_.back().second = output_end();
        else
            marks_.emplace_back(b, output_end());
        while (!marks_.empty() && w_.cluster->confirmed(m_.session_id, marks_.front().first)) {
            free_end_ = std::max(free_end_, marks_.front().second);
            marks_.pop_front();
        }
        return std::max(free_end_, sent_total_);
    }
    /// The last showable_end() without new marks.
    std::uint64_t
    showable_limit() const
    {
        return w_.cluster ? std::max(free_end_, sent_total_) : output_end();
    }

    void
    account_sent(std::size_t sent)
    {
        if (sent == 0)
            return;
        w_.metrics.add(w_.metrics.bytes_out, sent);
        bytes_out_ += sent;
        w_.metrics.add(w_.metrics.queue_bytes, -static_cast<std::int64_t>(sent));
    }

    void
    write_failed()
    {
        drop_output();
        close_requested_ = true;  // nothing more can be sent; the read side finishes
        error_code ignored;
        ws_.next_layer().next_layer().close(ignored);
    }

    /// Drops the output not yet written, except the rest of a frame the socket already
    /// took the start of: the stream must stay well-formed for the close frame.
    void
    drop_output()
    {
        w_.metrics.add(w_.metrics.queue_bytes, -static_cast<std::int64_t>(out_.drop_unsent()));
        // What is left is the rest of a frame already begun: it may go.
        marks_.clear();
        free_end_ = sent_total_ + pending();
    }

    void
    do_close()
    {
        if (close_started_)
            return;
        if (accept_after_close_) {
            close_for_move();
            return;
        }
        close_started_ = true;
        ws_.async_close(close_reason_, [self = shared_from_this()](error_code ec) {
            if (ec && ec != net::error::operation_aborted)
                spdlog::debug("{} close: {}", self->tag_, ec.message());
        });
    }

    /// A move's close: the close frame is written here, as output, not by Beast's
    /// async_close, whose close handshake discards every data frame but one that the
    /// client sent before it saw the close. Reading goes on, so each frame until the
    /// client's close reply reaches the session (on_read); Beast's read then sees the
    /// reply and tears the connection down, its own close frame dropped by the gate.
    void
    close_for_move()
    {
        if (!raw_close_queued_) {
            raw_close_queued_ = true;
            auto code = static_cast<std::uint16_t>(close_reason_.code);
            std::string_view reason(close_reason_.reason.data(), close_reason_.reason.size());
            std::string frame;
            if (move_notice_) {
                // A forwarding reflector: it gets the notice instead, closes its client
                // for the move and closes this link after the client's close reply.
                auto text = move_notice(code, reason);
                append_frame_header(frame, text.size());
                frame += text;
            } else {
                frame = close_frame(code, reason);
            }
            w_.metrics.add(w_.metrics.queue_bytes, static_cast<std::int64_t>(frame.size()));
            out_.append(frame);
            marks_.clear();  // nothing before it waits for Redis any more (begin_move_close)
            free_end_ = output_end();
            write_now();  // comes back here once all of it is written
            return;
        }
        if (pending() > 0)
            return;
        close_started_ = true;
        if (!move_notice_)
            ws_.next_layer().swallow_writes();  // Beast's close comes after the forwarder's
        // The closing handshake's deadline, as Beast's would be: then the socket goes.
        join_timer_.expires_after(std::chrono::seconds(10));
        join_timer_.async_wait([self = shared_from_this()](error_code ec) {
            if (!ec && !self->finished_) {
                spdlog::debug("{} no close reply within 10 s: closing the socket", self->tag_);
                error_code ignored;
                self->ws_.next_layer().next_layer().close(ignored);
            }
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
        sync_timer_.cancel();
        if (fwd_) {
            // The client's close goes on to the owner (a leave is a leave there too).
            auto code = static_cast<std::uint16_t>(ws_.reason().code);
            bool sendable = code == 1000 || code == 1001 || (code >= 4000 && code < 5000);
            std::exchange(fwd_, nullptr)->close(sendable ? code : 1001);
        }
        if (m_.joined)
            app_id_ = m_.joined->app_id();  // for the summary line below
        // A normal leave (close 1000 from the client) frees a router seat; a drop keeps
        // it reserved for a reconnect.
        hang_up(w_, m_, *this, ws_.reason().code == websocket::close_code::normal);
        if (move_member_ && w_.cluster)
            w_.cluster->client_left(m_.session_id);  // a moving session goes once all have left
        w_.connections.erase(this);
        w_.metrics.add(w_.metrics.connections, -1);
        // The connection's summary: who, how it ended, what went through it.
        log_fields f{.event = "connection_end", .session = m_.session_id, .app = app_id_};
        f.conn = static_cast<std::int64_t>(serial_);
        // The reflector's close code, else the client's; 1006 when the socket just went away.
        f.code = close_requested_ ? static_cast<int>(close_reason_.code) : static_cast<int>(ws_.reason().code);
        if (f.code == 0)
            f.code = 1006;
        f.messages_in = static_cast<std::int64_t>(messages_in_);
        f.messages_out = static_cast<std::int64_t>(messages_out_);
        f.bytes_in = static_cast<std::int64_t>(bytes_in_);
        f.bytes_out = static_cast<std::int64_t>(bytes_out_);
        f.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - opened_).count();
        log_event(spdlog::level::info, f, fmt::format("{} disconnected", tag_));
    }

    server_state& st_;
    worker& w_;
    std::uint64_t serial_ = 0;
    websocket::stream<gated_stream> ws_;
    std::string tag_;
    beast::flat_buffer rbuf_;
    net::steady_timer join_timer_;   // the JOIN's deadline; for a move's close, the close reply's
    net::steady_timer sync_timer_;   // --sync-timeout-ms after the SYNC was queued
    bool sync_timer_armed_ = false;
    membership m_;                   // the session and seat, as the dispatch keeps them
    bool seat_admitted_ = false;     // access control: the seat was checked for this session
    auth::admission adm_;            // what access control admitted (user token, seat)
    limits::ticket ticket_;          // this socket's place in the connection counts

    output_queue out_;               // frames not yet taken by the socket; SYNCs shared, not limited
    std::uint64_t sent_total_ = 0;   // bytes the socket took, ever: output positions count from here
    std::uint64_t free_end_ = 0;     // cluster: output up to here (absolute) may be shown
    std::deque<std::pair<std::uint64_t, std::uint64_t>> marks_;  // cluster: (batch, end of output it covers)

    bool accepted_ = false;
    bool blocked_ = false;           // the socket is full: waiting until it is writable
    bool flush_scheduled_ = false;
    bool urgent_scheduled_ = false;
    bool close_requested_ = false;
    bool close_started_ = false;
    bool finished_ = false;
    // Totals for the connection_end line.
    std::chrono::steady_clock::time_point opened_ = std::chrono::steady_clock::now();
    std::uint64_t messages_in_ = 0, messages_out_ = 0, bytes_in_ = 0, bytes_out_ = 0;
    std::string app_id_;
    websocket::close_reason close_reason_;
    // Forwarding to the session's owner (server/forward.hpp).
    std::string target_;                 // the upgrade's path, for the owner
    bool forwarded_in_ = false;          // came from a forwarding reflector: never forwarded again
    bool accept_after_close_ = false;    // closed for a move: frames read until the close reply still count
    bool raw_close_queued_ = false;      // a move's close frame (or notice) is in out_ (close_for_move)
    bool move_member_ = false;           // closed for a move as a member of the session: counted by the cluster
    bool move_notice_ = false;           // a forwarding reflector that takes a move notice (forward.hpp)

    /// Before a close for a move (drain, hand-off) of a connection not closing yet: output
    /// not shown yet is dropped (the reflector it rejoins sends it all in its SYNC), and a
    /// joined client's frames until its close reply still count; a forwarded client's go
    /// on to the owner (its output was shown there: it stays). True for a joined one (it
    /// reports cluster_sessions::client_left() when it is done).
    bool
    begin_move_close()
    {
        if (close_requested_)
            return false;
        move_member_ = m_.joined != nullptr;
        accept_after_close_ = move_member_ || fwd_ != nullptr;
        if (!fwd_)
            drop_output();
        return move_member_;
    }
    std::shared_ptr<forward_link> fwd_;  // set while relaying

    friend void close_connection(connection& c, close_code code, std::string_view reason);
    friend std::size_t abandon_session_connections(worker& w, std::string const& session_id, close_code code,
                                                   std::string_view reason);
    friend std::size_t close_session_connections(worker& w, std::string const& session_id, close_code code,
                                                 std::string_view reason);
    friend std::size_t close_session_connections_for_move(worker& w, std::string const& session_id,
                                                          close_code code, std::string_view reason);
    friend void close_all_connections(worker& w, close_code code, std::string_view reason, bool for_move);
};

void
close_connection(connection& c, close_code code, std::string_view reason)
{
    c.close(code, reason);
}

void
start_websocket(server_state& st, worker& from, tcp::socket sock, http::request<http::string_body> req,
                std::string session_id, auth::admission adm, limits::ticket ticket)
{
    worker& target = session_id.empty() ? from : st.worker_for(session_id);
    if (&target == &from) {
        std::make_shared<connection>(st, target, std::move(sock), std::move(session_id), std::move(adm),
                                     std::move(ticket))
            ->start(std::move(req));
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
    target.defer([&st, &target, protocol, fd, req = std::move(req), id = std::move(session_id),
                  adm = std::move(adm), ticket = std::move(ticket)]() mutable {
        error_code ec2;
        tcp::socket s(target.ioc);
        s.assign(protocol, fd, ec2);
        if (ec2) {
            ::close(fd);
            return;
        }
        std::make_shared<connection>(st, target, std::move(s), std::move(id), std::move(adm), std::move(ticket))
            ->start(std::move(req));
    });
}

void
close_all_connections(worker& w, close_code code, std::string_view reason, bool for_move)
{
    std::vector<std::shared_ptr<connection>> conns;
    for (auto& [p, weak] : w.connections)
        if (auto c = weak.lock())
            conns.push_back(std::move(c));
    for (auto& c : conns) {
        if (for_move)
            c->begin_move_close();
        close_connection(*c, code, reason);
    }
}

std::size_t
close_session_connections_for_move(worker& w, std::string const& session_id, close_code code,
                                   std::string_view reason)
{
    std::vector<std::shared_ptr<connection>> conns;
    for (auto& [p, weak] : w.connections)
        if (auto c = weak.lock(); c && c->m_.session_id == session_id && !c->finished_)
            conns.push_back(std::move(c));
    std::size_t members = 0;
    for (auto& c : conns) {
        if (c->begin_move_close()) {
            ++members;
        } else {
            hang_up(w, c->m_, *c, false);  // closing already, or not a member: leaves now
            c->drop_output();
        }
        c->close(code, reason);
    }
    return members;
}

std::size_t
abandon_session_connections(worker& w, std::string const& session_id, close_code code, std::string_view reason)
{
    std::vector<std::shared_ptr<connection>> conns;
    for (auto& [p, weak] : w.connections)
        if (auto c = weak.lock(); c && c->m_.session_id == session_id)
            conns.push_back(std::move(c));
    for (auto& c : conns) {
        // Leave the session now (it is deleted next); nothing not shown yet may go out.
        hang_up(w, c->m_, *c, false);
        if (c->raw_close_queued_ && c->pending() > 0) {
            c->write_failed();  // a move's close frame still stuck behind a full socket: no waiting
            continue;
        }
        c->drop_output();
        c->close(code, reason);
    }
    return conns.size();
}

std::size_t
close_session_connections(worker& w, std::string const& session_id, close_code code, std::string_view reason)
{
    std::vector<std::shared_ptr<connection>> conns;
    for (auto& [p, weak] : w.connections)
        if (auto c = weak.lock(); c && c->m_.session_id == session_id)
            conns.push_back(std::move(c));
    for (auto& c : conns)
        c->close(code, reason);
    return conns.size();
}

}  // namespace lockstep
