#include "client/net.hpp"
#include "protocol/ws_frame.hpp"

#include <lockstep/client/error.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <spdlog/spdlog.h>

#include <atomic>
#include <deque>
#include <future>
#include <random>
#include <thread>
#include <vector>

namespace lockstep::client::detail {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using namespace std::chrono_literals;

std::optional<url_parts>
parse_url(std::string_view url)
{
    url_parts u;
    auto colon = url.find("://");
    if (colon == std::string_view::npos)
        return std::nullopt;
    u.scheme = std::string(url.substr(0, colon));
    if (u.scheme != "ws" && u.scheme != "http" && u.scheme != "wss" && u.scheme != "https")
        return std::nullopt;
    auto rest = url.substr(colon + 3);
    auto slash = rest.find('/');
    auto authority = rest.substr(0, slash);
    u.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
    if (authority.empty() || authority.find('@') != std::string_view::npos)
        return std::nullopt;
    auto pc = authority.rfind(':');
    if (pc != std::string_view::npos && authority.find(']') == std::string_view::npos) {
        u.host = std::string(authority.substr(0, pc));
        u.port = std::string(authority.substr(pc + 1));
    } else {
        u.host = std::string(authority);
        u.port = u.tls() ? "443" : "80";
    }
    if (u.host.empty() || u.port.empty() || u.port.find_first_not_of("0123456789") != std::string::npos)
        return std::nullopt;
    return u;
}

namespace {

// A client TLS context that verifies the peer's chain (against `ca_file`, or the system
// store) and, per connection, its host name (set_peer_host).
std::shared_ptr<ssl::context>
make_tls_context(tls_config const& t, beast::error_code& ec)
{
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
    ctx->set_verify_mode(ssl::verify_peer, ec);
    if (!ec) {
        if (t.ca_file.empty())
            ctx->set_default_verify_paths(ec);
        else
            ctx->load_verify_file(t.ca_file, ec);
    }
    return ctx;
}

template <class SslStream>
void
set_peer_host(SslStream& s, std::string const& host, beast::error_code& ec)
{
    // SNI, and the certificate must name this host.
    if (!SSL_set_tlsext_host_name(s.native_handle(), host.c_str()))
        ec = beast::error_code(static_cast<int>(::ERR_get_error()), net::error::get_ssl_category());
    s.set_verify_callback(ssl::host_name_verification(host), ec);
}

}  // namespace

http_result
http_request(std::string const& method, std::string const& url, std::string body,
             std::string const& content_type, std::chrono::milliseconds timeout, tls_config const& tls)
{
    http_result r;
    auto u = parse_url(url);
    if (!u || u->websocket()) {
        r.ec = make_error_code(std::errc::invalid_argument);
        return r;
    }
    net::io_context ioc;
    tcp::resolver resolver(ioc);
    std::shared_ptr<ssl::context> ctx;
    beast::error_code tls_ec;
    if (u->tls()) {
        ctx = make_tls_context(tls, tls_ec);
        if (tls_ec) {
            r.ec = tls_ec;
            return r;
        }
    }
    // One of the two streams is used; both are cheap to construct.
    beast::tcp_stream plain(ioc);
    std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
    if (ctx) {
        secure.emplace(ioc, *ctx);
        set_peer_host(*secure, u->host, tls_ec);
        if (tls_ec) {
            r.ec = tls_ec;
            return r;
        }
    }
    auto& lowest = secure ? beast::get_lowest_layer(*secure) : plain;
    beast::flat_buffer buf;
    http::request<http::string_body> req(http::string_to_verb(method), u->target, 11);
    req.set(http::field::host, u->host + ":" + u->port);
    req.set(http::field::user_agent, "lockstep-client");
    if (!content_type.empty())
        req.set(http::field::content_type, content_type);
    req.body() = std::move(body);
    req.prepare_payload();
    http::response_parser<http::string_body> parser;
    parser.body_limit(256u << 20);

    auto exchange = [&](auto& stream) {
        http::async_write(stream, req, [&](beast::error_code ec, std::size_t) {
            if (ec)
                return void(r.ec = ec);
            http::async_read(stream, buf, parser, [&](beast::error_code ec, std::size_t) {
                if (ec)
                    return void(r.ec = ec);
                r.status = static_cast<int>(parser.get().result_int());
                r.body = std::move(parser.get().body());
            });
        });
    };
    lowest.expires_after(timeout);
    resolver.async_resolve(u->host, u->port, [&](beast::error_code ec, tcp::resolver::results_type res) {
        if (ec)
            return void(r.ec = ec);
        lowest.async_connect(res, [&](beast::error_code ec, tcp::endpoint) {
            if (ec)
                return void(r.ec = ec);
            if (!secure)
                return exchange(plain);
            secure->async_handshake(ssl::stream_base::client, [&](beast::error_code ec) {
                if (ec)
                    return void(r.ec = ec);
                exchange(*secure);
            });
        });
    });
    ioc.run_for(timeout + 100ms);
    if (!r.ec && r.status == 0)
        r.ec = make_error_code(std::errc::timed_out);
    beast::error_code ignored;
    lowest.socket().shutdown(tcp::socket::shutdown_both, ignored);
    return r;
}

namespace {

constexpr auto sync_timeout = 5s;       // JOIN sent, no SYNC: reconnect (as the JS client)
constexpr auto silence_timeout = 50s;   // nothing heard: the connection is dead
constexpr auto pulse_after = 25s;       // nothing sent: PULSE keeps the reflector's timer happy
constexpr auto max_backoff = 30s;

// Owns its io_context and network thread, and joins the thread (close()) before it is
// destroyed, so handlers may capture `this`: none can run after the object is gone.
// `Tls`: wss:// (TLS under the WebSocket), else ws://.
template <bool Tls>
class ws_transport final : public transport {
public:
    ws_transport(url_parts url, std::string join_frame, callbacks cb, std::shared_ptr<ssl::context> ctx)
        : url_(std::move(url)), join_(std::move(join_frame)), cb_(std::move(cb)), ctx_(std::move(ctx)),
          resolver_(ioc_), retry_timer_(ioc_), watchdog_(ioc_), guard_(net::make_work_guard(ioc_))
    {
    }

    void start() override
    {
        thread_ = std::thread([this] { ioc_.run(); });
        net::post(ioc_, [this] {
            do_connect();
            arm_watchdog();
        });
    }

    void send(std::string frame, std::string timeline) override
    {
        net::post(ioc_, [this, f = std::move(frame), t = std::move(timeline)]() mutable {
            if (synced_ && (t.empty() || t == timeline_))
                queue(std::move(f), std::move(t));
            else if (!synced_)
                held_.push_back({std::move(f), std::move(t)});
            // else: bound to a timeline this connection is not on: drop
        });
    }

    void set_synced(std::string const& timeline) override
    {
        // Called on the network thread from on_message.
        synced_ = true;
        timeline_ = timeline;
        backoff_ = 0;
        established_ = true;
        while (!held_.empty()) {
            auto h = std::move(held_.front());
            held_.pop_front();
            if (h.timeline.empty() || h.timeline == timeline_)
                queue(std::move(h.frame), std::move(h.timeline));
        }
    }

    void drop() override
    {
        net::post(ioc_, [this] {
            if (ws_) {
                beast::error_code ec;
                beast::get_lowest_layer(*ws_).socket().close(ec);
            }
        });
    }

    void reconnect(int code, std::string reason) override
    {
        net::post(ioc_, [this, code, reason] {
            // Only a live connection can be restarted; a finished transport stays finished.
            if (!ws_ || !open_ || closing_ || finished_)
                return;
            spdlog::warn("lockstep: reconnecting ({} {})", code, reason);
            lost(code, reason);
        });
    }

    void close() override
    {
        if (close_called_.exchange(true) || !thread_.joinable())
            return;
        std::promise<void> done;
        auto fut = done.get_future();
        net::post(ioc_, [this, &done] {
            closing_ = true;
            close_done_ = &done;
            retry_timer_.cancel();
            if (!ws_ || !open_ || finished_) {
                finish_quietly();
                return;
            }
            if (!writing_)
                do_close();
        });
        if (fut.wait_for(3s) != std::future_status::ready) {
            spdlog::warn("lockstep: close did not complete in time; stopping");
            ioc_.stop();
        }
        guard_.reset();
        ioc_.stop();
        if (thread_.joinable()) {
            if (thread_.get_id() == std::this_thread::get_id())
                thread_.detach();
            else
                thread_.join();
        }
    }

    ~ws_transport() override { close(); }

private:
    using next_layer = std::conditional_t<Tls, beast::ssl_stream<beast::tcp_stream>, beast::tcp_stream>;
    using ws_stream = websocket::stream<next_layer>;

    void do_connect()
    {
        ++generation_;
        buf_.clear();  // a message cut off by the last connection must not prefix the next
        chunks_.reset();
        open_ = false;
        synced_ = false;
        writing_ = false;
        if constexpr (Tls)
            ws_ = std::make_unique<ws_stream>(ioc_, *ctx_);
        else
            ws_ = std::make_unique<ws_stream>(ioc_);
        ws_->read_message_max(512u << 20);
        resolver_.async_resolve(url_.host, url_.port,
                                [this, g = generation_](beast::error_code ec, tcp::resolver::results_type r) {
                                    on_resolve(g, ec, r);
                                });
    }

    void on_resolve(unsigned g, beast::error_code ec, tcp::resolver::results_type results)
    {
        if (g != generation_ || closing_)
            return;
        if (ec)
            return connect_failed(ec);
        beast::get_lowest_layer(*ws_).expires_after(5s);
        beast::get_lowest_layer(*ws_).async_connect(
            results, [this, g](beast::error_code ec, tcp::endpoint) { on_connect(g, ec); });
    }

    void on_connect(unsigned g, beast::error_code ec)
    {
        if (g != generation_ || closing_)
            return;
        if (ec)
            return connect_failed(ec);
        beast::get_lowest_layer(*ws_).socket().set_option(tcp::no_delay(true), ec);
        if constexpr (Tls) {
            set_peer_host(ws_->next_layer(), url_.host, ec);
            if (ec)
                return connect_failed(ec);
            ws_->next_layer().async_handshake(ssl::stream_base::client, [this, g](beast::error_code ec) {
                if (g != generation_ || closing_)
                    return;
                if (ec)
                    return connect_failed(ec);
                ws_handshake(g);
            });
        } else {
            ws_handshake(g);
        }
    }

    void ws_handshake(unsigned g)
    {
        ws_->async_handshake(url_.host + ":" + url_.port, url_.target,
                             [this, g](beast::error_code ec) { on_handshake(g, ec); });
    }

    void on_handshake(unsigned g, beast::error_code ec)
    {
        if (g != generation_ || closing_)
            return;
        if (ec)
            return connect_failed(ec);
        beast::get_lowest_layer(*ws_).expires_never();
        ws_->text(true);
        open_ = true;
        joined_at_ = heard_at_ = std::chrono::steady_clock::now();
        if (cb_.on_open)
            cb_.on_open();
        queue(join_);
        do_read();
    }

    void connect_failed(beast::error_code ec)
    {
        spdlog::warn("lockstep: cannot connect to {}:{}{}: {}", url_.host, url_.port, url_.target, ec.message());
        if (!established_) {
            finish(0, "cannot connect: " + ec.message(), false);
            return;
        }
        schedule_retry();
    }

    void do_read()
    {
        ws_->async_read(buf_, [this, g = generation_](beast::error_code ec, std::size_t) {
            on_read(g, ec);
        });
    }

    void on_read(unsigned g, beast::error_code ec)
    {
        if (g != generation_)
            return;
        if (ec) {
            int code = 1006;
            std::string reason = ec.message();
            if (ec == websocket::error::closed) {
                code = ws_->reason().code;
                reason = std::string(ws_->reason().reason.c_str());
            }
            if (closing_)
                return finish(1000, "closed", false);
            return lost(code, reason);
        }
        heard_at_ = std::chrono::steady_clock::now();
        std::string text = beast::buffers_to_string(buf_.data());
        buf_.consume(buf_.size());
        deliver(std::move(text));
        do_read();
    }

    void deliver(std::string text)
    {
        std::string_view message;
        switch (chunks_.feed(text, message)) {
        case protocol::chunk_assembler::status::partial: return;
        case protocol::chunk_assembler::status::malformed:
            // Dropped: the message it belonged to is missing, which the session sees as a
            // gap in the event sequence (a protocol error that rebuilds from a SYNC).
            spdlog::warn("lockstep: malformed _CHUNK message from the reflector dropped");
            return;
        case protocol::chunk_assembler::status::complete: break;
        }
        if (cb_.on_message)
            cb_.on_message(message.data() == text.data() ? std::move(text) : std::string(message));
    }

    void queue(std::string frame, std::string timeline = {})
    {
        out_.push_back({std::move(frame), std::move(timeline)});
        if (!writing_ && open_)
            do_write();
    }

    void do_write()
    {
        writing_ = true;
        sent_at_ = std::chrono::steady_clock::now();
        ws_->async_write(net::buffer(out_.front().frame), [this, g = generation_](beast::error_code ec, std::size_t) {
            on_write(g, ec);
        });
    }

    void on_write(unsigned g, beast::error_code ec)
    {
        if (g != generation_)
            return;
        writing_ = false;
        if (ec)
            return;  // the read side reports the loss; the frame stays queued for the next connection
        out_.pop_front();
        if (!out_.empty())
            return do_write();
        if (closing_)
            do_close();
    }

    void do_close()
    {
        ws_->async_close(websocket::close_code::normal, [this, g = generation_](beast::error_code) {
            if (g == generation_)
                finish(1000, "closed", false);
        });
    }

    // The connection is gone (network failure, or a close from the reflector).
    void lost(int code, std::string const& reason)
    {
        ++generation_;  // ignore whatever the old stream still completes
        open_ = false;
        synced_ = false;
        if (ws_) {
            beast::error_code ec;
            beast::get_lowest_layer(*ws_).socket().close(ec);
        }
        // Frames written but not acknowledged by SYNC are lost with the connection; frames
        // not yet written go out after the next SYNC, after what was held.
        if (!out_.empty() && writing_)
            out_.pop_front();  // the frame in flight may or may not have arrived
        writing_ = false;
        for (auto it = out_.rbegin(); it != out_.rend(); ++it)
            if (it->frame != join_)
                held_.push_front(std::move(*it));
        out_.clear();
        bool again = code != 1000 && code < 4100;
        if (cb_.on_closed)
            cb_.on_closed(code, reason, again);
        if (!again) {
            finish_quietly();
            return;
        }
        schedule_retry();
    }

    void schedule_retry()
    {
        auto delay = std::chrono::milliseconds(0);
        if (backoff_ > 0) {
            auto base = std::min<long long>(max_backoff / 1ms, 250ll << std::min(backoff_, 7));
            std::uniform_int_distribution<long long> d(base / 2, base);
            delay = std::chrono::milliseconds(d(rng_));
        }
        ++backoff_;
        retry_timer_.expires_after(delay);
        retry_timer_.async_wait([this, g = generation_](beast::error_code ec) {
            if (!ec && !closing_ && !finished_ && g == generation_)
                do_connect();
        });
    }

    void arm_watchdog()
    {
        watchdog_.expires_after(1s);
        watchdog_.async_wait([this](beast::error_code ec) {
            if (ec || closing_)
                return;
            check_liveness();
            arm_watchdog();
        });
    }

    void check_liveness()
    {
        if (!open_)
            return;
        auto now = std::chrono::steady_clock::now();
        if (!synced_ && now - joined_at_ > sync_timeout)
            return lost(4000, "no SYNC within 5 s");
        if (now - heard_at_ > silence_timeout)
            return lost(4000, "reflector silent for 50 s");
        if (synced_ && out_.empty() && now - sent_at_ > pulse_after)
            queue(R"({"action":"PULSE"})");
    }

    void finish(int code, std::string const& reason, bool again)
    {
        if (finished_)
            return;
        finished_ = true;
        open_ = false;
        if (!closing_ && cb_.on_closed)
            cb_.on_closed(code, reason, again);
        finish_quietly();
    }

    void finish_quietly()
    {
        finished_ = true;
        watchdog_.cancel();
        retry_timer_.cancel();
        if (ws_) {
            beast::error_code ec;
            beast::get_lowest_layer(*ws_).socket().close(ec);
        }
        if (close_done_) {
            close_done_->set_value();
            close_done_ = nullptr;
        }
    }

    url_parts url_;
    std::string join_;
    callbacks cb_;
    std::shared_ptr<ssl::context> ctx_;  // wss only
    net::io_context ioc_;
    tcp::resolver resolver_;
    net::steady_timer retry_timer_;
    net::steady_timer watchdog_;
    net::executor_work_guard<net::io_context::executor_type> guard_;
    std::thread thread_;
    std::atomic<bool> close_called_{false};

    // Network-thread state.
    std::unique_ptr<ws_stream> ws_;
    beast::flat_buffer buf_;
    protocol::chunk_assembler chunks_{512u << 20};  // _CHUNK reassembly, bounded like a frame
    struct held_frame {
        std::string frame;
        std::string timeline;  // empty: not bound to a timeline
    };
    std::deque<held_frame> out_;    // being written on the current connection, in order
    std::deque<held_frame> held_;   // waiting for SYNC
    std::string timeline_;          // of the current connection's SYNC
    unsigned generation_ = 0;       // bumps on every new connection; stale handlers bail out
    bool open_ = false, synced_ = false, writing_ = false, closing_ = false, finished_ = false;
    bool established_ = false;      // a SYNC was seen once: failures retry from now on
    int backoff_ = 0;
    std::promise<void>* close_done_ = nullptr;
    std::chrono::steady_clock::time_point joined_at_, heard_at_, sent_at_;
    std::minstd_rand rng_{std::random_device{}()};
};

}  // namespace

std::unique_ptr<transport>
transport::create(std::string url, std::string join_frame, callbacks cb, tls_config const& tls)
{
    auto u = parse_url(url);
    if (!u || !u->websocket())
        return nullptr;
    if (!u->tls())
        return std::make_unique<ws_transport<false>>(std::move(*u), std::move(join_frame), std::move(cb), nullptr);
    beast::error_code ec;
    auto ctx = make_tls_context(tls, ec);
    if (ec) {
        spdlog::error("lockstep: TLS setup failed ({}): {}", tls.ca_file.empty() ? "system trust store" : tls.ca_file,
                      ec.message());
        return nullptr;
    }
    return std::make_unique<ws_transport<true>>(std::move(*u), std::move(join_frame), std::move(cb), std::move(ctx));
}

}  // namespace lockstep::client::detail
